"""Make images bigger with a released SR model: ``glrl.upscale(array, scale)`` and ``glrl upscale``.

How an image is enlarged (the protocol the nets were trained for, applied to any picture):

* colour (RGB/RGBA): MATLAB ``rgb2ycbcr`` (float, BT.601); the luma Y is enlarged by MATLAB bicubic
  ``imresize`` and then refined by the net; Cb and Cr are enlarged by bicubic only; back with ``ycbcr2rgb``;
* grey: the single plane is treated as Y;
* alpha: enlarged by bicubic and kept;
* 8-bit in gives 8-bit out, 16-bit gives 16-bit, floats in [0, 1] give floats (clipped to [0, 1]).

Every deploy net maps the bicubic-enlarged Y (blob ``data``, in [0, 1], 1×1×H×W) to the SR Y: its single
output is the prediction itself (the contract of :mod:`glrl.nets.recipe`; global-residual nets such as GLRL
and VDSR add ``data`` inside the prototxt with an Eltwise layer), so nothing is added here. Big images run
in overlapping tiles (:mod:`glrl.tiling`), so the memory a net needs is bounded by the tile size, not the
image size, with the same result; real Caffe needs far more memory per pixel than the torch backend (an
im2col buffer per convolution), so its tiles are sized by Caffe's own memory model.
"""
from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from glrl import model_zoo, tiling
from glrl.caffe.io import read_net
from glrl.errors import ModelError
from glrl.machine import resolve_device
from glrl.matlab_compat import imresize, rgb2ycbcr, ycbcr2rgb
from glrl.upscale_io import Picture, array_to_picture, picture_to_array

# Tiles are sized so that the activations of one tile stay within this (GLRL: 741-pixel tiles).
DEFAULT_MEMORY_BYTES = 1 << 30
TileProgress = Callable[[int, int], None]  # on_tile(done, total): called after each tile of a big plane

PathLike = Union[str, Path]


class Upscaler:
    """A loaded deploy net and how to apply it: build once, then upscale many images."""

    def __init__(
        self,
        deploy: PathLike,
        weights: PathLike,
        scale: int,
        *,
        backend: Optional[str] = None,
        device: str = "auto",
        tile: Optional[int] = None,
        precision: str = "fp32",
    ) -> None:
        from glrl.backends import open_net, resolve_backend

        self.backend = backend = resolve_backend(backend)
        self.scale = int(scale)
        self.model_name: Optional[str] = None  # the released model's name, when it came from models/
        net_param = read_net(deploy)
        if tile is not None and int(tile) <= 0:  # whole images: also for a net that tiling cannot follow
            per_pixel, self.tile = 0, 0
        elif backend == "caffe":
            per_pixel = tiling.caffe_floats_per_pixel(net_param)
            self.tile = int(tile) if tile is not None else tiling.caffe_tile(net_param)
        else:
            per_pixel = tiling.live_floats_per_pixel(net_param)
            self.tile = int(tile) if tile is not None else tiling.tile_for_memory(
                net_param, DEFAULT_MEMORY_BYTES, per_pixel)
        self.margin = tiling.receptive_radius(net_param) if self.tile > 0 else 0
        # the bound on one tile's activation memory (fp32; in real Caffe with its im2col buffers); None when
        # whole images run at once
        self.tile_memory_bytes = (tiling.tile_memory_bytes(net_param, self.tile, per_pixel)
                                  if self.tile > 0 else None)
        self.border = tiling.border_loss(net_param)  # a 'valid' net (SRCNN) gets its input edge-padded
        self.net_path, self.weights_path = Path(deploy), Path(weights)
        self.device = resolve_device(device, backend)
        self.precision = precision
        self.net = open_net(str(deploy), str(weights), backend=backend, device=self.device, precision=precision)
        if len(self.net.input_names) != 1:
            raise ModelError(f"{deploy} has inputs {list(self.net.input_names)}; an SR deploy net has one")

    @classmethod
    def for_scale(
        cls,
        scale: int,
        *,
        model: Optional[str] = None,
        net: str = "glrl",
        models_dir: Optional[PathLike] = None,
        **options,
    ) -> "Upscaler":
        """The released model for ``scale`` (or the one named ``model``), checked against its checksum."""
        folder = Path(models_dir) if models_dir else None
        if model:
            released = model_zoo.get_model(model, folder)
            if int(scale) not in released.scales:
                raise ModelError(f"model {released.name} was trained for x{released.scales}, not x{scale}",
                                 hint="leave out --model to pick the model for this scale")
        else:
            released = model_zoo.model_for_scale(int(scale), net=net, models_dir=folder)
        released.verify()
        upscaler = cls(released.deploy, released.weights, scale, **options)
        upscaler.model_name = released.name
        return upscaler

    def refine_luma(self, luma_up: np.ndarray, on_tile: Optional[TileProgress] = None) -> np.ndarray:
        """The net on a bicubic-enlarged Y plane (float in [0, 1]): the SR Y plane, not yet clipped.
        ``on_tile(done, total)`` follows the tiles of a plane that needs several."""
        return tiling.run_tiled(self._run_net, luma_up, self.tile, self.margin, on_tile).astype(np.float64)

    def _run_net(self, window: np.ndarray) -> np.ndarray:
        return tiling.run_deploy_net(self.net, window, self.border)

    def upscale_picture(self, picture: Picture, on_tile: Optional[TileProgress] = None) -> Picture:
        """Enlarge a picture by the model's scale (colour via Y; alpha by bicubic; bit depth and colour profile
        kept)."""
        pixels = picture.pixels
        if picture.is_colour:
            ycbcr = rgb2ycbcr(pixels[:, :, :3])
            enlarged = imresize(ycbcr, self.scale)
            enlarged[:, :, 0] = self.refine_luma(enlarged[:, :, 0], on_tile)
            planes = [ycbcr2rgb(np.clip(enlarged, 0.0, 1.0))]
        else:
            luma = self.refine_luma(imresize(pixels[:, :, 0], self.scale), on_tile)
            planes = [np.clip(luma, 0.0, 1.0)[:, :, None]]
        if picture.has_alpha:
            planes.append(np.clip(imresize(pixels[:, :, -1], self.scale), 0.0, 1.0)[:, :, None])
        return replace(picture, pixels=np.concatenate(planes, axis=2))

    def upscale_array(self, image: np.ndarray) -> np.ndarray:
        """Enlarge an H×W or H×W×C array (uint8, uint16 or float in [0, 1]); same dtype and layout back."""
        picture, dtype, two_d = array_to_picture(image)
        return picture_to_array(self.upscale_picture(picture), dtype, two_d)


@functools.lru_cache(maxsize=4)
def _cached_upscaler(scale: int, model: Optional[str], net: str, models_dir: Optional[str],
                     backend: Optional[str], device: str, tile: Optional[int], precision: str) -> Upscaler:
    return Upscaler.for_scale(scale, model=model, net=net, models_dir=models_dir,
                              backend=backend, device=device, tile=tile, precision=precision)


def upscale(
    image: np.ndarray,
    scale: int,
    *,
    model: Optional[str] = None,
    net: str = "glrl",
    backend: Optional[str] = None,
    device: str = "auto",
    tile: Optional[int] = None,
    models_dir: Optional[PathLike] = None,
    precision: str = "fp32",
) -> np.ndarray:
    """Enlarge ``image`` by ``scale`` with the released model for that scale.

    ``image``: H×W (grey), H×W×3 (RGB), H×W×2 / H×W×4 (with alpha); uint8, uint16 or float in [0, 1].
    Returns the same dtype and layout, ``scale`` times taller and wider. ``tile`` is the tile size in
    output pixels (default: the largest whose activations fit in 1 GiB, 1.25 GiB with real Caffe; 0 = the
    whole image at once). ``backend`` is ``torch``, ``caffe`` (real Caffe, CPU) or ``auto``; by default
    ``$GLRL_BACKEND``, else ``auto`` (:func:`glrl.backends.resolve_backend`); ``device`` ``auto``, ``cpu`` or
    ``cuda[:N]``; ``precision`` ``fp32`` or ``bf16`` (torch backend: about twice as fast where the hardware
    has bf16 arithmetic, a few thousandths of a dB off fp32 on Set5; docs/upscale.md).
    The loaded model is cached, so calling this in a loop loads it once.
    """
    upscaler = _cached_upscaler(int(scale), model, net, str(models_dir) if models_dir else None,
                                backend, device, tile, precision)
    return upscaler.upscale_array(image)


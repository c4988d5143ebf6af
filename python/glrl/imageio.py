"""Reading and writing images for evaluation and upscaling, with every conversion stated.

``read_image`` returns uint8 arrays, H×W (grey) or H×W×3 (RGB), because the evaluation protocol works on
8-bit images:

* EXIF orientation is applied (a photo displays and is evaluated the way up it was taken);
* grey (``L``) and 1-bit images -> H×W; grey with alpha (``LA``) -> H×W, **alpha dropped**;
* palette images -> RGB (H×W×3), or H×W if the palette has only grey entries;
* RGBA -> RGB, **alpha dropped** (evaluation measures colour only); CMYK/YCbCr files -> RGB;
* 16-bit and floating-point images are refused with a DataError (converting them to 8 bits would change
  the numbers silently; convert them yourself, e.g. ``convert in.png -depth 8 out.png``).

``read_image_with_alpha`` returns the same image plus the alpha plane (uint8 H×W) when there is one, for
the upscaler, which resizes alpha separately and writes it back.
``write_image`` writes atomically (no half-written file under the final name), the format from the file
extension.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from glrl.errors import DataError
from glrl.fsutil import atomic_write_bytes

PathArg = Union[str, Path]

_RGB_MODES = ("RGB", "CMYK", "YCbCr", "LAB", "HSV")
# File name endings taken for images when a folder is listed (any format Pillow reads is accepted by name).
IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pnm")
_SIXTEEN_BIT_HINT = "convert it to 8 bits per channel first (e.g. `convert in.png -depth 8 out.png`)"


def stored_sample_layout(image: Image.Image) -> str:
    """How the file stores its samples (Pillow's raw mode, e.g. ``RGB;16B``), read before ``load()``: the one
    place Pillow tells that a colour image has 16 bits per sample, which it decodes to 8-bit RGB. A TIFF's
    decoder takes a tuple whose first item is the raw mode; "" when the decoder names none."""
    if not image.tile:
        return ""
    args = image.tile[0][3]
    args = args[0] if isinstance(args, tuple) and args else args
    return args if isinstance(args, str) else ""


def _open(path: Path) -> Image.Image:
    if not path.exists():
        raise DataError(f"image not found: {path}", hint="check the path (and --data-root)")
    if path.is_dir():
        raise DataError(f"{path} is a folder, not an image file")
    try:
        image = Image.open(path)
        rawmode = stored_sample_layout(image)
        image.load()
    except UnidentifiedImageError:
        raise DataError(
            f"{path} is not an image Pillow can read", hint="use PNG, BMP, JPEG or TIFF files"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read image {path}: {exc}", hint="the file may be truncated or corrupt") from None
    if image.mode.startswith("I") or image.mode == "F" or ";16" in rawmode:
        raise DataError(f"{path} has 16-bit or floating-point samples (mode {image.mode})", hint=_SIXTEEN_BIT_HINT)
    return ImageOps.exif_transpose(image)


def _palette_is_grey(image: Image.Image) -> bool:
    rgb = np.asarray(image.convert("RGB"))
    return bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]))


def list_images(folder: PathArg) -> List[Path]:
    """The image files directly in ``folder`` (by suffix, case-insensitive), sorted by name."""
    base = Path(folder)
    return sorted(p for p in base.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES) \
        if base.is_dir() else []


def read_image_with_alpha(path: PathArg) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """``(image, alpha)``: image as :func:`read_image` returns it, alpha a uint8 H×W plane or None."""
    path = Path(path)
    image = _open(path)
    mode = image.mode
    alpha: Optional[np.ndarray] = None
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        grey = _palette_is_grey(image)
        converted = image.convert("RGBA" if has_alpha else "RGB")
        if has_alpha:
            alpha = np.array(converted.getchannel("A"))
            converted = converted.convert("RGB")
        return (np.array(converted.convert("L")) if grey else np.array(converted)), alpha
    if mode in ("RGBA", "RGBa"):
        alpha = np.array(image.getchannel("A"))
        return np.array(image.convert("RGB")), alpha
    if mode in ("LA", "La"):
        alpha = np.array(image.getchannel("A"))
        return np.array(image.convert("L")), alpha
    if mode in ("L", "1"):
        return np.array(image.convert("L")), None
    if mode in _RGB_MODES:
        return np.array(image.convert("RGB")), None
    raise DataError(f"{path}: unsupported image mode {mode}", hint="save it as an 8-bit RGB or grey PNG")


def read_image(path: PathArg) -> np.ndarray:
    """uint8 H×W (grey) or H×W×3 (RGB) pixels of an image file; alpha, if any, is dropped."""
    return read_image_with_alpha(path)[0]


def write_image(path: PathArg, pixels: np.ndarray, alpha: Optional[np.ndarray] = None) -> None:
    """Write uint8 H×W, H×W×3 or H×W×4 pixels (or H×W / H×W×3 plus an H×W ``alpha``) atomically."""
    path = Path(path)
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise DataError(f"write_image needs uint8 pixels, not {pixels.dtype} (writing {path})")
    if alpha is not None:
        alpha = np.asarray(alpha)
        if alpha.dtype != np.uint8 or alpha.shape != pixels.shape[:2]:
            raise DataError(f"alpha must be uint8 {pixels.shape[:2]}, not {alpha.dtype} {alpha.shape}")
        base = pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=2)
        pixels = np.concatenate([base, alpha[..., None]], axis=2)
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in (3, 4))):
        raise DataError(f"write_image needs H×W, H×W×3 or H×W×4 pixels, not shape {pixels.shape}")
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"cannot tell the image format of {path} from its extension",
                        hint="use .png, .bmp, .jpg or .tif")
    buffer = io.BytesIO()
    try:
        Image.fromarray(pixels).save(buffer, format=fmt)
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"cannot write {path} as {fmt}: {exc}", hint="PNG keeps every pixel and alpha") from None
    atomic_write_bytes(path, buffer.getvalue())

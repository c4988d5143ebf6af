"""``glrl upscale`` and ``glrl.upscale``: tiles give the whole-image result, every kind of input image comes
back as the same kind, bigger; bad inputs and outputs fail clearly and do not stop a batch."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from glrl import tiling
from glrl.caffe.io import parse_net, read_net
from glrl.errors import DataError, ModelError
from glrl.upscale_io import Picture, check_writable, png_with_chunk, read_picture, write_picture
from PIL import Image

SCALE = 3

# -------------------------------------------------------------------------------- receptive field

BRANCHED_NET = """
name: "branched"
input: "data" input_shape { dim: 1 dim: 1 dim: 8 dim: 8 }
layer { name: "a1" type: "Convolution" bottom: "data" top: "a1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "a1r" type: "ReLU" bottom: "a1" top: "a1" }
layer { name: "a2" type: "Convolution" bottom: "a1" top: "a2"
  convolution_param { num_output: 4 kernel_size: 3 pad: 2 dilation: 2 } }
layer { name: "b1" type: "Convolution" bottom: "data" top: "b1"
  convolution_param { num_output: 2 kernel_size: 5 pad: 2 } }
layer { name: "cat" type: "Concat" bottom: "a2" bottom: "b1" top: "cat" }
layer { name: "out" type: "Convolution" bottom: "cat" top: "out"
  convolution_param { num_output: 1 kernel_size: 3 pad: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "out" bottom: "data" top: "sum" }
"""


def test_receptive_radius_is_the_longest_path_sum_of_dilated_half_kernels():
    net = parse_net(BRANCHED_NET)
    # a-branch: 1 + 2*1 = 3, b-branch: 2; then the 3x3 output conv: 3 + 1 = 4.
    assert tiling.receptive_radius(net) == 4
    # blobs: data 1, a1 4, a2 4, b1 2, cat 6, out 1, sum 1
    assert tiling.floats_per_pixel(net) == 19
    assert tiling.tile_memory_bytes(net, 100) == 4 * 19 * 108 * 108


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the high-water mark from /proc")
def test_inference_holds_at_most_the_live_floats_per_pixel(tmp_path):
    """TorchNet.run drops each blob after its last reader: a whole 384² GLRL pass grows the process by no
    more than tiling.live_floats_per_pixel floats per pixel, several times less than every blob."""
    pytest.importorskip("torch")
    from glrl import settings

    deploy = settings.PROTOTXT_DIR / "glrl" / "deploy.prototxt"
    # the process's high-water mark (VmHWM: per address space, unlike ru_maxrss, which a child inherits from a
    # large parent across fork and exec)
    script = """
import sys, numpy as np, torch
from glrl.backends import open_net

def high_water_kib():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))

torch.set_num_threads(1)
net = open_net(sys.argv[1], None)
image = np.random.default_rng(0).random((1, 1, 384, 384), dtype=np.float32)
net.run({net.input_names[0]: image[:, :, :24, :24]})
before = high_water_kib()
net.run({net.input_names[0]: image})
print((high_water_kib() - before) * 1024 / 4 / 384 ** 2)
"""
    done = subprocess.run([sys.executable, "-c", script, str(deploy)], capture_output=True, text=True, check=True)
    grown = float(done.stdout.split()[-1])
    net = read_net(deploy)
    assert 0 < grown <= tiling.live_floats_per_pixel(net) < tiling.floats_per_pixel(net) / 6


def test_strided_nets_are_refused_for_tiling():
    net = parse_net(BRANCHED_NET.replace("kernel_size: 5 pad: 2", "kernel_size: 5 pad: 2 stride: 2"))
    with pytest.raises(ModelError, match="stride"):
        tiling.receptive_radius(net)


def test_pooling_counts_its_kernel_in_the_receptive_radius_and_keeps_the_channels():
    """Real Caffe runs Pooling (the caffe backend tiles by this walk): a 5×5 window reaches 2 pixels."""
    net = parse_net(BRANCHED_NET.replace('layer { name: "a1r" type: "ReLU" bottom: "a1" top: "a1" }',
                                         'layer { name: "a1r" type: "Pooling" bottom: "a1" top: "a1p" '
                                         "pooling_param { pool: MAX kernel_size: 5 pad: 2 } }")
                    .replace('bottom: "a1" top: "a2"', 'bottom: "a1p" top: "a2"'))
    assert tiling.receptive_radius(net) == 4 + 2
    assert tiling.floats_per_pixel(net) == 19 + 4  # the pooled blob has a1's 4 channels


def test_a_net_tiling_cannot_follow_is_refused_naming_the_layer():
    unwired = BRANCHED_NET.replace('bottom: "cat" top: "out"', 'bottom: "nowhere" top: "out"')
    with pytest.raises(ModelError, match=r"layer 'out' reads blob\(s\) \['nowhere'\] that no earlier layer makes"):
        tiling.receptive_radius(parse_net(unwired))
    flatten = BRANCHED_NET.replace('type: "Concat"', 'type: "Flatten"')
    with pytest.raises(ModelError, match="layer 'cat' has type Flatten, unknown to tiled inference") as caught:
        tiling.receptive_radius(parse_net(flatten))
    assert "tile size 0" in caught.value.hint


STRIDED_NET = """name: "strided"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 16 dim: 20 } } }
layer { name: "down" type: "Convolution" bottom: "data" top: "down"
  convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "up" type: "Deconvolution" bottom: "down" top: "output"
  convolution_param { num_output: 1 kernel_size: 2 stride: 2 } }
"""


def test_a_net_tiling_cannot_follow_runs_on_whole_images_with_tile_0_as_the_refusal_advises(tmp_path):
    pytest.importorskip("torch")
    from glrl.backends.torch_net import TorchNet
    from glrl.upscaling import Upscaler

    deploy = tmp_path / "strided.prototxt"
    deploy.write_text(STRIDED_NET)
    TorchNet(deploy, "TEST", seed=0).save_caffemodel(tmp_path / "strided.caffemodel")
    with pytest.raises(ModelError, match="stride") as refused:
        Upscaler(deploy, tmp_path / "strided.caffemodel", 2, device="cpu")
    assert "tile size 0" in refused.value.hint
    whole = Upscaler(deploy, tmp_path / "strided.caffemodel", 2, device="cpu", tile=0)
    assert whole.tile == 0 and whole.tile_memory_bytes is None
    grey = np.random.default_rng(0).integers(0, 256, (8, 10), dtype=np.uint8)
    assert whole.upscale_array(grey).shape == (16, 20)


def _box_chain(image: np.ndarray, radii=(2, 1, 3)) -> np.ndarray:
    """A stand-in SR net: box filters with zero padding in sequence, receptive radius sum(radii)."""
    out = image.astype(np.float64)
    for r in radii:
        padded = np.pad(out, r)
        acc = np.zeros_like(out)
        for dy in range(2 * r + 1):
            for dx in range(2 * r + 1):
                acc += padded[dy: dy + out.shape[0], dx: dx + out.shape[1]]
        out = np.tanh(acc / (2 * r + 1) ** 2 - 0.3)
    return out


def test_tiles_with_the_receptive_radius_as_margin_equal_the_whole_image():
    image = np.random.default_rng(0).random((53, 71))
    whole = _box_chain(image)
    tiled = tiling.run_tiled(_box_chain, image, tile=16, margin=6)
    assert np.abs(tiled - whole).max() < 1e-6
    # one pixel less of margin is not enough: the check above can fail
    short = tiling.run_tiled(_box_chain, image, tile=16, margin=5)
    assert np.abs(short - whole).max() > 1e-4


def test_thin_and_small_images_tile_like_the_whole_image():
    """A strip thinner than one tile is cut along its length only; an image within one tile runs once."""
    strip = np.random.default_rng(1).random((5, 90))
    assert np.abs(tiling.run_tiled(_box_chain, strip, tile=16, margin=6) - _box_chain(strip)).max() < 1e-6
    calls = []

    def counted(window: np.ndarray) -> np.ndarray:
        calls.append(window.shape)
        return _box_chain(window)

    tiling.run_tiled(counted, strip, tile=16, margin=6)
    assert calls == [(5, 16 + 6)] + [(5, 16 + 12)] * 4 + [(5, 10 + 6)]
    calls.clear()
    small = strip[:, :16]
    tiling.run_tiled(counted, small, tile=16, margin=6)
    assert calls == [(5, 16)]


def test_each_tile_of_a_plane_that_needs_several_is_reported_and_a_one_piece_plane_reports_none():
    strip = np.random.default_rng(1).random((5, 90))
    reports = []
    tiling.run_tiled(_box_chain, strip, tile=16, margin=6, on_tile=lambda done, total: reports.append((done, total)))
    assert reports == [(done, 6) for done in range(1, 7)]
    reports.clear()
    tiling.run_tiled(_box_chain, strip[:, :16], tile=16, margin=6, on_tile=lambda *report: reports.append(report))
    assert reports == []


def test_the_memory_budget_gives_the_largest_tile_within_it_or_a_clear_refusal():
    net = parse_net(BRANCHED_NET)
    budget = 4 * 19 * 108 * 108 + 4 * 19 * 200  # room for a 100-pixel core, not for 101
    assert tiling.tile_for_memory(net, budget) == 100
    assert tiling.tile_memory_bytes(net, 100) <= budget < tiling.tile_memory_bytes(net, 101)
    assert tiling.tile_for_memory(net, 4 * 19 * 9 * 9) == 1  # the 4-pixel margin both sides + 1
    with pytest.raises(ModelError, match="cannot hold even one tile"):
        tiling.tile_for_memory(net, 4 * 19 * 9 * 9 - 1)


def test_tile_plan_covers_every_pixel_once():
    plan = tiling.plan_tiles(50, 33, tile=16, margin=4)
    cover = np.zeros((50, 33), dtype=int)
    for part in plan:
        cover[part.core] += 1
        window = np.zeros((50, 33), dtype=bool)
        window[part.window] = True
        assert window[part.core].all()
        assert part.window[0].stop - part.window[0].start <= 16 + 2 * 4
    assert (cover == 1).all()


# -------------------------------------------------------------------------------- reading images


def test_grey_rgba_palette_and_sixteen_bit_grey_are_read_as_what_they_are(tmp_path):
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (9, 7), dtype=np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    picture = read_picture(tmp_path / "grey.png")
    assert picture.pixels.shape == (9, 7, 1) and picture.bit_depth == 8
    assert np.array_equal(np.round(picture.pixels[:, :, 0] * 255), grey)

    rgba = rng.integers(0, 256, (9, 7, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert read_picture(tmp_path / "rgba.png").pixels.shape == (9, 7, 4)

    Image.fromarray(rgba[:, :, :3], "RGB").convert("P").save(tmp_path / "palette.gif")
    assert read_picture(tmp_path / "palette.gif").pixels.shape == (9, 7, 3)

    deep = rng.integers(0, 65536, (9, 7), dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    picture = read_picture(tmp_path / "deep.png")
    assert picture.bit_depth == 16 and np.array_equal(np.round(picture.pixels[:, :, 0] * 65535), deep)


def test_sixteen_bit_colour_round_trips_through_opencv(tmp_path):
    cv2 = pytest.importorskip("cv2")
    rgb = np.random.default_rng(2).integers(0, 65536, (6, 5, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), rgb[:, :, ::-1])
    picture = read_picture(tmp_path / "deep.png")
    assert picture.bit_depth == 16 and np.array_equal(np.round(picture.pixels * 65535), rgb)
    write_picture(tmp_path / "again.png", picture)
    assert np.array_equal(cv2.imread(str(tmp_path / "again.png"), cv2.IMREAD_UNCHANGED)[:, :, ::-1], rgb)


def test_exif_orientation_turns_the_image_upright(tmp_path):
    pixels = np.zeros((4, 10, 3), dtype=np.uint8)
    pixels[0, 0] = 255  # a marker at the top-left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    Image.fromarray(pixels).save(tmp_path / "turned.png", exif=exif)
    picture = read_picture(tmp_path / "turned.png")
    assert picture.pixels.shape == (10, 4, 3)
    assert picture.pixels[0, -1, 0] == 1.0  # the top-left corner went to the top-right


def _with_exif_orientation(png: bytes, orientation: int) -> bytes:
    """``png`` with an eXIf chunk after its header saying ``orientation`` (Pillow cannot write 16-bit colour)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return png_with_chunk(png, b"eXIf", exif.tobytes().removeprefix(b"Exif\x00\x00"))


def test_sixteen_bit_rgba_keeps_its_alpha_and_its_exif_orientation(tmp_path):
    cv2 = pytest.importorskip("cv2")
    rgba = np.random.default_rng(3).integers(0, 65536, (4, 10, 4), dtype=np.uint16)
    ok, png = cv2.imencode(".png", rgba[:, :, [2, 1, 0, 3]])
    assert ok
    (tmp_path / "deep.png").write_bytes(_with_exif_orientation(png.tobytes(), 6))
    picture = read_picture(tmp_path / "deep.png")
    assert picture.bit_depth == 16 and picture.has_alpha
    assert np.array_equal(np.round(picture.pixels * 65535), np.rot90(rgba, -1))  # 6: turn 90° clockwise
    write_picture(tmp_path / "again.png", picture)
    again = cv2.imread(str(tmp_path / "again.png"), cv2.IMREAD_UNCHANGED)
    assert again.dtype == np.uint16 and np.array_equal(again[:, :, [2, 1, 0, 3]], np.rot90(rgba, -1))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_sixteen_bit_path_turns_images_as_pillow_does(orientation, tmp_path):
    """16-bit colour bypasses Pillow, so its own EXIF turning must agree with ImageOps.exif_transpose."""
    from glrl.upscale_io import _apply_orientation
    from PIL import ImageOps

    pixels = np.random.default_rng(orientation).integers(0, 256, (3, 5, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(tmp_path / "turned.png", exif=exif)
    with Image.open(tmp_path / "turned.png") as img:
        upright = np.asarray(ImageOps.exif_transpose(img))
    assert np.array_equal(_apply_orientation(pixels, orientation), upright)


def test_palette_transparency_becomes_alpha_and_eight_bits_are_written_as_eight(tmp_path):
    palette = Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4) * 20, "L").convert("P")
    palette.save(tmp_path / "holes.png", transparency=0)
    picture = read_picture(tmp_path / "holes.png")
    assert picture.pixels.shape == (3, 4, 4) and picture.bit_depth == 8
    assert picture.pixels[0, 0, 3] == 0.0 and (picture.pixels.reshape(-1, 4)[1:, 3] == 1.0).all()
    write_picture(tmp_path / "grey.png", Picture(picture.pixels[:, :, :1], 8))
    with Image.open(tmp_path / "grey.png") as img:
        assert img.mode == "L"


def test_a_corrupt_or_missing_file_is_a_clear_data_error(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(DataError, match="broken.png"):
        read_picture(tmp_path / "broken.png")
    with pytest.raises(DataError, match="no image file"):
        read_picture(tmp_path / "absent.png")


def test_one_bit_cmyk_and_32_bit_integer_images_are_read_as_grey_rgb_and_16_bit_grey(tmp_path):
    bits = np.random.default_rng(5).random((5, 7)) > 0.5
    Image.fromarray(bits).save(tmp_path / "bits.png")
    picture = read_picture(tmp_path / "bits.png")
    assert picture.pixels.shape == (5, 7, 1) and np.array_equal(picture.pixels[:, :, 0], bits.astype(float))
    Image.new("CMYK", (7, 5), (0, 255, 0, 0)).save(tmp_path / "print.tif")  # full magenta ink
    picture = read_picture(tmp_path / "print.tif")
    assert picture.pixels.shape == (5, 7, 3) and (picture.pixels == [1.0, 0.0, 1.0]).all()
    Image.fromarray(np.full((5, 7), 65535, dtype=np.int32), "I").save(tmp_path / "int.tif")
    picture = read_picture(tmp_path / "int.tif")
    assert picture.bit_depth == 16 and (picture.pixels == 1.0).all()


def test_32_bit_pixels_that_do_not_fit_16_bits_are_refused(tmp_path):
    Image.fromarray(np.full((5, 7), 70000, dtype=np.int32), "I").save(tmp_path / "int.tif")
    Image.fromarray(np.full((5, 7), 0.5, dtype=np.float32), "F").save(tmp_path / "float.tif")
    for name, kind in (("int.tif", "32-bit integer"), ("float.tif", "32-bit float")):
        with pytest.raises(DataError, match=f"{name} holds {kind} pixels, which upscale does not support") as caught:
            read_picture(tmp_path / name)
        assert "convert it to 8- or 16-bit" in caught.value.hint


def test_an_image_too_large_for_pillow_is_refused_with_a_way_round(tmp_path, monkeypatch):
    Image.new("L", (40, 40)).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40 * 40 // 3)  # more than twice the limit: a bomb to Pillow
    with pytest.raises(DataError, match="cannot read image .*huge.png") as caught:
        read_picture(tmp_path / "huge.png")
    assert "cut the image into parts" in caught.value.hint


def test_without_opencv_sixteen_bit_colour_is_refused_both_ways_saying_what_to_install(tmp_path, monkeypatch):
    cv2 = pytest.importorskip("cv2")
    rgb = np.random.default_rng(6).integers(0, 65536, (4, 5, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), rgb[:, :, ::-1])
    monkeypatch.setitem(sys.modules, "cv2", None)  # as if OpenCV were not installed
    with pytest.raises(DataError, match="deep.png is a 16-bit colour image; reading those needs OpenCV") as caught:
        read_picture(tmp_path / "deep.png")
    assert "opencv-python-headless" in caught.value.hint
    with pytest.raises(DataError, match="writing 16-bit colour images needs OpenCV"):
        write_picture(tmp_path / "out.png", Picture(rgb / 65535.0, 16))
    assert not (tmp_path / "out.png").exists()


def test_a_truncated_sixteen_bit_colour_file_is_a_clear_data_error(tmp_path):
    cv2 = pytest.importorskip("cv2")
    rgb = np.random.default_rng(7).integers(0, 65536, (40, 50, 3), dtype=np.uint16)
    ok, png = cv2.imencode(".png", rgb)
    assert ok
    (tmp_path / "cut.png").write_bytes(png.tobytes()[: png.size // 2])  # a 16-bit RGB header, half its pixels
    with pytest.raises(DataError, match="cannot read image .*cut.png: image file is truncated") as caught:
        read_picture(tmp_path / "cut.png")
    assert "damaged" in caught.value.hint


def test_sixteen_bit_grey_is_written_back_as_sixteen_bit_grey(tmp_path):
    deep = np.random.default_rng(8).integers(0, 65536, (6, 5), dtype=np.uint16)
    write_picture(tmp_path / "deep.png", Picture(deep[:, :, None] / 65535.0, 16))
    with Image.open(tmp_path / "deep.png") as img:
        assert img.mode.startswith("I") and np.array_equal(np.asarray(img), deep)


def test_a_write_that_fails_is_a_data_error_naming_the_file(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(DataError, match="cannot write .*a_file/out.png") as caught:
        write_picture(tmp_path / "a_file" / "out.png", Picture(np.zeros((2, 2, 1))))
    assert "output folder you can write to" in caught.value.hint


def test_outputs_that_cannot_be_written_fail_before_any_work(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(DataError, match="cannot write"):
        check_writable(tmp_path / "a_file" / "out.png")
    with pytest.raises(DataError, match="format"):
        write_picture(tmp_path / "out.xyz", Picture(np.zeros((2, 2, 1))))
    with pytest.raises(DataError, match="alpha"):
        write_picture(tmp_path / "out.jpg", Picture(np.zeros((2, 2, 4))))


def test_glrl_upscale_is_reachable_without_importing_torch():
    code = ("import sys, glrl; f = glrl.upscale; import glrl.upscaling; "
            "assert glrl.upscale is f and callable(f); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# -------------------------------------------------------------------------------- with a model

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """A checkout-like folder with one released GLRL ×3 model: the generated deploy net with random
    He-normal weights in every convolution (the generator starts the reconstruction at zero, i.e. at
    bicubic, which would hide the net's effect), the last reconstruction conv scaled down so the output
    stays within 0.01 of the bicubic input (as a trained model's does) instead of saturating."""
    from glrl.backends.torch_fillers import randomize_conv_weights
    from glrl.backends.torch_net import TorchNet
    from glrl.caffe import io
    from glrl.fsutil import sha256_file
    from glrl.nets.registry import get_net

    root = tmp_path_factory.mktemp("checkout")
    deploy = root / "prototxt" / "glrl" / "deploy.prototxt"
    deploy.parent.mkdir(parents=True)
    io.write_net(get_net("glrl").deploy(), deploy)
    (root / "models").mkdir()
    weights = root / "models" / "glrl_x3.caffemodel"
    net = randomize_conv_weights(TorchNet(deploy, "TEST", seed=0))
    net.save_caffemodel(root / "unscaled.caffemodel")  # for the tiling test: large, non-linear effects
    # The residual (output - input) is linear in the last reconstruction conv (shared by rec1..3_conv2,
    # biases 0): scale it so the net moves Y by at most 0.01.
    sample = np.linspace(0.2, 0.8, 24 * 24, dtype=np.float32).reshape(1, 1, 24, 24)
    residual = np.abs(net.run({"data": sample})["output"] - sample).max()
    with torch.no_grad():
        net.layer_blobs()["rec1_conv2"][0].mul_(0.01 / residual)
    net.save_caffemodel(weights)
    metadata = {"name": "glrl_x3", "net": "glrl", "deploy": "prototxt/glrl/deploy.prototxt", "scales": [3],
                "schedule": "test", "iterations": 0, "set5_psnr": {}, "sha256": sha256_file(weights)}
    (root / "models" / "glrl_x3.json").write_text(json.dumps(metadata))
    return root / "models"


@pytest.fixture(scope="module")
def upscaler(models_dir):
    from glrl.upscaling import Upscaler

    return Upscaler.for_scale(SCALE, models_dir=models_dir, device="cpu")


def _smooth_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 0.5 + 0.15 * np.sin(xx / 3.0)[:, :, None] * np.cos(yy / 4.0)[:, :, None]
    return np.clip(base + 0.05 * rng.standard_normal((height, width, 3)), 0.2, 0.8)


def test_the_tiled_net_equals_the_whole_image_net(models_dir):
    from glrl.upscaling import Upscaler

    upscaler = Upscaler(models_dir.parent / "prototxt" / "glrl" / "deploy.prototxt",
                        models_dir.parent / "unscaled.caffemodel", SCALE, device="cpu")
    assert upscaler.margin == 16  # GLRL: 16 3×3 convolutions on the longest path, 1×1 output
    luma = np.random.default_rng(3).random((75, 61))
    whole = Upscaler.refine_luma(_with_tile(upscaler, 0, upscaler.margin), luma)
    tiled = Upscaler.refine_luma(_with_tile(upscaler, 24, upscaler.margin), luma)
    # Equal to float rounding: the Winograd kernel's 4x4 tiles fall differently in a tile than in the whole
    # image (measured 4e-6 of the output's range; with GLRL_WINOGRAD=0 the two are identical).
    tolerance = 1e-5 * np.abs(whole).max()
    assert np.abs(tiled - whole).max() <= tolerance
    short = Upscaler.refine_luma(_with_tile(upscaler, 24, upscaler.margin - 2), luma)
    assert np.abs(short - whole).max() > tolerance  # less context than the receptive radius is not exact


def test_a_valid_net_runs_on_the_image_with_its_border_replicated_whole_or_in_tiles(tmp_path):
    """SRCNN's deploy net is 'valid' (6 pixels lost a side): the upscaler gives it the luma with its edge
    pixels replicated 6 times, and tiles of it give the same result."""
    torch = pytest.importorskip("torch")
    from glrl import settings
    from glrl.backends.torch_net import TorchNet
    from glrl.upscaling import Upscaler

    deploy = settings.PROTOTXT_DIR / "srcnn" / "deploy.prototxt"
    net = TorchNet(str(deploy), "TEST", seed=5)
    net.save_caffemodel(tmp_path / "srcnn.caffemodel")
    upscaler = Upscaler(deploy, tmp_path / "srcnn.caffemodel", SCALE, device="cpu")
    assert (upscaler.border, tiling.receptive_radius(read_net(deploy))) == (6, 6)
    luma = np.random.default_rng(4).random((47, 38))
    whole = Upscaler.refine_luma(_with_tile(upscaler, 0, 6), luma)
    padded = torch.from_numpy(np.pad(luma, 6, mode="edge").astype(np.float32))[None, None]
    with torch.no_grad():
        direct = net.forward({"data": padded})[net.output_names[0]][0, 0].numpy()
    assert whole.shape == luma.shape
    np.testing.assert_allclose(whole, direct, rtol=0, atol=1e-6)
    tiled = Upscaler.refine_luma(_with_tile(upscaler, 16, 6), luma)
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-5 * np.abs(whole).max())


def test_border_loss_sums_what_each_convolution_pads_less_than_its_radius():
    assert tiling.border_loss(parse_net(BRANCHED_NET)) == 0  # every convolution padded
    chain = parse_net("""
input: "data" input_shape { dim: 1 dim: 1 dim: 20 dim: 20 }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1" convolution_param { num_output: 2 kernel_size: 5 } }
layer { name: "r1" type: "ReLU" bottom: "c1" top: "c1" }
layer { name: "c2" type: "Convolution" bottom: "c1" top: "c2"
  convolution_param { num_output: 2 kernel_size: 3 pad: 1 } }
layer { name: "c3" type: "Convolution" bottom: "c2" top: "c3"
  convolution_param { num_output: 1 kernel_size: 3 dilation: 2 pad: 1 } }
""")
    assert tiling.border_loss(chain) == 2 + 0 + 1  # radius 2 unpadded, 1 padded 1, 2 padded 1


def _with_tile(upscaler, tile: int, margin: int):
    clone = object.__new__(type(upscaler))
    clone.__dict__.update(upscaler.__dict__, tile=tile, margin=margin)
    return clone


def test_default_tiles_keep_the_activation_memory_under_one_gib(upscaler):
    assert upscaler.tile > 0
    assert upscaler.tile_memory_bytes <= 1 << 30


def test_colour_goes_through_y_and_chroma_through_bicubic(upscaler):
    from glrl.backends import open_net
    from glrl.matlab_compat import imresize, rgb2ycbcr

    rgb = _smooth_rgb(14, 11)
    out = upscaler.upscale_array(rgb)
    assert out.shape == (42, 33, 3) and out.dtype == rgb.dtype
    ycbcr_in = rgb2ycbcr(rgb)
    ycbcr_out = rgb2ycbcr(out)
    bicubic = imresize(ycbcr_in, SCALE)
    inside = ((out > 0) & (out < 1)).all(axis=2)  # pixels that ycbcr2rgb did not have to clip to [0, 1]
    assert inside.mean() > 0.9
    assert np.abs(ycbcr_out[inside][:, 1:] - bicubic[inside][:, 1:]).max() < 1e-6
    net = open_net(upscaler.net_path, upscaler.weights_path)
    sr_y = net.run({"data": bicubic[None, None, :, :, 0].astype(np.float32)})[net.output_names[0]][0, 0]
    assert np.abs(ycbcr_out[inside][:, 0] - sr_y[inside]).max() < 1e-5
    assert np.abs(sr_y - bicubic[:, :, 0]).max() > 1e-4  # the net changed Y: the check above can fail


def test_every_array_kind_comes_back_as_the_same_kind(upscaler):
    from glrl.matlab_compat import imresize

    rng = np.random.default_rng(4)
    grey = rng.integers(0, 256, (10, 12), dtype=np.uint8)
    assert upscaler.upscale_array(grey).shape == (30, 36)
    rgba = rng.integers(0, 256, (10, 12, 4), dtype=np.uint8)
    out = upscaler.upscale_array(rgba)
    assert out.shape == (30, 36, 4) and out.dtype == np.uint8
    alpha = np.floor(np.clip(imresize(rgba[:, :, 3] / 255.0, SCALE), 0, 1) * 255 + 0.5)
    assert np.array_equal(out[:, :, 3], alpha.astype(np.uint8))
    deep = rng.integers(0, 65536, (10, 12, 3), dtype=np.uint16)
    assert upscaler.upscale_array(deep).dtype == np.uint16
    grey_alpha = rng.random((10, 12, 2))
    out = upscaler.upscale_array(grey_alpha)
    assert out.shape == (30, 36, 2) and out.min() >= 0 and out.max() <= 1
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        upscaler.upscale_array(grey_alpha * 255)
    with pytest.raises(DataError, match="shape"):
        upscaler.upscale_array(np.zeros((4, 4, 5), dtype=np.uint8))


def test_the_package_level_api(models_dir):
    import glrl

    out = glrl.upscale(np.full((8, 9, 3), 128, dtype=np.uint8), SCALE, models_dir=models_dir, device="cpu")
    assert out.shape == (24, 27, 3)


def test_bf16_upscaling_stays_within_a_grey_level_of_fp32_and_real_caffe_refuses_it(models_dir, upscaler):
    import glrl
    from glrl.upscaling import Upscaler

    rgb = (_smooth_rgb(40, 36) * 255).astype(np.uint8)
    fp32 = upscaler.upscale_array(rgb).astype(int)
    bf16 = glrl.upscale(rgb, SCALE, models_dir=models_dir, device="cpu", precision="bf16").astype(int)
    assert bf16.shape == fp32.shape and np.abs(bf16 - fp32).max() <= 1
    with pytest.raises(ModelError, match="fp32 only"):
        Upscaler.for_scale(SCALE, models_dir=models_dir, backend="caffe", precision="bf16")


def test_a_scale_without_a_model_is_refused_with_the_scales_that_have_one(models_dir):
    from glrl.upscaling import Upscaler

    with pytest.raises(ModelError) as caught:
        Upscaler.for_scale(2, models_dir=models_dir)
    assert "x2" in caught.value.message and "x3" in caught.value.hint


def test_a_named_model_must_cover_the_scale_and_a_changed_caffemodel_is_refused(models_dir, tmp_path):
    import shutil

    from glrl.upscaling import Upscaler

    with pytest.raises(ModelError, match="trained for"):
        Upscaler.for_scale(2, model="glrl_x3", models_dir=models_dir)
    copy = tmp_path / "checkout"
    shutil.copytree(models_dir.parent, copy)
    weights = copy / "models" / "glrl_x3.caffemodel"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="SHA-256"):
        Upscaler.for_scale(SCALE, models_dir=copy / "models", device="cpu")


# -------------------------------------------------------------------------------- the command


def _cli(capsys, *argv: str):
    from glrl.cli import main

    status = main(["upscale", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_one_file_in_one_file_out_in_the_format_of_the_extension(models_dir, tmp_path, capsys):
    Image.fromarray((_smooth_rgb(12, 10) * 255).astype(np.uint8)).save(tmp_path / "in.png")
    status, _, err = _cli(capsys, str(tmp_path / "in.png"), str(tmp_path / "out.jpg"), "--scale", "3",
                          "--models-dir", str(models_dir), "--device", "cpu")
    assert status == 0, err
    with Image.open(tmp_path / "out.jpg") as result:
        assert result.format == "JPEG" and result.size == (30, 36)


def _srgb_profile() -> bytes:
    ImageCms = pytest.importorskip("PIL.ImageCms")
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("out_name", ["out.png", "out.jpg", "out.tif", "out.webp"])
def test_the_colour_profile_of_the_input_goes_with_the_result(models_dir, tmp_path, capsys, out_name):
    profile = _srgb_profile()
    Image.fromarray((_smooth_rgb(12, 10) * 255).astype(np.uint8)).save(tmp_path / "in.jpg", icc_profile=profile)
    status, _, err = _cli(capsys, str(tmp_path / "in.jpg"), str(tmp_path / out_name), "--scale", "3",
                          "--models-dir", str(models_dir), "--device", "cpu")
    assert status == 0, err
    with Image.open(tmp_path / out_name) as result:
        assert result.info.get("icc_profile") == profile and result.size == (30, 36)


def test_a_bmp_output_has_no_place_for_a_profile_and_a_converted_cmyk_keeps_none(models_dir, tmp_path, capsys):
    profile = _srgb_profile()
    Image.fromarray((_smooth_rgb(12, 10) * 255).astype(np.uint8)).save(tmp_path / "in.png", icc_profile=profile)
    status, _, err = _cli(capsys, str(tmp_path / "in.png"), str(tmp_path / "out.bmp"), "--scale", "3",
                          "--models-dir", str(models_dir), "--device", "cpu")
    assert status == 0, err
    Image.new("CMYK", (6, 5), (10, 200, 30, 0)).save(tmp_path / "print.jpg", icc_profile=profile)
    assert read_picture(tmp_path / "print.jpg").icc_profile is None  # the profile was of the CMYK pixels


def test_sixteen_bit_colour_keeps_its_profile_in_png(tmp_path):
    cv2 = pytest.importorskip("cv2")
    profile = _srgb_profile()
    rgb = np.random.default_rng(4).integers(0, 65536, (6, 5, 3), dtype=np.uint16)
    write_picture(tmp_path / "deep.png", Picture(rgb / 65535.0, 16, profile))
    picture = read_picture(tmp_path / "deep.png")
    assert picture.icc_profile == profile and np.array_equal(np.round(picture.pixels * 65535), rgb)
    assert np.array_equal(cv2.imread(str(tmp_path / "deep.png"), cv2.IMREAD_UNCHANGED)[:, :, ::-1], rgb)


def test_exif_rotated_input_gives_an_upright_output(models_dir, tmp_path, capsys):
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 counter-clockwise to view
    Image.fromarray(np.full((6, 10, 3), 90, dtype=np.uint8)).save(tmp_path / "photo.jpg", exif=exif)
    status, _, err = _cli(capsys, str(tmp_path / "photo.jpg"), str(tmp_path / "big.png"), "--scale", "3",
                          "--models-dir", str(models_dir), "--device", "cpu")
    assert status == 0, err
    with Image.open(tmp_path / "big.png") as result:
        assert result.size == (18, 30)


def test_a_batch_goes_on_past_bad_files_and_lists_them(models_dir, tmp_path, capsys):
    source = tmp_path / "in"
    source.mkdir()
    Image.fromarray((_smooth_rgb(9, 8) * 255).astype(np.uint8)).save(source / "colour.png")
    Image.fromarray(np.full((7, 9), 200, dtype=np.uint8), "L").save(source / "grey.bmp")
    Image.fromarray(np.full((7, 9, 4), 200, dtype=np.uint8), "RGBA").save(source / "alpha.png")
    (source / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a PNG")
    status, out, err = _cli(capsys, str(source), str(tmp_path / "out"), "--scale", "3",
                            "--models-dir", str(models_dir), "--device", "cpu", "--tile", "16")
    assert status == 1
    assert "corrupt.png" in err and "1 failed" in err and "3 of 4" in out
    with Image.open(tmp_path / "out" / "grey.bmp") as grey:
        assert grey.mode == "L" and grey.size == (27, 21)
    with Image.open(tmp_path / "out" / "alpha.png") as alpha:
        assert alpha.mode == "RGBA"
    assert (tmp_path / "out" / "colour.png").is_file() and not (tmp_path / "out" / "corrupt.png").exists()


def test_an_image_of_several_tiles_shows_a_tile_progress_bar_and_one_of_a_single_tile_none(models_dir, tmp_path,
                                                                                            capsys):
    Image.fromarray((_smooth_rgb(12, 10) * 255).astype(np.uint8)).save(tmp_path / "in.png")
    common = ["--scale", "3", "--models-dir", str(models_dir), "--device", "cpu"]
    status, _, err = _cli(capsys, str(tmp_path / "in.png"), str(tmp_path / "tiled.png"), "--tile", "16", *common)
    assert status == 0 and re.search(r"in\.png x3: .*\d/6 \[.*tile/s", err), err  # 36x30 in 16-pixel tiles
    status, _, err = _cli(capsys, str(tmp_path / "in.png"), str(tmp_path / "whole.png"), *common)
    assert status == 0 and "tile" not in err, err


def test_a_batch_without_failures_exits_0_and_tile_0_runs_whole_images(models_dir, tmp_path, capsys):
    source = tmp_path / "in"
    source.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((6, 7), 90, dtype=np.uint8), "L").save(source / name)
    status, out, err = _cli(capsys, str(source), str(tmp_path / "out"), "--scale", "3", "--tile", "0",
                            "--models-dir", str(models_dir), "--device", "cpu")
    assert status == 0, err
    assert "2 of 2 images enlarged x3" in out and "whole images" in out and "failed" not in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]


def test_inputs_that_name_nothing_to_enlarge_are_refused_before_the_model_loads(models_dir, tmp_path, monkeypatch,
                                                                                capsys):
    monkeypatch.setattr("glrl.upscaling.Upscaler.for_scale",
                        lambda *args, **kwargs: pytest.fail("the model loaded for inputs that could not be enlarged"))
    source = tmp_path / "in"
    source.mkdir()
    (source / "notes.txt").write_text("not an image")
    (tmp_path / "out.png").write_bytes(b"an earlier result")
    cases = [(source, tmp_path / "out.png", "is a folder, so the output", "give a folder"),
             (source, tmp_path / "new.png", "is a folder, so the output", "give a folder"),  # not made a folder
             (source, tmp_path / "out", f"no images in {source}", "images end with .png"),
             (tmp_path / "absent.png", tmp_path / "big.png", "no such file or folder", "check the input path")]
    for given, output, message, hint in cases:
        status, _, err = _cli(capsys, str(given), str(output), "--scale", "3", "--models-dir", str(models_dir))
        assert status == 2 and message in err and f"hint: {hint}" in err
    assert (tmp_path / "out.png").read_bytes() == b"an earlier result" and not (tmp_path / "out").exists()
    assert not (tmp_path / "new.png").exists()


def test_an_unwritable_output_is_a_clear_error_before_any_work(models_dir, tmp_path, capsys):
    Image.fromarray(np.full((6, 6), 50, dtype=np.uint8), "L").save(tmp_path / "in.png")
    (tmp_path / "blocker").write_text("a file where a folder should be")
    status, _, err = _cli(capsys, str(tmp_path / "in.png"), str(tmp_path / "blocker" / "out.png"),
                          "--scale", "3", "--models-dir", str(models_dir), "--device", "cpu")
    assert status == 2 and "cannot write" in err and "hint:" in err


def test_an_animation_and_alpha_for_a_format_without_it_are_refused_before_the_model_loads(models_dir, tmp_path,
                                                                                           monkeypatch, capsys):
    frames = [Image.new("RGB", (8, 8), colour) for colour in ("red", "blue")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    Image.fromarray(np.full((6, 6, 4), 200, dtype=np.uint8), "RGBA").save(tmp_path / "alpha.png")
    monkeypatch.setattr("glrl.upscaling.Upscaler.for_scale",
                        lambda *args, **kwargs: pytest.fail("the model loaded for an input that could not be written"))
    status, _, err = _cli(capsys, str(tmp_path / "anim.gif"), str(tmp_path / "big.png"), "--scale", "3",
                          "--models-dir", str(models_dir), "--device", "cpu")
    assert status == 2 and "is an animation (2 frames)" in err and "hint: extract the frames" in err
    status, _, err = _cli(capsys, str(tmp_path / "alpha.png"), str(tmp_path / "big.jpg"), "--scale", "3",
                          "--models-dir", str(models_dir), "--device", "cpu")
    assert status == 2 and "cannot store this image as JPEG" in err and "keep the alpha" in err
    assert not (tmp_path / "big.png").exists() and not (tmp_path / "big.jpg").exists()


def test_an_input_is_never_overwritten_by_its_own_output(models_dir, tmp_path, capsys):
    Image.fromarray(np.full((6, 6), 50, dtype=np.uint8), "L").save(tmp_path / "in.png")
    before = (tmp_path / "in.png").read_bytes()
    for output in (tmp_path / "in.png", tmp_path):
        status, _, err = _cli(capsys, str(tmp_path / "in.png"), str(output), "--scale", "3",
                              "--models-dir", str(models_dir), "--device", "cpu")
        assert status == 2 and "overwritten" in err
    assert (tmp_path / "in.png").read_bytes() == before


def test_bf16_on_a_cpu_without_native_bf16_comes_with_a_note_that_fp32_is_faster(monkeypatch):
    from glrl import machine

    monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert "bf16 is emulated" in machine.bf16_emulation_note("bf16", "cpu")
    assert machine.cpu_speed_features() == "avx2"
    assert machine.bf16_emulation_note("fp32", "cpu") is None
    assert machine.bf16_emulation_note("bf16", "cuda:0") is None
    monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert machine.bf16_emulation_note("bf16", "cpu") is None
    monkeypatch.setattr(machine, "cpu_flags", lambda: None)  # a system that does not say: no guess
    assert machine.bf16_emulation_note("bf16", "cpu") is None and machine.cpu_speed_features() == "unknown"


def test_api_arrays_are_checked_and_quantised_back_to_nearest():
    from glrl.upscale_io import array_to_picture, picture_to_array

    for bad in (np.full((4, 4), np.nan), np.zeros((0, 5), np.uint8), np.full((4, 4), 1.5)):
        with pytest.raises(DataError):
            array_to_picture(bad)
    half = Picture(np.full((1, 1, 1), 0.5), 16)
    assert picture_to_array(half, np.uint16, True).tolist() == [[32768]]  # 32767.5 rounds up
    assert picture_to_array(half, np.uint8, True).tolist() == [[128]]


def test_api_arrays_of_another_dtype_are_refused_naming_it():
    from glrl.upscale_io import array_to_picture

    with pytest.raises(DataError, match="images of dtype int32 are not supported") as caught:
        array_to_picture(np.zeros((4, 4), np.int32))
    assert "uint8, uint16 or a float array" in caught.value.hint


def test_an_output_path_that_is_a_folder_is_refused(tmp_path):
    with pytest.raises(DataError, match="folder"):
        check_writable(tmp_path)

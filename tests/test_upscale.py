"""``glrl upscale`` and ``glrl.upscale``: tiles give the whole-image result, every kind of input image comes
back as the same kind, bigger; bad inputs and outputs fail clearly and do not stop a batch."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from glrl import tiling
from glrl.caffe.io import parse_net
from glrl.errors import DataError, ModelError
from glrl.upscale_io import Picture, check_writable, read_picture, write_picture

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


def test_strided_nets_are_refused_for_tiling():
    net = parse_net(BRANCHED_NET.replace("kernel_size: 5 pad: 2", "kernel_size: 5 pad: 2 stride: 2"))
    with pytest.raises(ModelError, match="stride"):
        tiling.receptive_radius(net)


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


def test_a_corrupt_or_missing_file_is_a_clear_data_error(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(DataError, match="broken.png"):
        read_picture(tmp_path / "broken.png")
    with pytest.raises(DataError, match="no image file"):
        read_picture(tmp_path / "absent.png")


def test_outputs_that_cannot_be_written_fail_before_any_work(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(DataError, match="cannot write"):
        check_writable(tmp_path / "a_file" / "out.png")
    with pytest.raises(DataError, match="format"):
        write_picture(tmp_path / "out.xyz", Picture(np.zeros((2, 2, 1))))
    with pytest.raises(DataError, match="alpha"):
        write_picture(tmp_path / "out.jpg", Picture(np.zeros((2, 2, 4))))

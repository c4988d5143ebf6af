"""Image reading and writing: every supported conversion, and a clear error for every bad file."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from glrl.errors import DataError
from glrl.imageio import read_image, read_image_with_alpha, write_image

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (6, 5, 3)).astype(np.uint8)
GREY = RNG.integers(0, 256, (6, 5)).astype(np.uint8)


def test_rgb_and_grey_round_trip_through_png_and_bmp(tmp_path):
    for name, pixels in [("rgb.png", RGB), ("grey.png", GREY), ("rgb.bmp", RGB), ("grey.bmp", GREY)]:
        write_image(tmp_path / name, pixels)
        back = read_image(tmp_path / name)
        assert back.dtype == np.uint8 and np.array_equal(back, pixels), name


def test_rgba_is_read_as_rgb_with_alpha_dropped_and_alpha_is_available_separately(tmp_path):
    alpha = RNG.integers(0, 256, (6, 5)).astype(np.uint8)
    write_image(tmp_path / "a.png", RGB, alpha=alpha)
    assert np.array_equal(read_image(tmp_path / "a.png"), RGB)
    pixels, read_alpha = read_image_with_alpha(tmp_path / "a.png")
    assert np.array_equal(pixels, RGB) and np.array_equal(read_alpha, alpha)
    write_image(tmp_path / "plain.png", RGB)
    assert read_image_with_alpha(tmp_path / "plain.png")[1] is None


def test_grey_with_alpha_and_one_bit_images_become_grey(tmp_path):
    Image.fromarray(np.stack([GREY, GREY], axis=2), "LA").save(tmp_path / "la.png")
    assert np.array_equal(read_image(tmp_path / "la.png"), GREY)
    Image.fromarray(GREY > 127).save(tmp_path / "bits.png")
    assert np.array_equal(read_image(tmp_path / "bits.png"), np.where(GREY > 127, 255, 0))


def test_palette_images_become_rgb_or_grey(tmp_path):
    Image.fromarray(RGB).quantize(16).save(tmp_path / "colour.png")
    colour = read_image(tmp_path / "colour.png")
    assert colour.shape == (6, 5, 3)
    assert np.array_equal(colour, np.array(Image.open(tmp_path / "colour.png").convert("RGB")))
    Image.fromarray(GREY).convert("P").save(tmp_path / "greypal.png")
    grey = read_image(tmp_path / "greypal.png")
    assert grey.shape == (6, 5) and np.array_equal(grey, GREY)


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: display = stored turned 90° clockwise
    Image.fromarray(RGB).save(tmp_path / "photo.png", exif=exif.tobytes())
    assert np.array_equal(read_image(tmp_path / "photo.png"), np.rot90(RGB, -1))
    Image.fromarray(RGB).save(tmp_path / "photo.jpg", exif=exif.tobytes(), quality=100)
    assert read_image(tmp_path / "photo.jpg").shape == (5, 6, 3)  # JPEG keeps the tag too


def _png_rgb16(path, pixels: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG written from the format's definition (Pillow cannot write one)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width = pixels.shape[:2]
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # bit depth 16, colour type RGB
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in pixels)  # filter type 0 per row
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def test_sixteen_bit_images_are_refused(tmp_path):
    _png_rgb16(tmp_path / "rgb16.png", RGB.astype(np.uint16) * 257)
    assert Image.open(tmp_path / "rgb16.png").size == (5, 6)  # a valid PNG Pillow would read as 8-bit RGB
    Image.fromarray(GREY.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    for name in ("rgb16.png", "grey16.png"):
        with pytest.raises(DataError, match="16-bit") as info:
            read_image(tmp_path / name)
        assert name in str(info.value) and "8 bits" in info.value.hint


def test_a_sixteen_bit_colour_tiff_is_refused_too(tmp_path):
    cv2 = pytest.importorskip("cv2")
    cv2.imwrite(str(tmp_path / "rgb16.tif"), RGB.astype(np.uint16) * 257)  # Pillow reads this as 8-bit RGB too
    with pytest.raises(DataError, match="rgb16.tif has 16-bit"):
        read_image(tmp_path / "rgb16.tif")


def test_non_image_missing_and_truncated_files_are_clear_errors(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(DataError, match="notes.png is not an image"):
        read_image(tmp_path / "notes.png")
    with pytest.raises(DataError, match="not found"):
        read_image(tmp_path / "absent.png")
    write_image(tmp_path / "whole.png", RNG.integers(0, 256, (64, 64, 3)).astype(np.uint8))
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.png"):
        read_image(tmp_path / "cut.png")


def test_write_refuses_bad_pixels_and_unknown_formats_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "keep.png"
    write_image(target, RGB)
    before = target.read_bytes()
    with pytest.raises(DataError, match="uint8"):
        write_image(target, RGB.astype(np.float32))
    with pytest.raises(DataError, match="format"):
        write_image(tmp_path / "x.unknown", RGB)
    with pytest.raises(DataError, match="shape"):
        write_image(target, np.zeros((4, 4, 2), np.uint8))
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]  # no temporary files left


def test_a_folder_given_as_an_image_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path} is a folder, not an image file"):
        read_image(tmp_path)


def test_palette_transparency_is_read_as_an_alpha_plane(tmp_path):
    Image.fromarray(GREY).convert("P").save(tmp_path / "holes.png", transparency=int(GREY[0, 0]))
    pixels, alpha = read_image_with_alpha(tmp_path / "holes.png")
    assert np.array_equal(pixels, GREY)
    assert np.array_equal(alpha, np.where(GREY == GREY[0, 0], 0, 255))


def test_a_palette_image_with_an_alpha_channel_is_read_as_pixels_and_alpha(tmp_path):
    colours = Image.fromarray(RGB).quantize(colors=16)  # palette + alpha: TIFF keeps the mode PA
    with_alpha = colours.convert("PA")
    with_alpha.putalpha(Image.fromarray(GREY))
    with_alpha.save(tmp_path / "palette_alpha.tif")
    assert Image.open(tmp_path / "palette_alpha.tif").mode == "PA"
    pixels, alpha = read_image_with_alpha(tmp_path / "palette_alpha.tif")
    assert np.array_equal(pixels, np.asarray(colours.convert("RGB")))
    assert np.array_equal(alpha, GREY)
    assert np.array_equal(read_image(tmp_path / "palette_alpha.tif"), pixels)


def test_an_image_mode_without_a_conversion_is_refused_naming_it(tmp_path, monkeypatch):
    # Files whose samples have no 8-bit reading are refused on opening; a mode that gets past that check
    # without a conversion (here a float plane handed over directly) is refused by name, not guessed at.
    monkeypatch.setattr("glrl.imageio._open", lambda path: Image.new("F", (5, 6)))
    with pytest.raises(DataError, match="odd.tif: unsupported image mode F") as info:
        read_image(tmp_path / "odd.tif")
    assert "8-bit RGB or grey PNG" in info.value.hint


def test_write_refuses_alpha_that_does_not_fit_and_a_format_that_cannot_hold_the_pixels(tmp_path):
    target = tmp_path / "keep.jpg"
    write_image(target, RGB)
    before = target.read_bytes()
    with pytest.raises(DataError, match=r"alpha must be uint8 \(6, 5\), not uint8 \(5, 6\)"):
        write_image(target, RGB, alpha=np.zeros((5, 6), np.uint8))
    with pytest.raises(DataError, match="cannot write .*keep.jpg as JPEG") as info:
        write_image(target, RGB, alpha=np.zeros((6, 5), np.uint8))  # JPEG has no alpha
    assert "PNG keeps every pixel and alpha" in info.value.hint
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["keep.jpg"]


# ---------------------------------------------------- the protocol's array steps (glrl.matlab_compat.crop)


def test_im2double_scales_each_integer_depth_like_matlab_and_refuses_other_dtypes():
    from glrl.matlab_compat import im2double

    assert im2double(np.array([0, 32768, 65535], np.uint16)).tolist() == [0.0, 32768 / 65535, 1.0]
    assert im2double(np.array([True, False])).tolist() == [1.0, 0.0]
    halves = im2double(np.array([0.25, 1.5], np.float32))
    assert halves.dtype == np.float64 and halves.tolist() == [0.25, 1.5]  # floats kept as they are
    with pytest.raises(DataError, match="im2double supports uint8, uint16, bool and float images, not int32"):
        im2double(np.zeros(3, np.int32))


def test_modcrop_and_shave_refuse_a_scale_or_border_that_is_not_a_whole_number():
    from glrl.matlab_compat import modcrop, shave

    for scale in (0, 2.5, -3):
        with pytest.raises(ValueError, match=f"modcrop scale must be a positive integer, not {scale!r}"):
            modcrop(GREY, scale)
    for border in (-1, 1.5):
        with pytest.raises(ValueError, match=f"shave border must be a non-negative integer, not {border!r}"):
            shave(GREY, border)
    assert modcrop(GREY, 2.0).shape == (6, 4) and shave(GREY, 1.0).shape == (4, 3)

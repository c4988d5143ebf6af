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
    Image.fromarray(RGB).save(tmp_path / "photo.jpg", exif=exif.tobytes(), quality=100)
    assert read_image(tmp_path / "photo.jpg").shape == (5, 6, 3)


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

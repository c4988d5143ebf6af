"""MATLAB-compatible image operations: bit-exact against MATLAB's own output, float path against the
formulas, colour conversion against MATLAB's constants."""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glrl.errors import DataError
from glrl.matlab_compat import (im2double, im2uint8, imresize, modcrop, output_size, rgb2y, rgb2ycbcr,
                                round_to_uint8, shave, ycbcr2rgb)

MATLAB_REFERENCE_COUNT = 57  # Set5 (5) + Set14 (14), at x2, x3, x4


def _matlab_reference_cases(root: Path):
    for ref in sorted((root / "matlab_lr").glob("*/x*/*.png")):
        dataset, scale_dir = ref.parent.parent.name, ref.parent.name
        yield ref, root / "test" / dataset / ref.name, int(scale_dir[1:])


def test_uint8_bicubic_reproduces_every_matlab_reference_file_bit_exactly(data_root):
    cases = list(_matlab_reference_cases(data_root))
    assert len(cases) == MATLAB_REFERENCE_COUNT
    for ref_path, hr_path, scale in cases:
        hr = modcrop(np.array(Image.open(hr_path)), scale)
        expected = np.array(Image.open(ref_path))
        ours = imresize(hr, 1 / scale)
        assert ours.dtype == np.uint8
        assert ours.shape == expected.shape, ref_path
        assert np.array_equal(ours, expected), f"{ref_path}: {np.count_nonzero(ours != expected)} pixels differ"


def test_symmetric_border_differs_from_matlab_reference_only_on_the_outer_pixel(data_root):
    ref_path, hr_path, scale = next(_matlab_reference_cases(data_root))
    hr = modcrop(np.array(Image.open(hr_path)), scale)
    expected = np.array(Image.open(ref_path))
    mirrored = imresize(hr, 1 / scale, border="symmetric")
    assert np.array_equal(mirrored[1:-1, 1:-1], expected[1:-1, 1:-1])
    assert not np.array_equal(mirrored, expected)


# --- an independent float64 reference, written from the formulas as dense matrices -----------------------

def _keys_cubic(x: float) -> float:
    a = abs(x)
    if a <= 1:
        return 1.5 * a**3 - 2.5 * a**2 + 1
    if a <= 2:
        return -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2
    return 0.0


def _reference_matrix(n_in: int, n_out: int, scale: float, border: str) -> np.ndarray:
    """Row i: the normalised kernel weights of every source position around output i, folded into range."""
    matrix = np.zeros((n_out, n_in))
    stretch = min(scale, 1.0)  # antialiasing: the kernel widens by 1/scale when shrinking
    half_width = 2.0 / stretch
    for i in range(n_out):
        centre = (i + 1) / scale + 0.5 * (1 - 1 / scale)  # 1-based source coordinate
        for position in range(math.floor(centre - half_width) - 1, math.ceil(centre + half_width) + 2):
            weight = stretch * _keys_cubic(stretch * (centre - position))
            if border == "replicate":
                source = min(max(position, 1), n_in)
            else:  # mirror: ... 2 1 | 1 2 ... n | n n-1 ...
                source = position
                while not 1 <= source <= n_in:
                    source = 1 - source if source < 1 else 2 * n_in + 1 - source
            matrix[i, source - 1] += weight
        matrix[i] /= matrix[i].sum()
    return matrix


def _reference_resize(img: np.ndarray, scale: float, border: str) -> np.ndarray:
    rows = _reference_matrix(img.shape[0], int(round(img.shape[0] * scale)), scale, border)
    cols = _reference_matrix(img.shape[1], int(round(img.shape[1] * scale)), scale, border)
    return np.einsum("ij,jkc,lk->ilc", rows, img, cols) if img.ndim == 3 else rows @ img @ cols.T


@pytest.mark.parametrize("border", ["replicate", "symmetric"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_float_path_up_then_down_matches_the_formulas_to_1e_12(scale, border):
    rng = np.random.default_rng(scale)
    img = rng.random((19, 10, 3))
    up = imresize(img, scale, border=border)
    assert up.dtype == np.float64
    np.testing.assert_allclose(up, _reference_resize(img, scale, border), rtol=0, atol=1e-12)
    down = imresize(up, 1 / scale, border=border)
    assert down.shape == img.shape
    np.testing.assert_allclose(down, _reference_resize(up, 1 / scale, border), rtol=0, atol=1e-12)


def test_float_path_on_grey_images_and_non_integer_scales_matches_the_formulas():
    img = np.random.default_rng(7).random((20, 17))
    for scale in (0.5, 0.7, 1.6):
        ours = imresize(img, scale)
        assert ours.shape == (math.ceil(20 * scale), math.ceil(17 * scale))
        rows = _reference_matrix(20, ours.shape[0], scale, "replicate")
        cols = _reference_matrix(17, ours.shape[1], scale, "replicate")
        np.testing.assert_allclose(ours, rows @ img @ cols.T, rtol=0, atol=1e-12)


def test_output_shape_uses_per_axis_scales_and_shrinks_the_smaller_scale_first():
    img = np.random.default_rng(1).integers(0, 256, (30, 24)).astype(np.uint8)
    ours = imresize(img, output_shape=(45, 8))
    # columns shrink (scale 1/3) before rows grow (scale 1.5); each pass rounded to uint8
    cols = _reference_matrix(24, 8, 8 / 24, "replicate")
    rows = _reference_matrix(30, 45, 45 / 30, "replicate")
    first = np.clip(np.floor(img @ cols.T + 0.5), 0, 255)
    expected = np.clip(np.floor(rows @ first + 0.5), 0, 255)
    assert np.array_equal(ours, expected.astype(np.uint8))


def test_scale_gives_the_ceiling_of_the_binary_product_as_the_output_size_as_matlab_does():
    img = np.zeros((50, 31))
    assert imresize(img, 1.1).shape == output_size((50, 31), 1.1) == (56, 35)  # 1.1 * 50 is 55.000000000000007
    for factor in (Fraction(1, 2), Fraction(1, 3), Fraction(1, 4), Fraction(9, 10), Fraction(4, 5),
                   Fraction(7, 10), Fraction(3, 5)):  # the protocol's and VDSR's: whole where the exact product is
        sides = range(factor.denominator, 3001, factor.denominator)
        shapes = [imresize(np.zeros((side, factor.denominator)), float(factor)).shape[0] for side in sides]
        assert shapes == [side * factor for side in sides], factor
    assert imresize(img, 1 / 3).shape == (17, 11)  # ceil(16.67), ceil(10.33)
    assert imresize(img, (0.5, 2)).shape == (25, 62)
    assert imresize(np.zeros((510, 255)), 1 / 3).shape == (170, 85)  # exact thirds stay exact
    assert imresize(np.zeros((2, 2)), 1e-3).shape == (1, 1)  # MATLAB keeps at least one pixel
    with pytest.raises(DataError, match="by 1e-12 would weigh 4000000000002 input pixels into each output") as info:
        imresize(np.zeros((2, 2)), 1e-12)  # instead of asking for terabytes
    assert "steps" in info.value.hint


def test_uint8_rounds_half_away_from_zero_and_saturates():
    # a single bright pixel upscaled: the cubic's negative lobes would go below 0 and overshoot 255
    img = np.zeros((4, 4), np.uint8)
    img[1:3, 1:3] = 255
    out = imresize(img, 2)
    exact = imresize(img.astype(np.float64), 2)
    assert exact.min() < 0 and exact.max() > 255
    assert out.min() == 0 and out.max() == 255
    assert imresize(np.full((3, 3), 200, np.uint8), 2).tolist() == np.full((6, 6), 200).tolist()


def test_matlabs_uint8_rounds_half_away_from_zero_and_im2uint8_scales_by_255_first():
    assert round_to_uint8(np.array([-3.0, 0.5, 1.49, 2.5, 254.5, 300.0])).tolist() == [0, 1, 1, 3, 255, 255]
    assert im2uint8(np.array([0.0, 0.5 / 255, 1.5 / 255, 1.0, 1.2])).tolist() == [0, 1, 2, 255, 255]


def test_imresize_rejects_bad_arguments():
    img = np.zeros((8, 8), np.uint8)
    with pytest.raises(ValueError, match="give exactly one of scale and output_shape"):
        imresize(img)
    with pytest.raises(ValueError, match="give exactly one of scale and output_shape"):
        imresize(img, 2, output_shape=(4, 4))
    with pytest.raises(ValueError, match="scale must be a positive number"):
        imresize(img, -2)
    with pytest.raises(ValueError, match="border must be one of"):
        imresize(img, 2, border="circular")
    with pytest.raises(DataError, match="int32"):
        imresize(img.astype(np.int32), 2)
    with pytest.raises(DataError, match="shape"):
        imresize(np.zeros((0, 5)), 2)


def test_rgb2ycbcr_uses_matlab_bt601_constants():
    colours = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    assert rgb2ycbcr(colours).tolist() == [
        [[16, 128, 128], [235, 128, 128], [81, 90, 240], [145, 54, 34], [41, 240, 110]]
    ]
    as_float = rgb2ycbcr(colours / 255.0) * 255
    np.testing.assert_allclose(as_float[0, 2], [16 + 65.481, 128 - 37.797, 128 + 112.0], atol=1e-12)


@pytest.mark.parametrize("channel, coefficient", [(0, 65.481), (1, 128.553), (2, 24.966)])
def test_rgb2ycbcr_y_of_every_level_of_one_primary_is_matlabs_rounded_formula(channel, coefficient):
    ramp = np.zeros((1, 256, 3), np.uint8)
    ramp[0, :, channel] = np.arange(256)
    expected = np.floor(16 + coefficient * np.arange(256) / 255 + 0.5)
    assert rgb2ycbcr(ramp)[0, :, 0].tolist() == expected.tolist()
    assert rgb2y(ramp)[0].tolist() == expected.tolist()


def test_rgb2y_is_the_y_plane_of_rgb2ycbcr():
    rgb8 = np.random.default_rng(4).integers(0, 256, (16, 9, 3)).astype(np.uint8)
    assert np.array_equal(rgb2y(rgb8), rgb2ycbcr(rgb8)[..., 0])
    assert np.array_equal(rgb2y(rgb8 / 255.0), rgb2ycbcr(rgb8 / 255.0)[..., 0])


def test_ycbcr2rgb_inverts_rgb2ycbcr():
    rgb = np.random.default_rng(3).random((9, 11, 3))
    np.testing.assert_allclose(ycbcr2rgb(rgb2ycbcr(rgb)), rgb, atol=1e-12)
    rgb8 = (rgb * 255).round().astype(np.uint8)
    assert np.abs(ycbcr2rgb(rgb2ycbcr(rgb8)).astype(int) - rgb8).max() <= 2
    assert ycbcr2rgb(np.array([[[235, 128, 128]]], np.uint8)).tolist() == [[[255, 255, 255]]]


def test_ycbcr2rgb_rounds_uint8_to_nearest_and_clips_floats_to_the_unit_range():
    # green's YCbCr maps back to R, G, B = 0.18, 255.61, 0.93 before rounding
    assert ycbcr2rgb(np.array([[[145, 54, 34]]], np.uint8)).tolist() == [[[0, 255, 1]]]
    rgb8 = np.random.default_rng(5).integers(0, 256, (64, 64, 3)).astype(np.uint8)
    assert abs(np.mean(ycbcr2rgb(rgb2ycbcr(rgb8)).astype(int) - rgb8)) < 0.05  # unbiased rounding
    outside = ycbcr2rgb(np.array([[[235, 16, 240]]]) / 255.0)  # red above 1 before clipping
    assert outside.min() >= 0.0 and outside.max() == 1.0


def test_colour_conversion_needs_three_channels():
    with pytest.raises(DataError, match="H×W×3"):
        rgb2ycbcr(np.zeros((4, 4), np.uint8))


def test_modcrop_shave_and_im2double():
    img = np.arange(7 * 10).reshape(7, 10)
    assert modcrop(img, 3).shape == (6, 9)
    assert modcrop(img, 1).shape == (7, 10)
    assert shave(img, 2).tolist() == img[2:5, 2:8].tolist()
    assert shave(img, 0).shape == img.shape
    assert im2double(np.array([0, 51, 255], np.uint8)).tolist() == [0.0, 0.2, 1.0]
    assert im2double(np.array([65535], np.uint16)).tolist() == [1.0]


@pytest.mark.parametrize("scale", [0, -3, 2.5])
def test_modcrop_refuses_a_scale_that_is_not_a_positive_integer(scale):
    with pytest.raises(ValueError, match="positive integer"):
        modcrop(np.zeros((12, 12)), scale)


def test_image_smaller_than_the_scale_is_a_clear_error():
    with pytest.raises(DataError, match="smaller than the scale factor 3"):
        modcrop(np.zeros((2, 40), np.uint8), 3)
    with pytest.raises(DataError, match="leaves nothing"):
        shave(np.zeros((4, 4)), 2)

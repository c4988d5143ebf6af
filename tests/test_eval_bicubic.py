"""The benchmark protocol and runner, held to the Bicubic row of the paper's Table 2.

Bicubic is the one method whose published figures we can reproduce without training, so it pins the
whole chain: MATLAB-exact Y conversion, bicubic down/up, rounding, shaving, PSNR and SSIM.
"""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from glrl.cli import main
from glrl.errors import DataError, ModelError
from glrl.eval import available_methods, create_method, evaluate, prepare, register_method, run_method
from glrl.eval.protocol import Y_RANGE, to_uint8
from glrl.eval.report import SUMMARY_FIELDS, format_delta, write_reports
from glrl.matlab_compat import im2double, imresize, modcrop, rgb2ycbcr, shave
from glrl.published import published

SCALES = (2, 3, 4)


@pytest.fixture(scope="module")
def bicubic_table(data_root):
    summaries, per_image = evaluate("bicubic", create_method("bicubic"), ["Set5", "Set14", "BSD100"], SCALES,
                                    data_root, progress=False)
    return {(s.dataset, s.scale): s for s in summaries}, per_image


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["Set5", "BSD100"])
def test_bicubic_equals_the_published_psnr_and_ssim_digits_on_set5_and_bsd100(bicubic_table, dataset):
    table, _ = bicubic_table
    for scale in SCALES:
        cell = table[(dataset, scale)]
        assert round(cell.psnr, 2) == cell.published_psnr, (dataset, scale, cell.psnr)
        assert round(cell.ssim, 4) == cell.published_ssim, (dataset, scale, cell.ssim)


@pytest.mark.slow
@pytest.mark.parametrize("scale", [3, 4])
def test_bsd100_ssim_needs_the_studio_range_clip_of_the_method_input(bicubic_table, data_root, scale):
    """Without step 3's clip to [16, 235] BSD100 misses the 4th SSIM decimal (0.73844, 0.66738)."""
    from glrl.imageio import read_image
    from glrl.metrics import ssim

    cell = bicubic_table[0][("BSD100", scale)]
    assert round(cell.ssim, 4) == cell.published_ssim
    unclipped = []
    for path in sorted((data_root / "test" / "BSD100").glob("*.png")):
        image = prepare(read_image(path), scale)
        low = imresize(im2double(image.y_true), 1 / scale)
        y_sr = to_uint8(imresize(low, float(scale)))
        unclipped.append(ssim(shave(image.y_true, scale), shave(y_sr, scale)))
    assert round(float(np.mean(unclipped)), 4) < cell.published_ssim


@pytest.mark.slow
def test_bicubic_is_within_a_hundredth_of_a_db_and_a_thousandth_of_ssim_on_set14(bicubic_table):
    table, _ = bicubic_table
    for scale in SCALES:
        cell = table[("Set14", scale)]
        assert abs(cell.psnr - cell.published_psnr) <= 0.01, (scale, cell.psnr)
        assert abs(cell.ssim - cell.published_ssim) <= 0.001, (scale, cell.ssim)


@pytest.mark.slow
def test_per_image_results_average_to_the_table(bicubic_table):
    table, per_image = bicubic_table
    assert len(per_image) == (5 + 14 + 100) * len(SCALES)
    bsd_x3 = [r.psnr for r in per_image if r.dataset == "BSD100" and r.scale == 3]
    assert np.mean(bsd_x3) == pytest.approx(table[("BSD100", 3)].psnr, abs=1e-12)


def test_protocol_input_is_bicubic_down_then_up_of_the_uint8_y_clipped_to_the_y_range(data_root):
    from glrl.imageio import read_image

    hr = read_image(data_root / "test" / "Set5" / "bird.png")
    image = prepare(hr, 3)
    y = rgb2ycbcr(modcrop(hr, 3))[..., 0]
    assert image.y_true.dtype == np.uint8 and np.array_equal(image.y_true, y)
    bicubic = imresize(imresize(im2double(y), 1 / 3), 3)
    assert Y_RANGE == (16 / 255, 235 / 255)
    assert bicubic.max() > Y_RANGE[1]  # bicubic overshoots past what Y can take ...
    np.testing.assert_array_equal(image.y_up, np.clip(bicubic, *Y_RANGE))  # ... and step 3 clips it


def test_grey_images_are_clipped_to_the_y_range_too():
    grey = np.zeros((40, 40), np.uint8)
    grey[:, 20:] = 255
    y_up = prepare(grey, 2).y_up
    assert y_up.min() == 16 / 255 and y_up.max() == 235 / 255


def test_grey_images_are_used_as_they_are():
    grey = np.random.default_rng(0).integers(0, 256, (40, 41)).astype(np.uint8)
    assert np.array_equal(prepare(grey, 2).y_true, grey[:40, :40])


def test_images_smaller_than_the_scale_or_the_ssim_window_are_refused():
    with pytest.raises(DataError, match="smaller than the scale factor 4"):
        prepare(np.zeros((3, 50, 3), np.uint8), 4)
    with pytest.raises(DataError, match="too small to evaluate"):
        prepare(np.zeros((15, 50), np.uint8), 3)
    with pytest.raises(DataError, match="integer of at least 2"):
        prepare(np.zeros((50, 50), np.uint8), 1)


def test_methods_that_return_a_wrong_shape_or_nan_are_refused():
    image = prepare(np.random.default_rng(1).integers(0, 256, (30, 30)).astype(np.uint8), 2)
    with pytest.raises(ModelError, match="returned shape"):
        run_method(lambda y, s: y[:-1], image, "cropper")
    with pytest.raises(ModelError, match="NaN"):
        run_method(lambda y, s: y * np.nan, image, "broken")
    for bad in (np.nan, np.inf, -np.inf):  # one pixel is enough
        with pytest.raises(ModelError, match="NaN or infinite"):
            run_method(lambda y, s, bad=bad: np.where(np.arange(y.size).reshape(y.shape) == 7, bad, y), image)
    assert run_method(lambda y, s: y * 0 + 2.0, image).max() == 255  # clipped, not wrapped


def test_the_sr_output_rounds_halves_up_as_matlabs_uint8_does():
    halves = np.array([1, 3, 5, 509]) / 510  # 0.5, 1.5, 2.5 and 254.5 once multiplied by 255
    assert to_uint8(halves).tolist() == [1, 2, 3, 255]


def test_registered_methods_are_evaluated_and_compared_with_their_published_name(data_root):
    register_method("test-sharpen", lambda **options: lambda y, s: y + 0.5 * (y - np.roll(y, 1, axis=0)))
    assert "test-sharpen" in available_methods() and "bicubic" in available_methods()
    summaries, _ = evaluate("test-sharpen", create_method("test-sharpen"), ["Set5"], [3], data_root, progress=False)
    bicubic, _ = evaluate("bicubic", create_method("bicubic"), ["Set5"], [3], data_root, progress=False)
    assert summaries[0].psnr != bicubic[0].psnr
    assert summaries[0].published_psnr is None  # no published figure for an unknown method
    assert bicubic[0].published_psnr == published("Set5", 3, "Bicubic").psnr == 30.39
    with pytest.raises(ModelError, match="unknown method"):
        create_method("no-such-method")


def test_reports_share_one_json_format(data_root, tmp_path):
    summaries, per_image = evaluate("bicubic", create_method("bicubic"), ["Set5"], [4], data_root, progress=False)
    written = write_reports(tmp_path, "bicubic", summaries, per_image)
    assert sorted(p.name for p in written) == sorted(
        ["bicubic.md", "bicubic.csv", "bicubic.json", "bicubic_per_image.csv", "bicubic_per_image.json"]
    )
    records = json.loads((tmp_path / "bicubic.json").read_text())
    assert [sorted(r) for r in records] == [sorted(SUMMARY_FIELDS)]
    assert records[0]["published_psnr"] == 28.42 and records[0]["published_ssim"] == 0.8104
    assert "| bicubic | Set5 | ×4 | 28.42 | 0.8104 | 28.42 | 0.8104 |" in (tmp_path / "bicubic.md").read_text()
    assert len(json.loads((tmp_path / "bicubic_per_image.json").read_text())) == 5
    row = (tmp_path / "bicubic.csv").read_text().splitlines()[1].split(",")
    ours, paper = records[0]["psnr"], records[0]["published_psnr"]
    assert row[-2] == f"{round(round(ours, 4) - paper, 4):+.4f}" and len(row[-1].split(".")[1]) == 6


def test_differences_are_those_of_the_printed_figures():
    assert (format_delta(30.3947, 30.39, 2), format_delta(30.3951, 30.39, 2)) == ("0.00", "+0.01")
    assert (format_delta(0.91234, None, 4), format_delta(None, 0.9, 4)) == ("", "")
    assert format_delta(36.2612, 36.34, 4) == "-0.0788"


def test_glrl_eval_command_prints_and_writes_the_table(data_root, tmp_path, capsys):
    code = main(["eval", "--method", "bicubic", "--datasets", "Set5", "--scales", "2", "--quiet",
                 "--out", str(tmp_path), "--data-root", str(data_root)])
    assert code == 0
    assert "| bicubic | Set5 | ×2 | 33.66 | 0.9299 | 33.66 | 0.9299 |" in capsys.readouterr().out
    assert (tmp_path / "bicubic.csv").read_text().splitlines()[0].startswith(",".join(SUMMARY_FIELDS))


def test_glrl_eval_refuses_a_data_root_without_the_datasets(tmp_path, capsys):
    assert main(["eval", "--method", "bicubic", "--data-root", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "Set5: 5 missing" in capsys.readouterr().err


def _bicubic_x3(datasets: str, data_root, tmp_path) -> int:
    """``glrl eval --method bicubic`` at x3 on ``datasets``; its exit status."""
    return main(["eval", "--method", "bicubic", "--datasets", datasets, "--scales", "3", "--quiet",
                 "--out", str(tmp_path / "out"), "--data-root", str(data_root)])


def test_a_folder_of_images_is_evaluated_by_the_same_protocol_under_its_own_name(data_root, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("baboon", "zebra"):
        shutil.copy(data_root / "test" / "Set14" / f"{name}.png", mine)
    _, folder_images = evaluate("bicubic", create_method("bicubic"), [str(mine)], [3], data_root, progress=False)
    _, set14_images = evaluate("bicubic", create_method("bicubic"), ["Set14"], [3], data_root, progress=False)
    set14 = {r.image: (r.psnr, r.ssim) for r in set14_images}
    assert [(r.dataset, r.image) for r in folder_images] == [("mine", "baboon"), ("mine", "zebra")]
    assert all((r.psnr, r.ssim) == set14[r.image] for r in folder_images)


def test_a_folder_and_a_standard_set_go_into_one_table_the_folder_without_figures(data_root, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    shutil.copy(data_root / "test" / "Set5" / "bird.png", mine)
    assert _bicubic_x3(f"Set5,{mine}", data_root, tmp_path) == 0
    out = capsys.readouterr().out
    assert "| bicubic | Set5 | ×3 | 30.39 | 0.8682 | 30.39 | 0.8682 |" in out
    assert re.search(r"^\| bicubic \| mine \| ×3 \| \d+\.\d\d \| 0\.\d{4} \| – \| – \|", out, re.M), out


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "nowhere", "unknown dataset '{path}', and no folder of that name"),
    (lambda tmp: tmp / "Set14", "the folder {path} has the name of the standard Set14"),
    (lambda tmp: tmp / "empty", "no images in {path}"),
])
def test_a_folder_that_is_missing_empty_or_named_as_a_standard_set_is_refused(data_root, tmp_path, capsys, make,
                                                                              message):
    path = make(tmp_path)
    if path.name != "nowhere":
        path.mkdir()
    if path.name == "Set14":
        shutil.copy(data_root / "test" / "Set14" / "zebra.png", path)
    assert _bicubic_x3(str(path), data_root, tmp_path) == 2
    assert message.format(path=path) in capsys.readouterr().err


def test_the_matlab_reference_outputs_are_no_set_to_evaluate_on(data_root, tmp_path, capsys):
    assert _bicubic_x3("matlab_lr", data_root, tmp_path) == 2
    err = capsys.readouterr().err
    assert "matlab_lr holds reference outputs" in err and "evaluate on Set5, Set14, BSD100, T91, BSD200" in err


def test_one_name_for_two_sets_is_refused(data_root, tmp_path, capsys):
    for parent in ("a", "b"):
        (tmp_path / parent / "mine").mkdir(parents=True)
        shutil.copy(data_root / "test" / "Set5" / "bird.png", tmp_path / parent / "mine")
    assert _bicubic_x3(f"{tmp_path / 'a/mine'},{tmp_path / 'b/mine'}", data_root, tmp_path) == 2
    assert "two sets to evaluate are called mine" in capsys.readouterr().err

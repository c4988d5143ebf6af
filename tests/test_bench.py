"""The benchmark harness's own arithmetic: timing budgets, FLOP counts, ratios and goals in the tables.
(The speeds themselves are measured by ``make bench``, never asserted in tests.)"""
from __future__ import annotations

import importlib
import sys
import time

import pytest
from glrl import settings


def _bench_module(name: str):
    """A module of the checkout's ``bench/`` folder (a script folder, not a package)."""
    folder = str(settings.REPO_ROOT / "bench")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


timing = _bench_module("timing")
gpu = _bench_module("gpu")
report = _bench_module("report")


def test_measure_times_the_asked_repeats_or_at_least_three_within_the_budget():
    quick = timing.measure(lambda: None, repeats=5)
    assert len(quick["runs_s"]) == 5
    slow = timing.measure(lambda: time.sleep(0.02), repeats=9, budget_s=0.03)
    assert len(slow["runs_s"]) == 3 and slow["median_s"] >= 0.02


def test_flops_per_pixel_of_srcnn_are_counted_from_its_prototxt():
    from glrl.caffe.io import read_net

    net = read_net(settings.PROTOTXT_DIR / "srcnn" / "deploy.prototxt")
    # 9×9 1→64, 1×1 64→32, 5×5 32→1, two FLOPs per multiply-add
    assert gpu.conv_flops_per_pixel(net) == 2 * (81 * 64 + 64 * 32 + 25 * 32)


def _record(tool, case, median, cpu, setting="s"):
    return {"net": "glrl", "tool": tool, "case": case, "setting": setting, "median_s": median,
            "runs_s": [median] * 3, "median_cpu_s": cpu}


def test_the_summary_takes_each_tools_best_and_states_the_goals():
    records = [
        _record("ours (PyTorch)", "256x256", 2.0, 1.0, "slow setting"),
        _record("ours (PyTorch)", "256x256", 1.0, 1.0, "fast setting"),
        _record("cv2.dnn", "256x256", 1.2, 1.2),
        _record("Caffe (Debian, OpenBLAS)", "256x256", 5.0, 4.0),
        {"net": "glrl", "tool": "Caffe (Debian, OpenBLAS)", "case": "512x512", "setting": "",
         "skipped": "needs 17 GiB"},
    ]
    table = "\n".join(report.cpu_inference_table(records))
    row = next(line for line in table.splitlines() if line.startswith("| glrl | 256x256"))
    assert "fast setting" in row
    assert "1.20× (below ≥1.5×)" in row and "5.00× (meets ≥4×)" in row and "4.00× (meets ≥4×)" in row
    assert "| glrl | 512x512 | Caffe not measured: needs 17 GiB" in table


@pytest.mark.parametrize("text", ["a\nb", "x | y"])
def test_table_cells_never_break_the_markdown(text):
    assert "\n" not in report._clean(text) and "|" not in report._clean(text)


def test_the_training_summary_compares_fp32_and_bf16_with_caffe_apart():
    records = [
        {**_record("ours (PyTorch)", "batch 32", 0.8, 1.6, "channels_last, fp32"), "precision": "fp32",
         "iters_per_s": 1 / 0.8},
        {**_record("ours (PyTorch)", "batch 32", 0.45, 0.9, "channels_last, bf16"), "precision": "bf16",
         "iters_per_s": 1 / 0.45},
        {**_record("Caffe (Debian, OpenBLAS)", "batch 32", 2.7, 5.4, "2 threads"), "iters_per_s": 1 / 2.7},
    ]
    rows = [line for line in report.training_table(records) if line.startswith("| glrl")]
    assert len(rows) == 2
    fp32, bf16 = rows
    assert "| fp32 |" in fp32 and "channels_last, fp32" in fp32 and "3.38× (below ≥5×)" in fp32
    assert "| bf16 |" in bf16 and "6.00× (meets ≥5×)" in bf16

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


def test_a_second_run_of_the_day_keeps_the_first_runs_results(tmp_path):
    run = _bench_module("run")
    assert run._unused_stem(tmp_path, "vm-20261201") == "vm-20261201"
    (tmp_path / "vm-20261201.json").write_text("{}")
    (tmp_path / "vm-20261201-2.json").write_text("{}")
    assert run._unused_stem(tmp_path, "vm-20261201") == "vm-20261201-3"


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
    assert "| glrl | 512x512 | | Caffe not measured: needs 17 GiB" in table


def test_a_bf16_setting_is_ranked_apart_and_never_becomes_the_fp32_figure():
    records = [
        _record("ours (PyTorch)", "256x256", 1.0, 1.0, "fp32 setting"),
        {**_record("ours (PyTorch)", "256x256", 0.5, 0.5, "bf16 setting"), "precision": "bf16"},
        _record("cv2.dnn", "256x256", 1.2, 1.2),
    ]
    rows = [line for line in report.cpu_inference_table(records) if line.startswith("| glrl | 256x256")]
    assert len(rows) == 2
    assert "| fp32 | fp32 setting |" in rows[0] and "1.20× (below ≥1.5×)" in rows[0]
    assert "| bf16 | bf16 setting |" in rows[1] and "2.40× (meets ≥1.5×)" in rows[1]


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


@pytest.mark.slow
def test_the_gpu_section_runs_end_to_end_on_the_cpu(tmp_path, data_root):
    """CI has no GPU: the section's code runs here on the CPU at toy sizes, so a GPU session spends its
    minutes measuring, not debugging (every record measured, none failed)."""
    pytest.importorskip("torch")
    from PIL import Image

    bench_nets = _bench_module("bench_nets")
    nets = bench_nets.prepare(tmp_path, ["glrl"])
    # a 96x96 crop of one Set5 image: bf16 is emulated (8-15x slower than fp32) on CPUs without AVX-512 BF16
    small_set5 = tmp_path / "data" / "test" / "Set5"
    small_set5.mkdir(parents=True)
    Image.open(data_root / "test" / "Set5" / "butterfly.png").crop((96, 96, 192, 192)).save(small_set5 / "b.png")
    records = gpu.run_section(tmp_path, nets, tmp_path / "data", repeats=1, device="cpu", sizes=((24, 32),),
                              matmul_size=64, training_batches=(4,))
    assert not [r for r in records if "error" in r]
    assert {r["setting"] for r in records if r["case"] == "matrix peak"} == {"fp32", "tf32", "bf16"}
    inference = [r for r in records if r.get("case") == "32x24"]
    assert {r["setting"] for r in inference} == {"fp32", gpu.CPU_WINOGRAD, "bf16 autocast", "bf16"}
    assert all(r["median_s"] > 0 and r["tflop_per_s"] > 0 for r in inference)
    trained = [r for r in records if r["case"].startswith("train")]
    assert [r["setting"] for r in trained] == ["fp32", "bf16"] and all(r["iters_per_s"] > 0 for r in trained)
    psnr = {r["setting"]: r for r in records if r["case"] == "Set5 x3 PSNR"}
    assert psnr["fp32"]["psnr_cost_db"] == 0.0 and psnr["fp32"]["psnr_db"] > 20
    assert abs(psnr[gpu.CPU_WINOGRAD]["psnr_cost_db"]) < 0.001
    assert abs(psnr["bf16 autocast"]["psnr_cost_db"]) < 0.05 and abs(psnr["bf16"]["psnr_cost_db"]) < 0.2
    document = report.markdown({"machine": {"host": "cpu-check", "time_utc": "now"}, "sections": {"gpu": records}})
    assert "| bf16 within 0.01 dB of fp32 (Set5 ×3 PSNR) |" in document


def test_the_gpu_section_records_what_its_time_budget_left_unmeasured_as_skipped(tmp_path):
    """A lent GPU's minutes are few: with the budget spent, every measurement after the matrix peaks is
    recorded as skipped (not lost, not failed), and the report says so."""
    pytest.importorskip("torch")
    nets = _bench_module("bench_nets").prepare(tmp_path, ["glrl"])
    records = gpu.run_section(tmp_path, nets, None, repeats=1, device="cpu", sizes=((24, 32),), matmul_size=64,
                              training_batches=(4,), budget_s=0)
    measured = [r for r in records if r["case"] != "matrix peak"]
    assert len(measured) == 4 + 2 and all("time budget (0 s) was spent" in r["skipped"] for r in measured)
    document = report.markdown({"machine": {"host": "cpu-check", "time_utc": "now"}, "sections": {"gpu": records}})
    assert "not measured: the benchmark's time budget (0 s) was spent" in document


def test_the_gpu_section_measures_only_the_modes_asked_for_and_refuses_unknown_ones(tmp_path, capsys):
    """A second GPU session measures what the first left open (``make bench`` ``--gpu-modes``): only those
    modes; a misspelt one stops the run before anything is measured or written."""
    pytest.importorskip("torch")
    nets = _bench_module("bench_nets").prepare(tmp_path, ["glrl"])
    records = gpu.run_section(tmp_path, nets, None, repeats=1, device="cpu", sizes=((24, 32),), matmul_size=64,
                              training_batches=(4,), only=["bf16"])
    measured = [r for r in records if r["case"] != "matrix peak"]
    assert [(r["case"], r["setting"]) for r in measured] == [("32x24", "bf16"), ("train batch 4 of 31x31", "bf16")]
    with pytest.raises(ValueError, match=r"unknown GPU mode\(s\) \['bf17'\]"):
        gpu.run_section(tmp_path, nets, None, repeats=1, device="cpu", only=["bf17"])
    out = tmp_path / "results"
    assert _bench_module("run").main(["--sections", "gpu", "--gpu-modes", "bf16, fp16", "--out", str(out)]) == 2
    assert "--gpu-modes: unknown GPU mode(s) ['fp16']" in capsys.readouterr().err
    assert not out.exists()


def test_the_graphed_training_mode_times_glrl_trains_step_and_records_where_it_cannot_run(tmp_path):
    """The whole-step mode times ``glrl train --cuda-graph``'s own step (its arithmetic is checked against
    CaffeSolver in tests/test_training.py) with the bench's Adam, the recipe GPU runs train with; where
    nothing can be captured the record says why and the section goes on."""
    pytest.importorskip("torch")
    from glrl.caffe.io import read_solver
    from glrl.nets.solver import OPTIMIZERS
    from glrl.train.settings import SolverSettings

    training = _bench_module("training")
    training.write_training_files(tmp_path, "glrl", batch=2)
    settings = gpu.adam_settings(SolverSettings.from_proto(read_solver(tmp_path / "solver.prototxt")))
    adam = OPTIMIZERS["adam"]
    assert (settings.type, settings.base_lr, settings.clip_gradients, settings.weight_decay) == (
        "Adam", adam.base_lr, -1.0, 0.0)
    record, = gpu.training(tmp_path / "bench", "glrl", "cpu", 1, {}, modes=("bf16 + CUDA graph (Adam)",),
                           batches=(2,))
    assert record["error"] == "RuntimeError: a CUDA graph needs a CUDA device" and "median_s" not in record


def test_the_gpu_goals_read_the_1080p_frame_time_the_psnr_cost_and_the_training_fraction():
    records = [
        {"net": "glrl", "tool": "ours (PyTorch)", "case": "1920x1080", "setting": "bf16", "median_s": 0.012,
         "runs_s": [0.012] * 3},
        {"net": "glrl", "tool": "ours (PyTorch)", "case": "1920x1080", "setting": "bf16 + CUDA graphs (torch.compile)",
         "median_s": 0.008, "runs_s": [0.008] * 3},
        {"net": "glrl", "tool": "ours (PyTorch)", "case": "1920x1080", "setting": "bf16 autocast", "median_s": 0.005,
         "runs_s": [0.005] * 3},
        {"net": "glrl", "tool": "ours (PyTorch)", "case": "Set5 x3 PSNR", "setting": "bf16", "psnr_db": 33.0,
         "psnr_cost_db": 0.004},
        {"net": "glrl", "tool": "ours (PyTorch)", "case": "train batch 32 of 31x31", "setting": "bf16",
         "median_s": 0.002, "runs_s": [0.002] * 3, "fraction_of_peak": 0.25},
    ]
    rows = report.gpu_goals(records)
    assert "8.0 ms (bf16 + CUDA graphs (torch.compile)) | meets |" in rows[2]  # autocast is not "in bf16"
    assert "+0.0040 dB | meets |" in rows[3]
    assert "25.0% (bf16, train batch 32 of 31x31) | below |" in rows[4]

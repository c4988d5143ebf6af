"""The benchmark summary: medians side by side with the ratios the project's goals are stated in, as a
Markdown document (printed and written beside the JSON with every run)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

Record = Dict[str, Any]
GOALS = {"cv2.dnn": 1.5, "caffe": 4.0, "train_caffe": 5.0}


def _ms(seconds: Optional[float]) -> str:
    return "–" if seconds is None else f"{seconds * 1e3:.1f} ms" if seconds < 10 else f"{seconds:.2f} s"


def _ratio(theirs: Optional[float], ours: Optional[float], goal: float) -> str:
    if theirs is None or ours is None:
        return "–"
    ratio = theirs / ours
    return f"{ratio:.2f}× ({'meets' if ratio >= goal else 'below'} ≥{goal:g}×)"


def _clean(text: str) -> str:
    """One table cell: no line breaks or pipes."""
    return " ".join(str(text).split()).replace("|", "/")


def _ok(records: List[Record]) -> List[Record]:
    return [r for r in records if "median_s" in r]


def _skip_reasons(records: List[Record], tool_prefix: str) -> List[Tuple[str, str]]:
    """(case, reason) of each record of that tool that was skipped or failed."""
    return [(r.get("case", ""), _clean(r.get("skipped") or r.get("error"))) for r in records
            if r.get("tool", "").startswith(tool_prefix) and ("skipped" in r or "error" in r)]


def _fastest(records: List[Record], key: str) -> Optional[float]:
    return min((r[key] for r in records if r.get(key) is not None), default=None)


def cpu_inference_table(records: List[Record]) -> List[str]:
    lines = [("Each tool's best setting (threads, layout) at that size; ratios are their median / ours. Our fp32 "
              "settings (oneDNN's direct convolutions, Caffe's arithmetic to float rounding, or our Winograd "
              "kernel, a few 1e-6 of the range off it) and bf16 settings are ranked apart, each against the "
              "others' fp32, so a reduced-precision figure never stands in for an fp32 one. The CPU-time "
              "ratios compare the least processor time (all threads) any setting of each tool used: on a "
              "shared, loaded machine they show the work each tool does when wall-clock times are disturbed."),
             "",
             ("| net | image | precision | ours, best setting | ours median | cv2.dnn | Caffe | cv2.dnn / ours "
              "| Caffe / ours | CPU time: cv2.dnn / ours | CPU time: Caffe / ours |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    nets = sorted({r["net"] for r in records}, key=lambda n: ["glrl", "vdsr", "srcnn"].index(n)
                  if n in ("glrl", "vdsr", "srcnn") else 9)
    for net in nets:
        mine = [r for r in records if r["net"] == net]
        for case in sorted({r["case"] for r in _ok(mine)}, key=lambda c: int(c.split("x")[0])):
            at = [r for r in _ok(mine) if r["case"] == case]
            cvs = [r for r in at if r["tool"] == "cv2.dnn"]
            caffes = [r for r in at if r["tool"].startswith("Caffe")]
            cv, caffe = _fastest(cvs, "median_s"), _fastest(caffes, "median_s")
            ours_all = [r for r in at if r["tool"].startswith("ours")]
            for precision in sorted({r.get("precision", "fp32") for r in ours_all}, key=lambda p: p != "fp32"):
                ours = [r for r in ours_all if r.get("precision", "fp32") == precision]
                best = min(ours, key=lambda r: r["median_s"])
                ours_s, ours_cpu = best["median_s"], _fastest(ours, "median_cpu_s")
                lines.append(f"| {net} | {case} | {precision} | {best['setting']} | {_ms(ours_s)} | {_ms(cv)} | "
                             f"{_ms(caffe)} | {_ratio(cv, ours_s, GOALS['cv2.dnn'])} | "
                             f"{_ratio(caffe, ours_s, GOALS['caffe'])} | "
                             f"{_ratio(_fastest(cvs, 'median_cpu_s'), ours_cpu, GOALS['cv2.dnn'])} | "
                             f"{_ratio(_fastest(caffes, 'median_cpu_s'), ours_cpu, GOALS['caffe'])} |")
        for prefix in ("Caffe", "caffe", "cv2"):
            for case, reason in _skip_reasons(mine, prefix):
                lines.append(f"| {net} | {case} | | {prefix} not measured: {reason} | | | | | | | |")
    return lines


def settings_table(records: List[Record]) -> List[str]:
    lines = ["| net | image | tool | setting | median | CPU time | runs | max rel diff vs ours |",
             "|---|---|---|---|---|---|---|---|"]
    for r in records:
        if "median_s" in r:
            diff = r.get("max_rel_diff_vs_ours")
            shown = "" if diff is None else f"{diff:.1e}"
            lines.append(f"| {r['net']} | {r['case']} | {r['tool']} | {r['setting']} | "
                         f"{_ms(r['median_s'])} | {_ms(r.get('median_cpu_s'))} | {len(r['runs_s'])} | "
                         f"{shown} |")
        elif "error" in r or ("skipped" in r and "setting" in r):
            what = f"failed: {_clean(r['error'])}" if "error" in r else f"not run: {_clean(r['skipped'])}"
            lines.append(f"| {r['net']} | {r.get('case', '')} | {r['tool']} | {r.get('setting', '')} | "
                         f"{what} | | | |")
    return lines


def training_table(records: List[Record]) -> List[str]:
    """One row per net and precision: our fastest setting in fp32 (direct or Winograd) and, apart, in bf16
    autocast, each against real Caffe's fastest (fp32, the only precision it has)."""
    lines = [("| net | case | precision | ours iter/s (setting) | Caffe iter/s (threads) | ours / Caffe "
              "| CPU time: Caffe / ours |"), "|---|---|---|---|---|---|---|"]
    for net in sorted({r["net"] for r in records}):
        mine = [r for r in records if r["net"] == net]
        caffes = [r for r in _ok(mine) if r["tool"].startswith("Caffe")]
        caffe = min(caffes, key=lambda r: r["median_s"], default=None)
        theirs = f"{caffe['iters_per_s']:.3f} ({caffe['setting']})" if caffe else "–"
        ours_all = [r for r in _ok(mine) if r["tool"].startswith("ours")]
        precisions = sorted({r.get("precision", "fp32") for r in ours_all}, key=lambda p: p != "fp32") or ["fp32"]
        for precision in precisions:
            ours = [r for r in ours_all if r.get("precision", "fp32") == precision]
            best = min(ours, key=lambda r: r["median_s"], default=None)
            mine_cell = f"{best['iters_per_s']:.3f} ({best['setting']})" if best else "–"
            ratio = _ratio(caffe["median_s"] if caffe else None, best["median_s"] if best else None,
                           GOALS["train_caffe"])
            cpu_ratio = _ratio(_fastest(caffes, "median_cpu_s"), _fastest(ours, "median_cpu_s"),
                               GOALS["train_caffe"])
            lines.append(f"| {net} | {mine[0]['case']} | {precision} | {mine_cell} | {theirs} | {ratio} "
                         f"| {cpu_ratio} |")
        for r in mine:
            if "skipped" in r or "error" in r:
                reason = _clean(r.get("skipped") or r.get("error"))
                lines.append(f"| {net} | | | {r['tool']} not measured: {reason} | | | |")
    return lines


GPU_GOALS = {"glrl_1080p_bf16_s": 0.010, "bf16_psnr_cost_db": 0.01, "train_bf16_fraction_of_peak": 0.40}


def gpu_goals(records: List[Record]) -> List[str]:
    """Issue #8's GPU goals, each with the measured figure: GLRL on a 1920×1080 Y image in bf16 (the faster of
    plain and CUDA-graph runs), the Set5 PSNR cost of bf16 against fp32, bf16 training vs the bf16 matmul peak."""
    ok = _ok(records)
    frame = [r for r in ok if r.get("net") == "glrl" and r.get("case") == "1920x1080"
             and r.get("setting", "").startswith("bf16") and "autocast" not in r.get("setting", "")]
    fastest = min(frame, key=lambda r: r["median_s"], default=None)
    cost = [r for r in records if r.get("net") == "glrl" and r.get("setting") == "bf16" and "psnr_cost_db" in r]
    train = [r for r in ok if r.get("case", "").startswith("train") and r.get("setting", "").startswith("bf16")
             and r.get("fraction_of_peak") is not None]
    best_train = max(train, key=lambda r: r["fraction_of_peak"], default=None)

    def verdict(met: bool) -> str:
        return "meets" if met else "below"

    lines = ["| goal | measured | verdict |", "|---|---|---|"]
    goal = GPU_GOALS["glrl_1080p_bf16_s"]
    lines.append(f"| GLRL, 1920×1080 Y, bf16: under {goal * 1e3:g} ms | "
                 + (f"{_ms(fastest['median_s'])} ({fastest['setting']}) | {verdict(fastest['median_s'] < goal)} |"
                    if fastest else "not measured | |"))
    goal = GPU_GOALS["bf16_psnr_cost_db"]
    lines.append(f"| bf16 within {goal:g} dB of fp32 (Set5 ×3 PSNR) | "
                 + (f"{cost[0]['psnr_cost_db']:+.4f} dB | {verdict(abs(cost[0]['psnr_cost_db']) <= goal)} |"
                    if cost else "not measured | |"))
    goal = GPU_GOALS["train_bf16_fraction_of_peak"]
    lines.append(f"| training at ≥ {goal:.0%} of the measured bf16 matmul peak | "
                 + (f"{best_train['fraction_of_peak']:.1%} ({best_train['setting']}, {best_train['case']}) | "
                    f"{verdict(best_train['fraction_of_peak'] >= goal)} |" if best_train else "not measured | |"))
    return lines


def simple_table(records: List[Record], value_keys: List[str]) -> List[str]:
    lines = ["| what | tool | setting | median | " + " | ".join(value_keys) + " |",
             "|---|---|---|---|" + "---|" * len(value_keys)]
    for r in records:
        if "skipped" in r:
            lines.append(f"| {r.get('case', '')} | {r['tool']} | not measured: {_clean(r['skipped'])} | |"
                         + " |" * len(value_keys))
            continue
        values = []
        for key in value_keys:
            value = r.get(key)
            if value is None:
                values.append("")
            elif key.endswith("_db"):  # PSNR figures and their differences: to the digit Table 2 shows and beyond
                values.append(f"{value:.4f}")
            else:
                values.append(f"{value:.3g}" if isinstance(value, float) else str(value))
        lines.append(f"| {r.get('net', '') + ' ' if r.get('net') else ''}{r.get('case', '')} | {r['tool']} | "
                     f"{r.get('setting', '')} | {_ms(r.get('median_s'))} | " + " | ".join(values) + " |")
    return lines


def markdown(results: Dict[str, Any]) -> str:
    machine = results["machine"]
    out = [f"# glrl benchmarks — {machine['host']}, {machine['time_utc']}", "",
           ("Medians of repeated runs after a warm-up (every run is in the JSON beside this file). Ratios "
            "are their time / our time, so >1 means we are faster."), "", "## Machine", "",
           "| | |", "|---|---|"]
    out += [f"| {key} | {value} |" for key, value in machine.items()]
    sections = results["sections"]
    if "cpu_inference" in sections:
        records = sections["cpu_inference"]
        out += ["", "## CPU inference (one Y image, same prototxt + caffemodel)", ""]
        out += cpu_inference_table(records)
        accuracy = [r for r in records if "psnr_db" in r]
        if accuracy:
            out += ["", "What bf16 and the Winograd kernel cost (GLRL, Set5 ×3, benchmark protocol; fp32 is oneDNN's "
                    "direct convolution; bf16 autocast keeps single-channel convolutions in fp32, plain bf16 runs "
                    "everything in bf16):", ""]
            out += simple_table(accuracy, ["psnr_db", "psnr_cost_db"])
        out += ["", "### Every tool and setting", ""] + settings_table(records)
    if "training" in sections:
        out += ["", "## CPU training (SGD iterations, batch 32 of 31×31)", ""]
        out += training_table(sections["training"])
        out += ["", "### Every setting", ""] + settings_table(sections["training"])
    if "data_build" in sections:
        out += ["", "## Data build", ""]
        out += simple_table(sections["data_build"], ["images_per_s", "patches_per_s"])
    if "bicubic" in sections:
        out += ["", "## Bicubic (MATLAB-compatible imresize)", ""]
        out += simple_table(sections["bicubic"], ["in_mpixel_per_s", "out_mpixel_per_s"])
    if "gpu" in sections:
        gpu_keys = ["iters_per_s", "tflop_per_s", "fraction_of_peak", "psnr_db", "psnr_cost_db"]
        out += ["", "## GPU", ""] + gpu_goals(sections["gpu"]) + [""] + simple_table(sections["gpu"], gpu_keys)
    for name, reason in results.get("skipped_sections", {}).items():
        out += ["", f"## {name}", "", f"Not measured: {_clean(reason)}"]
    return "\n".join(out) + "\n"

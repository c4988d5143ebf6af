#!/usr/bin/env python3
"""``make bench``: every speed benchmark of the project in one run, side by side, into ``bench/results/``.

Sections (``--sections`` picks some):

* ``cpu_inference``: one 256² and one 512² Y image through the GLRL, VDSR-20 and SRCNN deploy nets with the
  same caffemodel: our PyTorch backend under each of its settings (fp32, and bf16 apart) vs real Caffe (the
  oracle root) vs cv2.dnn; and GLRL's Set5 ×3 PSNR in fp32 and bf16 (what bf16 costs);
* ``training``: SGD iterations/s at batch 32 of 31×31 patches, ours vs real Caffe, on the CPU;
* ``data_build``: ``glrl data build`` on a few T91 images; ``bicubic``: MATLAB-compatible imresize Mpixel/s;
* ``gpu``: only where CUDA exists (inference 256²/512²/1080p in fp32/TF32/bf16, training, FLOP/s vs the
  measured matmul peak, Set5 PSNR cost of reduced precision).

A section whose tool is missing (no Caffe root, no GPU, no datasets) is reported as not measured, with
why; the others still run. Results: ``bench/results/<host>-<date>[-N].json`` (every run; N numbers a day's
later runs on that host) and ``.md`` (tables).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List

BENCH_DIR = Path(__file__).resolve().parent
SECTIONS = ("cpu_inference", "training", "data_build", "bicubic", "gpu")


def _parse(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated, of {', '.join(SECTIONS)}")
    parser.add_argument("--nets", default="glrl,vdsr,srcnn", help="deploy nets to time (default all three)")
    parser.add_argument("--train-nets", default="glrl", help="nets whose training speed is measured")
    parser.add_argument("--sizes", default="256,512", help="CPU inference image sides")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed runs per measurement (median reported; fewer, at least 3, where they "
                             "would take over 25 s)")
    parser.add_argument("--tools", default="ours,cv2.dnn,caffe", help="CPU inference tools to run")
    parser.add_argument("--out", default=str(BENCH_DIR / "results"), help="folder for the JSON and Markdown")
    parser.add_argument("--name", default=None, help="result file stem (default <host>-<UTC date>)")
    parser.add_argument("--data-root", default=None, help="datasets folder (default $GLRL_DATA)")
    parser.add_argument("--gpu-budget", type=float, default=None,
                        help="seconds the gpu section may spend (a lent GPU's minutes); what is left is "
                             "recorded as skipped (default: no limit)")
    parser.add_argument("--gpu-modes", default=None,
                        help="measure only these inference/training modes in the gpu section, separated by "
                             "commas (e.g. 'bf16 + CUDA graphs (torch.compile),tf32 + CUDA graph (Adam)'); an "
                             "unknown name stops the run before anything is measured")
    return parser.parse_args(argv)


def main(argv: List[str]) -> int:
    sys.path.insert(0, str(BENCH_DIR))  # the section modules beside this file
    from timing import machine_description

    args = _parse(argv)
    from glrl import settings
    from glrl.allocator import retain_freed_memory

    retain_freed_memory()  # as the glrl command does, so that our figures are the ones users get

    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        print(f"error: unknown section(s) {unknown}; choose from {SECTIONS}", file=sys.stderr)
        return 2
    gpu_modes = None if args.gpu_modes is None else [m.strip() for m in args.gpu_modes.split(",") if m.strip()]
    if gpu_modes is not None:
        import gpu as gpu_section

        try:
            gpu_section.check_modes(gpu_modes)
        except ValueError as exc:
            print(f"error: --gpu-modes: {exc}", file=sys.stderr)
            return 2
    net_names = [n.strip() for n in args.nets.split(",") if n.strip()]
    sizes = [int(s) for s in args.sizes.split(",")]
    data_root = settings.data_root(args.data_root)
    beside = settings.REPO_ROOT.parent / "shared" / "datasets"  # where a development checkout finds them
    if not (data_root / "train").is_dir() and not args.data_root and (beside / "train").is_dir():
        data_root = beside
    machine = machine_description()
    results: Dict[str, Any] = {"machine": machine, "arguments": vars(args), "sections": {},
                               "skipped_sections": {}}
    with tempfile.TemporaryDirectory(prefix="glrl-bench-") as tmp:
        work = Path(tmp)
        nets_cache: List[Any] = []

        def nets() -> List[Any]:
            if not nets_cache:
                import bench_nets

                nets_cache.extend(bench_nets.prepare(work, net_names))
                results["nets"] = {n.name: {"deploy": str(n.deploy), "weights": n.weights_source}
                                   for n in nets_cache}
            return nets_cache

        def cpu_inference() -> List[Dict[str, Any]]:
            import cpu_inference as section

            tools = [t.strip() for t in args.tools.split(",")]
            records = section.run_section(nets(), sizes, args.repeats, tools)
            glrl_net = next((n for n in nets() if n.name == "glrl"), None)
            if glrl_net is not None and (data_root / "test" / "Set5").is_dir():
                import gpu  # its precision modes run on the CPU too

                records += gpu.set5_psnr_cost(glrl_net, data_root, "cpu")  # what bf16 costs in accuracy
            return records

        def training() -> List[Dict[str, Any]]:
            import training as section

            train_nets = [n.strip() for n in args.train_nets.split(",") if n.strip()]
            return section.run_section(work, train_nets, args.repeats)

        def data_build() -> List[Dict[str, Any]]:
            import data_speed

            if not (data_root / "train" / "T91").is_dir():
                raise RuntimeError(f"no T91 images under {data_root} (set GLRL_DATA or --data-root)")
            return data_speed.data_build(work, data_root)

        def bicubic() -> List[Dict[str, Any]]:
            import data_speed

            return data_speed.bicubic(args.repeats)

        def gpu() -> List[Dict[str, Any]]:
            import torch

            if not torch.cuda.is_available():
                raise RuntimeError("no CUDA device on this machine")
            import gpu as section

            root = data_root if (data_root / "test" / "Set5").is_dir() else None
            return section.run_section(work, nets(), root, args.repeats, budget_s=args.gpu_budget, only=gpu_modes)

        runners: Dict[str, Callable[[], List[Dict[str, Any]]]] = {
            "cpu_inference": cpu_inference, "training": training, "data_build": data_build,
            "bicubic": bicubic, "gpu": gpu}
        out = Path(args.out)
        stem = args.name or _unused_stem(out, f"{machine['host']}-{time.strftime('%Y%m%d', time.gmtime())}")
        for name in sections:
            print(f"[bench] {name} ...", flush=True)
            started = time.perf_counter()
            try:
                results["sections"][name] = runners[name]()
            except Exception as exc:
                results["skipped_sections"][name] = f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, RuntimeError):
                    traceback.print_exc()
            print(f"[bench] {name}: {time.perf_counter() - started:.0f} s", flush=True)
            _write(results, out, stem)  # after every section, so an interrupted run keeps what it measured

    print(_write(results, out, stem))
    print(f"[bench] written {out / stem}.json and .md")
    return 0


def _unused_stem(out: Path, stem: str) -> str:
    """``stem``, or ``stem-2``, ``stem-3``... where an earlier run of the day already wrote its results."""
    candidate, number = stem, 1
    while (out / f"{candidate}.json").exists():
        number += 1
        candidate = f"{stem}-{number}"
    return candidate


def _write(results: Dict[str, Any], out: Path, stem: str) -> str:
    import report
    from glrl.fsutil import atomic_write_text

    results["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    text = report.markdown(results)
    atomic_write_text(out / f"{stem}.json", json.dumps(results, indent=1, default=str) + "\n")
    atomic_write_text(out / f"{stem}.md", text)
    return text


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

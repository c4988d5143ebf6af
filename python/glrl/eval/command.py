"""What ``glrl eval`` does with released models, external Caffe models and ``--all``.

* ``--method glrl|glrl-2lrb|srcnn``: per scale, the released model of that net
  (``model_zoo.model_for_scale``); a scale without one is skipped with a note in the table;
* ``--model NAME``: that released model at the scales it was trained for;
* ``--prototxt P --weights W [--residual-outside] [--transposed]``: any Caffe SR net;
* ``--all`` (``make eval``): Bicubic, then SRCNN, GLRL-2LRB, GLRL and every other released model, in one
  table with every cell of the paper's Table 2 and Table 1, plus the two figures;
* ``--publish DIR``: also the committed copies (``table.md``, ``results.json``, ``psnr.png``,
  ``figure6.png``) and README.md's block between ``<!-- results:begin -->`` and ``<!-- results:end -->``.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from glrl import settings
from glrl.errors import GlrlError
from glrl.eval import figures
from glrl.eval import table as table_mod
from glrl.eval.methods import create_method
from glrl.eval.models import (
    NET_METHOD_NAMES,
    MethodPlan,
    NetMethod,
    NetSpec,
    model_method,
    plan_for_model,
    plan_for_net,
    plans_for_all,
)
from glrl.eval.protocol import SRMethod
from glrl.eval.report import write_reports
from glrl.eval.suite import Entry, SuiteResult, run_suite
from glrl.fsutil import atomic_write_bytes, atomic_write_text
from glrl.machine import cpu_model

PUBLISHED_FILES = ("table.md", "results.json", "psnr.png", "figure6.png")
DISPLAY_NAMES = {"bicubic": "Bicubic"}


def _once(factory: Callable[[], SRMethod]) -> Callable[[], SRMethod]:
    """A factory that builds its method on the first call and returns that one afterwards."""
    made: List[SRMethod] = []

    def build() -> SRMethod:
        if not made:
            made.append(factory())
        return made[0]

    return build


def entry_for_plan(plan: MethodPlan, backend: str, device: str,
                   cache: Dict[str, Callable[[], SRMethod]]) -> Entry:
    """An entry whose scales share one loaded net per released model."""
    factories = {}
    for scale, model in plan.models.items():
        if model.name not in cache:
            cache[model.name] = _once(lambda model=model: model_method(model, backend=backend, device=device))
        factories[scale] = cache[model.name]
    models = {s: m.name for s, m in plan.models.items()}
    return Entry(plan.name, factories, models, dict(plan.missing), runs_nets=True)


def _registered_entry(name: str, scales: Sequence[int]) -> Entry:
    build = _once(lambda: create_method(name))
    return Entry(DISPLAY_NAMES.get(name.lower(), name), {scale: build for scale in scales})


def build_entries(args: argparse.Namespace, scales: List[int], models_dir: Optional[Path]) -> List[Entry]:
    """The methods the arguments ask for, in table order."""
    from glrl.cli import named_twice, split_list

    cache: Dict[str, Callable[[], SRMethod]] = {}
    backend, device = args.backend, args.device
    if args.all:
        plans = plans_for_all(scales, models_dir)
        nets = [entry_for_plan(plan, backend, device, cache) for plan in plans]
        return [_registered_entry("bicubic", scales)] + nets
    entries: List[Entry] = []
    for name in split_list(args.method or ""):
        if name.lower() in NET_METHOD_NAMES:
            plan = plan_for_net(name.lower(), scales, models_dir)
            entries.append(entry_for_plan(plan, backend, device, cache))
        else:
            entries.append(_registered_entry(name, scales))
    for name in split_list(args.model or ""):
        entries.append(entry_for_plan(plan_for_model(name, scales, models_dir), backend, device, cache))
    if args.prototxt or args.weights:
        if not (args.prototxt and args.weights):
            raise GlrlError("--prototxt and --weights go together",
                            hint="give the deploy prototxt and its .caffemodel")
        spec = NetSpec(Path(args.prototxt), Path(args.weights), args.residual_outside, args.transposed)
        build = _once(lambda: NetMethod(spec, backend=backend, device=device))
        name = args.name or Path(args.weights).stem
        entries.append(Entry(name, {scale: build for scale in scales}, runs_nets=True))
    elif args.residual_outside or args.transposed or args.name:
        raise GlrlError("--name, --residual-outside and --transposed apply to --prototxt/--weights models only",
                        hint="drop them, or give the model they describe with --prototxt P --weights W")
    if not entries:
        raise GlrlError("nothing to evaluate",
                        hint="give --all, --method NAME, --model NAME or --prototxt P --weights W")
    twice = named_twice([entry.name for entry in entries])  # the table matches methods by name, in any case
    if twice:
        raise GlrlError(f"two methods would be named {', '.join(twice)} (rows and files are by name)",
                        hint="name the --prototxt/--weights model with --name, and list each method once")
    return entries


def _measured(result: SuiteResult) -> List[table_mod.Measured]:
    return [table_mod.Measured(s, result.models.get((s.method, s.dataset, s.scale)))
            for s in result.summaries]


def write_outputs(out_dir: Path, entries: Sequence[Entry], result: SuiteResult,
                  cells: Sequence[table_mod.Cell], root: Path, with_figures: bool, where: str) -> List[Path]:
    """Per-method reports, the combined table (md/csv/json) and, for ``--all``, the figures."""
    written: List[Path] = []
    for entry in entries:
        summaries = [s for s in result.summaries if s.method == entry.name]
        if summaries:
            per_image = [r for r in result.per_image if r.method == entry.name]
            written.extend(write_reports(out_dir, entry.name, summaries, per_image))
    records = [cell.record() for cell in cells]
    atomic_write_text(out_dir / "results.md", results_markdown(records, provenance(result, where)))
    atomic_write_text(out_dir / "results.csv", table_mod.records_csv(records))
    atomic_write_text(out_dir / "results.json", table_mod.records_json(cells))
    written.extend(out_dir / name for name in ("results.md", "results.csv", "results.json"))
    if with_figures:
        written.append(figures.psnr_bar_chart(records, out_dir / "psnr.png"))
        psnr = {(r.method, r.image): r.psnr for r in result.per_image
                if r.dataset == "Set5" and r.scale == figures.FIGURE6_SCALE}
        if psnr:  # Set5 x3 ran now (SR images an earlier run left in out_dir are not this run's figure)
            figure = figures.figure6(out_dir, root / "test" / "Set5", out_dir / "figure6.png", psnr=psnr)
            if figure is not None:
                written.append(figure)
    return written


def provenance(result: SuiteResult, where: str) -> str:
    """One line: the total time, where the nets ran, and the time per method."""
    per_method = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.seconds.items() if seconds)
    return (f"Measured by `glrl eval` in {result.total_seconds:.1f} s on {where}"
            f"{'; ' + per_method if per_method else ''}.")


def describe_where(entries: Sequence[Entry], backend: Optional[str], device: str) -> str:
    """The machine, and the backend and device the nets ran on (when any did)."""
    machine = f"{cpu_model()}, {os.cpu_count()} CPUs"
    if not any(entry.runs_nets and entry.factories for entry in entries):
        return machine
    from glrl.backends import resolve_backend
    from glrl.machine import resolve_device

    backend = resolve_backend(backend)
    resolved = resolve_device(device, backend)
    if resolved.startswith("cuda"):
        import torch

        resolved += f" ({torch.cuda.get_device_name(torch.device(resolved))})"
    return f"{machine}; nets on the {backend} backend, {resolved}"


def results_markdown(records: Sequence[Dict[str, object]], note: str) -> str:
    return ("# Table 1 and Table 2: ours beside the paper (PSNR dB / SSIM on Y)\n\n"
            + table_mod.markdown_from_records(records) + "\n" + note + "\n")


def publish(out_dir: Path, target: Path, readme: Path) -> List[Path]:
    """Copy the committed outputs to ``target`` and rewrite the README's results block from them."""
    target.mkdir(parents=True, exist_ok=True)
    records = table_mod.load_records(out_dir / "results.json")
    written = []
    for name in PUBLISHED_FILES:
        source = out_dir / ("results.md" if name == "table.md" else name)
        if source.is_file():
            atomic_write_bytes(target / name, source.read_bytes())
            written.append(target / name)
    relative = os.path.relpath(target, readme.parent)
    images = [(alt, f"{relative}/{name}") for alt, name in table_mod.PUBLISHED_FIGURES
              if (target / name).is_file()]
    block = table_mod.readme_block_text(records, images)
    text = readme.read_text(encoding="utf-8")
    atomic_write_text(readme, table_mod.replace_readme_block(text, block))
    written.append(readme)
    return written


def run_command(args: argparse.Namespace, scales: List[int], datasets: List[str]) -> int:
    """``glrl eval`` for released models, external models and ``--all``."""
    root = settings.data_root(args.data_root)
    models_dir = Path(args.models_dir) if args.models_dir else None
    out_dir = settings.work_dir(args.out) if args.out else settings.work_dir() / "eval"
    if args.publish and not args.all:
        raise GlrlError("--publish goes with --all", hint="glrl eval --all --publish docs/results")
    entries = build_entries(args, scales, models_dir)
    result = run_suite(entries, datasets, scales, root, out_dir, progress=not args.quiet)
    if not result.summaries:  # every method skipped every scale: keep what an earlier run wrote there
        why = "; ".join(sorted(set(result.notes.values()))) or "no method ran"
        raise GlrlError(f"nothing was evaluated at x{','.join(map(str, scales))}: {why}",
                        hint="ask for the scales the model was trained for (glrl models list)")
    methods = None if args.all else [e.name for e in entries]
    cells = table_mod.build_cells(_measured(result), result.notes, datasets, scales, methods)
    out_dir.mkdir(parents=True, exist_ok=True)
    where = describe_where(entries, args.backend, args.device)
    written = write_outputs(out_dir, entries, result, cells, root, args.all, where)
    print(table_mod.markdown_from_records([cell.record() for cell in cells]))
    print(provenance(result, where))
    print(f"wrote {len(written)} files to {out_dir} (SR images in {out_dir / 'images'})")
    if args.publish:
        target = Path(args.publish)
        readme = Path(args.readme) if args.readme else settings.REPO_ROOT / "README.md"
        published_paths = publish(out_dir, target, readme)
        print("published: " + ", ".join(str(p) for p in published_paths))
    return 0


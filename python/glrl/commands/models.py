"""``glrl models``: the released models in ``models/`` — list them, verify them, release new weights."""
from __future__ import annotations

import argparse
import sys

HELP = "released models: list, verify (checksums, metadata, Set5 PSNR), release trained weights"


def configure(parser: argparse.ArgumentParser) -> None:
    from glrl.cli import add_action, add_data_root_argument

    actions = parser.add_subparsers(dest="models_action", metavar="ACTION")
    actions.required = True
    listing = add_action(actions, "list", "the released models and their Set5 PSNR")
    verify = add_action(actions, "verify", "checksums and metadata of every released model")
    verify.add_argument("--measure", action="store_true",
                        help="also run each model on Set5 and compare with its recorded PSNR (0.01 dB)")
    verify.add_argument("--device", default="cpu", help="torch device for --measure (default cpu)")
    add_data_root_argument(verify)
    rel = add_action(actions, "release", "copy trained weights into models/ with their metadata")
    rel.add_argument("source", help="a glrl train run folder (its newest snapshot) or a .caffemodel")
    rel.add_argument("--name", required=True, help="model name, also the file stem (e.g. glrl_x3)")
    rel.add_argument("--net", required=True, help="the generated net the weights are for (glrl nets list)")
    rel.add_argument("--scales", required=True, help="scale(s) it was trained for, comma-separated (e.g. 3)")
    rel.add_argument("--schedule", default=None, help="schedule name when the run folder's name does not say")
    rel.add_argument("--hardware", default=None,
                     help="what it was trained on (default: the machine the run recorded, else this one)")
    rel.add_argument("--device", default="cpu", help="torch device for the Set5 measurement (default cpu)")
    rel.add_argument("--force", action="store_true", help="replace a model of the same name")
    add_data_root_argument(rel)
    for sub in (listing, verify, rel):
        sub.add_argument("--models-dir", default=None, help="folder of released models (default: models/)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    models_dir = Path(args.models_dir) if args.models_dir else None
    if args.models_action == "list":
        return _list(models_dir)
    if args.models_action == "verify":
        return _verify(args, models_dir)
    return _release(args, models_dir)


def _list(models_dir) -> int:
    from glrl.model_zoo import released_models
    from glrl.provenance import describe_machines, describe_stages

    models = released_models(models_dir)
    if not models:
        print("no released models (glrl models release RUN --name NAME --net NET --scales S)")
        return 0
    print("| Model | Net | Scales | Set5 PSNR | Schedule | Iterations | Trained on | Weights |")
    print("|---|---|---|---|---|---|---|---|")
    for m in models:
        psnr = ", ".join(f"x{s} {m.set5_psnr[s]:.2f}" for s in m.scales if s in m.set5_psnr)
        size = _file_size(m.weights.stat().st_size) if m.weights.is_file() else "missing"
        stages = describe_stages(m.metadata)
        print(f"| {m.name} | {m.net} | {','.join(map(str, m.scales))} | {psnr} | "
              f"{stages['schedule']} | {stages['iterations']} | {describe_machines(m.metadata)} | {size} |")
    return 0


def _file_size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


def _verify(args: argparse.Namespace, models_dir) -> int:
    from glrl import release, settings
    from glrl.errors import ModelError
    from glrl.model_zoo import load_model, metadata_files

    found = [f"{path} has no metadata (.json) beside it" for path in release.orphans(models_dir)]
    models = []
    for path in metadata_files(models_dir):
        try:
            models.append(load_model(path))
        except ModelError as exc:  # a broken metadata file is one problem among the others
            print(f"{path.stem}: FAILED")
            found.append(exc.message)
    if not models and not found:
        found.append(f"no released models in {models_dir or settings.MODELS_DIR}")
    for model in models:
        problems = release.problems(model)
        if not problems and args.measure:
            problems = release.remeasure(model, settings.data_root(args.data_root), device=args.device)
        print(f"{model.name}: {'ok' if not problems else 'FAILED'}")
        found.extend(problems)
    for problem in found:
        print(f"problem: {problem}")
    print(f"{len(models)} model(s), {len(found)} problem(s)")
    return 1 if found else 0


def _release(args: argparse.Namespace, models_dir) -> int:
    from glrl import release, settings
    from glrl.cli import split_list
    from glrl.errors import ModelError

    try:
        scales = [int(s) for s in split_list(args.scales)]
    except ValueError:
        raise ModelError(f"--scales must be integers, not {args.scales!r}", hint="e.g. --scales 3") from None
    model = release.release(args.source, args.name, args.net, scales, root=settings.data_root(args.data_root),
                            models_dir=models_dir, schedule=args.schedule, hardware=args.hardware,
                            device=args.device, force=args.force, progress=True)
    psnr = ", ".join(f"x{s} {model.set5_psnr[s]:.4f} dB" for s in model.scales)
    iterations = model.metadata["iterations"]
    trained = f"{iterations} iterations" if iterations is not None else "iterations unknown"
    print(f"released {model.name} ({model.net}, {trained}): {model.weights}, "
          f"{model.weights.with_suffix('.json')}; Set5 PSNR {psnr}")
    if model.metadata.get("data_manifest_sha256") is None:
        print(f"note: no patch-set manifest was found for {args.source} (the run folder's data-manifest.json, or "
              "the manifest.json beside its train net's list file), so the metadata names no training data; "
              "release from the run folder glrl train wrote, or add data_manifest_sha256 "
              "(glrl data inspect prints it)", file=sys.stderr)
    return 0

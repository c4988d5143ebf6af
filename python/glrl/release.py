"""Releasing trained weights into ``models/`` (``glrl models release``) and checking what is there.

A release copies a ``.caffemodel`` (given directly, or the newest complete snapshot of a ``glrl train``
run folder) to ``models/<name>.caffemodel`` and writes ``models/<name>.json`` in the layout of
:mod:`glrl.model_zoo`. What it records comes from the run where the run kept it:

* iterations and wall time: the snapshot's sidecar (``<prefix>_iter_N.glrl.json``: ``iter``,
  ``elapsed_seconds``), else the ``_iter_N`` in the file name;
* batch size: the train net's HDF5Data ``batch_size`` × the solver's ``iter_size``;
* the patch set: the content SHA-256 of its manifest: the copy the run folder keeps
  (``data-manifest.json``), else the ``manifest.json`` beside the train net's HDF5 list file;
* the schedule: the run folder's name (``<net>-x<scale>-<schedule>``, as ``glrl train`` names it) or
  ``--schedule``;
* precision and hardware: the sidecar's ``segments`` (:func:`glrl.train.snapshot.training_segments`: which
  iterations ran where, in which precision), kept whole as ``training_segments``; ``precision`` and
  ``hardware`` name each in the order the run used them (``tf32 → fp32 + Winograd`` for a run begun on a
  GPU and continued on a CPU). ``--hardware`` overrides the machine, and runs from before the sidecar kept
  it get this machine's description;
* the earlier stage, for a run started from ``--weights``: the run folder's ``initial-weights.json``, copied
  as ``initialized_from`` (:mod:`glrl.provenance`).

Set5 PSNR (and SSIM) per scale is measured here, with the benchmark protocol on the PyTorch backend in fp32,
and is what ``tests/test_released_models.py`` later asserts. The weights are written first and the metadata
last, each atomically, so an interrupted release never lists a model.
"""
from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

from glrl import model_zoo, settings
from glrl.errors import DataError, ModelError
from glrl.fsutil import atomic_write_bytes, atomic_write_text, sha256_file
from glrl.machine import describe_hardware
from glrl.provenance import load_initial_weights

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
PSNR_TOLERANCE_DB = 0.01


@dataclass
class RunRecord:
    """What a training run tells about the weights it produced (None: it does not say)."""

    weights: Path
    iterations: Optional[int] = None
    wall_time_s: Optional[float] = None
    batch_size: Optional[int] = None
    data_manifest_sha256: Optional[str] = None
    data_scales: Optional[List[int]] = None  # the scales of the run's patch set
    schedule: Optional[str] = None
    solver: Optional[Dict[str, object]] = None  # the run's optimiser settings (type, rates, clipping)
    precision: Optional[str] = None  # fp32, tf32 or bf16 (the trainer's --precision), each one the run used
    hardware: Optional[str] = None  # the training machines, in the order the run used them
    segments: Optional[List[Dict[str, object]]] = None  # the run's pieces (training_segments)
    run_dir: Optional[Path] = None

    def training(self) -> Dict[str, object]:
        """How the weights were trained, under the metadata's field names: in a release's metadata, and in
        a later stage's record of the run it started from (``initial-weights.json``)."""
        return {"schedule": self.schedule, "iterations": self.iterations, "batch_size": self.batch_size,
                "solver": self.solver, "data_manifest_sha256": self.data_manifest_sha256,
                "precision": self.precision, "hardware": self.hardware, "wall_time_s": self.wall_time_s,
                **({"training_segments": self.segments} if self.segments else {})}


def _run_folder_of(weights: Path) -> Optional[Path]:
    """The run folder of a snapshot: the first of its folder and that folder's parent with a solver."""
    for folder in (weights.parent, weights.parent.parent):
        if (folder / "solver.prototxt").is_file():
            return folder
    return None


def _schedule_from_folder(run_dir: Path) -> Optional[str]:
    """``<net>-x<scale>-<schedule>[-<optimizer>][-b<batch>][-<patch set>]``, as ``glrl train`` names its run
    folders: the longest schedule name right after the scale (None for a folder named otherwise)."""
    from glrl.nets.solver import SCHEDULES

    found = re.search(r"-x[0-9]+-(.+)$", run_dir.name)
    if found is None:
        return None
    rest = found.group(1)
    matches = [name for name in SCHEDULES if rest == name or rest.startswith(name + "-")]
    return max(matches, key=len) if matches else None  # "cpu-release" rather than a shorter "release"


def _training_data(run_dir: Path, record: RunRecord) -> None:
    """Batch size and patch-set manifest hash from the run's solver and train net."""
    from glrl.caffe.io import read_net, read_solver
    from glrl.caffe.phase import layers_in_phase
    from glrl.data_prep import manifest as manifest_io
    from glrl.data_prep.reader import resolve_source

    solver = read_solver(run_dir / "solver.prototxt")
    record.solver = _solver_summary(solver)
    kept = manifest_io.load(run_dir, manifest_io.RUN_COPY_NAME)  # glrl train's copy: the run may have moved
    if kept is not None:
        _record_manifest(kept, record)
    net_name = solver.train_net or solver.net
    if not net_name:
        return
    net_path = Path(net_name) if Path(net_name).is_absolute() else run_dir / net_name
    if not net_path.is_file():
        return
    for layer in layers_in_phase(read_net(net_path), "TRAIN"):
        if layer.type == "HDF5Data":
            record.batch_size = int(layer.hdf5_data_param.batch_size) * max(1, int(solver.iter_size))
            try:
                source = resolve_source(layer.hdf5_data_param.source, [run_dir, net_path.parent])
            except DataError:
                return
            manifest = manifest_io.load(source.parent)
            if manifest is not None and kept is None:
                _record_manifest(manifest, record)
            return


def _record_manifest(manifest: Dict[str, Any], record: RunRecord) -> None:
    """The patch set's hash and scales, from its manifest."""
    from glrl.data_prep.manifest import content_sha256

    record.data_manifest_sha256 = content_sha256(manifest)
    scales = (manifest.get("settings") or {}).get("scales")
    if scales:
        record.data_scales = sorted(int(scale) for scale in scales)


def _solver_summary(solver) -> Dict[str, object]:
    """The optimiser settings a reader of the metadata needs to know how the weights were trained."""
    summary: Dict[str, object] = {"type": solver.type or "SGD", "base_lr": solver.base_lr,
                                  "lr_policy": solver.lr_policy, "momentum": solver.momentum,
                                  "weight_decay": solver.weight_decay, "max_iter": solver.max_iter}
    # the fields the policy reads (glrl.train.lr_policy): a reader can recompute every iteration's rate
    if solver.lr_policy in ("step", "sigmoid"):
        summary.update(gamma=solver.gamma, stepsize=solver.stepsize)
    elif solver.lr_policy == "multistep":
        summary.update(gamma=solver.gamma, stepvalue=[int(value) for value in solver.stepvalue])
    elif solver.lr_policy == "exp":
        summary.update(gamma=solver.gamma)
    elif solver.lr_policy == "inv":
        summary.update(gamma=solver.gamma, power=solver.power)
    elif solver.lr_policy == "poly":
        summary.update(power=solver.power)
    if solver.type == "Adam":
        summary["momentum2"] = solver.momentum2
    if solver.clip_gradients >= 0:
        summary["clip_gradients"] = solver.clip_gradients
    # the fields are float32 in the proto: 0.9 reads back as 0.8999999762; print them as written
    return {key: float(f"{value:.6g}") if isinstance(value, float) else value for key, value in summary.items()}


def read_run(source: Path) -> RunRecord:
    """The weights to release and what the run recorded about them; ``source`` is a run folder or a
    ``.caffemodel`` (a snapshot of a run, or any file)."""
    from glrl.train.snapshot import latest_snapshot, load_sidecar, snapshot_iteration, training_segments

    source = Path(source)
    if source.is_dir():
        state = latest_snapshot(source)
        if state is None:
            raise ModelError(f"{source} holds no complete snapshot (caffemodel, solverstate and sidecar)",
                             hint="give a .caffemodel, or let the run write a snapshot first")
        weights = state.with_name(state.name[: -len(".solverstate")] + ".caffemodel")
    elif source.is_file():
        if source.suffix != ".caffemodel":
            raise ModelError(f"{source} is not a .caffemodel",
                             hint="give a glrl train run folder or a .caffemodel")
        weights = source
        state = source.with_name(source.name[: -len(".caffemodel")] + ".solverstate")
    else:
        raise ModelError(f"{source} not found", hint="give a glrl train run folder or a .caffemodel")
    if not weights.is_file():
        raise ModelError(f"the snapshot's weights {weights} are missing",
                         hint="give the .caffemodel directly")
    record = RunRecord(weights)
    iteration = snapshot_iteration(state)
    record.iterations = iteration if iteration >= 0 else None
    sidecar = load_sidecar(state)
    if sidecar:
        record.iterations = int(sidecar.get("iter", record.iterations or 0))
        if sidecar.get("elapsed_seconds") is not None:
            record.wall_time_s = round(float(sidecar["elapsed_seconds"]), 3)
        record.segments = training_segments(sidecar, record.iterations)
        record.precision = _in_order(segment["precision"] for segment in record.segments)
        record.hardware = _in_order(segment["hardware"] for segment in record.segments)
    run_dir = source if source.is_dir() else _run_folder_of(weights)
    if run_dir is not None:
        record.run_dir = run_dir
        record.schedule = _schedule_from_folder(run_dir)
        _training_data(run_dir, record)
    return record


def _in_order(values: Iterable[object]) -> Optional[str]:
    """The known values, each once, in their first order, joined by arrows (None when none is known)."""
    known: List[str] = []
    for value in values:
        if value is not None and str(value) not in known:
            known.append(str(value))
    return " → ".join(known) or None


def check_weights_fit(deploy: Path, weights: Path) -> None:
    """Every layer of ``deploy`` with parameters must get them from ``weights`` (same shapes): a model that
    left a layer at its initial values is not one to release."""
    from glrl.backends import open_net

    open_net(str(deploy), str(weights), backend="torch")  # FormatError: a layer left unset, or a misfit shape


def measure_set5(deploy: Path, weights: Path, scales: Sequence[int], root: Path,
                 device: str = "cpu", progress: bool = False) -> Dict[int, Dict[str, float]]:
    """Set5 PSNR/SSIM per scale (benchmark protocol, PyTorch backend, fp32)."""
    from glrl.eval.models import NetMethod, NetSpec
    from glrl.eval.suite import Entry, run_suite

    method = NetMethod(NetSpec(deploy, weights), backend="torch", device=device)
    entry = Entry("model", {int(scale): (lambda: method) for scale in scales})
    result = run_suite([entry], ["Set5"], [int(s) for s in scales], root, None, progress=progress)
    return {s.scale: {"psnr": s.psnr, "ssim": s.ssim} for s in result.summaries}


def release(
    source: Path,
    name: str,
    net: str,
    scales: Sequence[int],
    *,
    root: Path,
    models_dir: Optional[Path] = None,
    schedule: Optional[str] = None,
    hardware: Optional[str] = None,
    device: str = "cpu",
    force: bool = False,
    progress: bool = False,
) -> model_zoo.ReleasedModel:
    """Copy the weights into ``models_dir`` and write their metadata; the released model."""
    if not NAME_PATTERN.match(name):
        raise ModelError(f"model name {name!r} is not a plain file name",
                         hint="use letters, digits, '.', '_' and '-' (e.g. glrl_x3)")
    folder = Path(models_dir) if models_dir else settings.MODELS_DIR
    weights_out, meta_out = folder / f"{name}.caffemodel", folder / f"{name}.json"
    if (weights_out.exists() or meta_out.exists()) and not force:
        raise ModelError(f"a model named {name} is already in {folder}",
                         hint="choose another name, or --force")
    record = read_run(Path(source))
    _check_scales(scales, record, source)
    deploy_name = f"prototxt/{net}/deploy.prototxt"
    deploy = _deploy_of(net, deploy_name, folder)
    if schedule is not None:
        from glrl.nets.solver import get_schedule

        get_schedule(schedule)
        record.schedule = schedule
    origin = load_initial_weights(record.run_dir) if record.run_dir is not None else None
    check_weights_fit(deploy, record.weights)
    figures = measure_set5(deploy, record.weights, scales, root, device=device, progress=progress)
    data = record.weights.read_bytes()
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(weights_out, data)
    metadata = {
        "name": name,
        "net": net,
        "deploy": deploy_name,
        "scales": sorted(int(s) for s in scales),
        **record.training(),  # the fields below replace three of them in place
        "schedule": record.schedule or "unknown",
        "precision": record.precision or "unknown",
        "hardware": hardware or record.hardware or describe_hardware(),
        "set5_psnr": {str(s): round(v["psnr"], 4) for s, v in sorted(figures.items())},
        "set5_ssim": {str(s): round(v["ssim"], 6) for s, v in sorted(figures.items())},
        "set5_measured_with": "benchmark protocol, PyTorch backend, fp32, whole images",
        "sha256": sha256_file(weights_out),
        "source": record.weights.name,
        **({"initialized_from": origin} if origin is not None else {}),
        "released": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    atomic_write_text(meta_out, json.dumps(metadata, indent=1, ensure_ascii=False) + "\n")
    return model_zoo.get_model(name, folder)


def _check_scales(scales: Sequence[int], record: RunRecord, source: Path) -> None:
    """The scales are scale factors, each named once, and among those of the run's patch set (if it names
    them): a run trained on x3 patches is not released for x2."""
    if not scales or any(int(s) < 2 for s in scales) or len(set(scales)) != len(scales):
        raise ModelError(f"scales {list(scales)} are not scale factors, each named once",
                         hint="e.g. --scales 3 or --scales 2,3,4")
    untrained = sorted(set(int(s) for s in scales) - set(record.data_scales or scales))
    if untrained:
        trained = ",".join(map(str, record.data_scales or []))
        raise ModelError(f"{source} was trained on patches of scale {trained}, not {','.join(map(str, untrained))}",
                         hint=f"name the scales it was trained for (--scales {trained}), or train it on those")


def _deploy_of(net: str, deploy_name: str, models_dir: Path) -> Path:
    """The net's committed deploy prototxt, beside the models folder or in this checkout."""
    deploy = model_zoo.deploy_path(deploy_name, models_dir.resolve().parent)
    if not deploy.is_file():
        from glrl.nets.registry import get_net

        get_net(net)  # an unknown net is named as such, with the nets there are
        raise ModelError(f"{deploy_name} is in neither {models_dir.resolve().parent} nor {settings.REPO_ROOT}",
                         hint="generate the committed nets with `make prototxt`")
    return deploy


def problems(model: model_zoo.ReleasedModel) -> List[str]:
    """What is wrong with a released model's files and metadata (empty when nothing)."""
    found = []
    try:
        model.verify()
    except ModelError as exc:
        found.append(exc.message)
    if not model.scales:
        found.append(f"{model.name}: no scales")
    lacking = [s for s in model.scales if s not in model.set5_psnr]
    if lacking:
        found.append(f"{model.name}: no Set5 PSNR for x{', x'.join(map(str, lacking))}")
    if model.weights.stem != model.name:
        found.append(f"{model.name}: metadata name differs from its file name {model.weights.stem}")
    return found


def orphans(models_dir: Optional[Path] = None) -> List[Path]:
    """Weights in ``models_dir`` without metadata (never listed, so never evaluated or tested)."""
    folder = Path(models_dir) if models_dir else settings.MODELS_DIR
    return sorted(p for p in folder.glob("*.caffemodel") if not p.with_suffix(".json").is_file())


def remeasure(model: model_zoo.ReleasedModel, root: Path, device: str = "cpu") -> List[str]:
    """Set5 PSNR per scale measured again; a problem for each scale off the metadata by 0.01 dB or more."""
    figures = measure_set5(model.deploy, model.weights, model.scales, root, device=device)
    return [f"{model.name}: Set5 x{s} PSNR {figures[s]['psnr']:.4f} dB, metadata {model.set5_psnr[s]:.4f} dB"
            for s in model.scales if abs(figures[s]["psnr"] - model.set5_psnr[s]) >= PSNR_TOLERANCE_DB]

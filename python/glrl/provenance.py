"""Where a run's initial weights came from, so that training in stages stays traceable.

``glrl train --weights W`` starts a run from ``W`` (a released model, a snapshot of another run, or any
``.caffemodel``) and writes ``initial-weights.json`` in the run folder: the file it loaded, its SHA-256 and
what is known of it:

* ``model``: the whole metadata of the released model whose checksum it has (``models/<name>.json``);
* ``run``: else, when it is a snapshot of a ``glrl train`` run folder, that run's record (schedule,
  iterations, batch size, solver, patch set, precision, hardware and the run's pieces,
  ``training_segments``), with the run's own ``initialized_from``
  when that run was a later stage too;
* neither: weights of unknown origin.

``glrl models release`` copies the file into the model's metadata as ``initialized_from``, and
``glrl models list`` shows the chain of stages (:func:`describe_stages`) and the machines that trained them
(:func:`describe_machines`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from glrl.errors import ModelError, TrainingError
from glrl.fsutil import atomic_write_text, sha256_file

INITIAL_WEIGHTS_NAME = "initial-weights.json"


def describe_weights(weights: Path, models_dir: Optional[Path] = None) -> Dict[str, Any]:
    """What is known of ``weights``: its path and checksum, and the released model or run it comes from."""
    from glrl import model_zoo

    weights = Path(weights).resolve()
    if not weights.is_file():
        raise TrainingError(f"--weights {weights}: no such file", hint="give an existing .caffemodel")
    digest = sha256_file(weights)
    described: Dict[str, Any] = {"file": str(weights), "sha256": digest}
    for model in model_zoo.released_models(models_dir):
        if model.sha256 == digest:
            described["model"] = model.metadata
            return described
    run = _run_record(weights)
    if run is not None:
        described["run"] = run
    return described


def _run_record(weights: Path) -> Optional[Dict[str, Any]]:
    """The record of the run folder ``weights`` is a snapshot of (None: not a run's snapshot)."""
    from glrl.release import read_run

    try:
        record = read_run(weights)
    except ModelError:
        return None
    if record.run_dir is None:
        return None
    run: Dict[str, Any] = {"run_dir": str(record.run_dir), **record.training()}
    earlier = load_initial_weights(record.run_dir)
    if earlier is not None:
        run["initialized_from"] = earlier
    return run


def record_initial_weights(run_dir: Path, described: Optional[Dict[str, Any]]) -> None:
    """Write ``initial-weights.json`` (``described``, from :func:`describe_weights`) for a new run in
    ``run_dir``, once its trainer has taken the weights; None: the run starts from its fillers, and a record
    left by an earlier start that failed is removed, so that no release names weights the run never had."""
    path = Path(run_dir) / INITIAL_WEIGHTS_NAME
    if described is None:
        path.unlink(missing_ok=True)
        return
    atomic_write_text(path, json.dumps(described, indent=1) + "\n")


def load_initial_weights(run_dir: Path) -> Optional[Dict[str, Any]]:
    """The run's ``initial-weights.json`` (None: the run started from its fillers)."""
    path = Path(run_dir) / INITIAL_WEIGHTS_NAME
    if not path.is_file():
        return None
    try:
        described = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}",
                         hint="restore it, or delete it if the run did not start from --weights") from exc
    if not isinstance(described, dict) or "sha256" not in described:
        raise ModelError(f"{path} does not describe initial weights (no sha256)",
                         hint="restore it, or delete it if the run did not start from --weights")
    return described


def _stage_records(metadata: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The records of the stages that made a released model, earliest first (``{}`` for weights of unknown
    origin)."""
    records = []
    node: Optional[Dict[str, Any]] = metadata
    while node is not None:
        records.append(node)
        origin = node.get("initialized_from")
        node = None if origin is None else (origin.get("model") or origin.get("run") or {})
    return records[::-1]


def training_stages(metadata: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The stages that made a released model, earliest first: each a dict with ``schedule``, ``iterations``,
    ``max_iter`` and ``batch_size`` (None where unknown; a stage from weights of unknown origin has all None)."""
    return [{"schedule": node.get("schedule"), "iterations": node.get("iterations"),
             "max_iter": (node.get("solver") or {}).get("max_iter"), "batch_size": node.get("batch_size")}
            for node in _stage_records(metadata)]


def describe_machines(metadata: Dict[str, Any]) -> str:
    """The ``Trained on`` column of ``glrl models list``: each machine and precision in the order the model's
    stages used them, with the iterations of each where the runs kept their pieces (``training_segments``),
    e.g. ``NVIDIA H200, tf32: 40000 → AMD EPYC, 2 CPUs, fp32 + Winograd: 8000``."""
    pieces: List[List[Any]] = []  # [machine, precision, iterations or None]
    for node in _stage_records(metadata):
        segments = node.get("training_segments") or [
            {"hardware": node.get("hardware"), "precision": node.get("precision"), "from_iter": None}]
        for segment in segments:
            machine = str(segment.get("hardware") or "?").split("GPU: ")[-1]  # a GPU machine by its GPU
            done = (None if segment.get("from_iter") is None
                    else int(segment["to_iter"]) - int(segment["from_iter"]))
            if pieces and pieces[-1][:2] == [machine, segment.get("precision")]:
                pieces[-1][2] = None if done is None or pieces[-1][2] is None else pieces[-1][2] + done
            else:
                pieces.append([machine, segment.get("precision"), done])
    return " → ".join(f"{machine}, {precision or '?'}" + (f": {done}" if done is not None else "")
                      for machine, precision, done in pieces)


def describe_stages(metadata: Dict[str, Any]) -> Dict[str, str]:
    """``schedule`` and ``iterations`` columns of ``glrl models list``: one stage as before
    (``cpu-20k``, ``40000 of 60000``), several joined by arrows with their batch sizes
    (``gpu-60k → gpu-finetune``, ``40000 of 60000 at batch 32 → 24000 at batch 128``)."""
    stages = training_stages(metadata)

    def iterations(stage: Dict[str, Any], with_batch: bool) -> str:
        done, planned = stage["iterations"], stage["max_iter"]
        text = "?" if done is None else str(done)
        if planned and done is not None and planned != done:
            text += f" of {planned}"  # a snapshot taken before the schedule's end
        if with_batch and stage["batch_size"]:
            text += f" at batch {stage['batch_size']}"
        return text

    several = len(stages) > 1
    return {"schedule": " → ".join(str(s["schedule"] or "?") for s in stages),
            "iterations": " → ".join(iterations(s, several) for s in stages)}

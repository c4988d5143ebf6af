"""Snapshots as Caffe writes them, plus the little Caffe does not keep, so a resumed run is bit-identical.

Every snapshot at iteration N is three files, each written atomically (a crash leaves the previous files
and never a truncated one under a final name), in this order:

- ``<prefix>_iter_<N>.caffemodel``: the weights (``caffe.NetParameter``, Caffe's binary format);
- ``<prefix>_iter_<N>.solverstate``: ``caffe.SolverState`` (iter, learned_net, current_step, history);
- ``<prefix>_iter_<N>.glrl.json``: our sidecar, written last: the data reader's position, the torch RNG
  state, the display-smoothing window and the elapsed time. Caffe has no place for these; without them a
  resumed run would read different batches (Caffe restarts its data layer from the first row). It also
  keeps the run's history as ``segments`` (:func:`training_segments`): which iterations ran on which
  machine in which precision, since a run may start on a GPU and go on on a CPU.

``learned_net`` holds the model path as Caffe forms it (``snapshot_prefix`` + ``_iter_N.caffemodel``);
on resume a relative path is looked up in the working directory, then beside the ``.solverstate``, so
states written by real Caffe resume too (without a sidecar: see :func:`load_sidecar`).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from glrl.errors import TrainingError
from glrl.fsutil import atomic_path, atomic_write_bytes, atomic_write_text, path_candidates

SIDECAR_FORMAT = "glrl-solver-sidecar"
SIDECAR_VERSION = 1
_ITER_PATTERN = re.compile(r"_iter_(\d+)\.solverstate$")


@dataclass
class SnapshotPaths:
    """The three files of the snapshot at one iteration."""

    caffemodel: Path
    solverstate: Path
    sidecar: Path
    learned_net: str  # the caffemodel path as written into the solverstate (Caffe's form)

    @classmethod
    def at(cls, run_dir: Path, prefix: str, iteration: int) -> "SnapshotPaths":
        """Paths for ``prefix`` (relative prefixes live under ``run_dir``) at ``iteration``."""
        stem = f"{prefix}_iter_{iteration}"
        base = Path(stem) if Path(stem).is_absolute() else Path(run_dir) / stem
        return cls(Path(f"{base}.caffemodel"), Path(f"{base}.solverstate"), Path(f"{base}.glrl.json"),
                   f"{stem}.caffemodel")


def write_snapshot(paths: SnapshotPaths, net_param: Any, state: Any, sidecar: Dict[str, Any]) -> None:
    """Write the caffemodel, then the solverstate, then the sidecar, each atomically."""
    atomic_write_bytes(paths.caffemodel, net_param.SerializeToString())
    atomic_write_bytes(paths.solverstate, state.SerializeToString())
    document = {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, "solverstate": paths.solverstate.name}
    document.update(sidecar)
    atomic_write_text(paths.sidecar, json.dumps(document, indent=1, sort_keys=True) + "\n")


def snapshot_iteration(solverstate: Path) -> int:
    """N from ``..._iter_N.solverstate`` (-1 when the name has no iteration)."""
    match = _ITER_PATTERN.search(Path(solverstate).name)
    return int(match.group(1)) if match else -1


def latest_snapshot(run_dir: Path) -> Optional[Path]:
    """The ``.solverstate`` of the newest complete snapshot in ``run_dir`` (model and sidecar present)."""
    candidates: List[Path] = []
    for path in Path(run_dir).rglob("*_iter_*.solverstate"):
        paths = sidecar_path(path)
        if snapshot_iteration(path) >= 0 and paths.is_file():
            candidates.append(path)
    return max(candidates, key=snapshot_iteration) if candidates else None


def sidecar_path(solverstate: Path) -> Path:
    """The sidecar beside a ``.solverstate``."""
    name = Path(solverstate).name
    stem = name[: -len(".solverstate")] if name.endswith(".solverstate") else name
    return Path(solverstate).with_name(stem + ".glrl.json")


def load_sidecar(solverstate: Path) -> Optional[Dict[str, Any]]:
    """The sidecar of a snapshot, or None when there is none (e.g. a state written by real Caffe: the run
    then goes on from the data position an uninterrupted glrl run would have, iter × batch × iter_size)."""
    path = sidecar_path(solverstate)
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TrainingError(
            f"cannot read the snapshot sidecar {path}: {exc}",
            hint="delete it to resume as from a Caffe state, or resume an older snapshot") from exc
    if document.get("format") != SIDECAR_FORMAT or document.get("version") != SIDECAR_VERSION:
        raise TrainingError(f"{path} is not a glrl sidecar of version {SIDECAR_VERSION}",
                            hint="resume with the glrl version that wrote it")
    return document


def training_segments(sidecar: Optional[Dict[str, Any]], iteration: int) -> List[Dict[str, Any]]:
    """The pieces a run to ``iteration`` was trained in, oldest first: ``from_iter``, ``to_iter``, ``seconds``,
    ``precision`` and ``hardware`` of each process that trained it.

    A sidecar lists them under ``segments``. One written before glrl kept that list stands for its whole run
    as one piece on the machine it names (its ``elapsed_seconds`` are the run's); a snapshot without a sidecar
    (real Caffe's) for one piece of which nothing is known.
    """
    if sidecar is None:
        return [{"from_iter": 0, "to_iter": iteration, "seconds": None, "precision": None, "hardware": None}]
    if "segments" in sidecar:
        return [dict(segment) for segment in sidecar["segments"]]
    return [{"from_iter": 0, "to_iter": int(sidecar["iter"]), "seconds": sidecar.get("elapsed_seconds"),
             "precision": sidecar.get("precision"), "hardware": sidecar.get("hardware")}]


def resolve_learned_net(learned_net: str, solverstate: Path) -> Path:
    """Find the caffemodel a solverstate names: as written, relative to the working directory, beside the
    solverstate, or by its file name beside the solverstate."""
    if not learned_net:
        raise TrainingError(f"{solverstate} names no learned_net (weights file)",
                            hint="resume from a complete snapshot (.solverstate next to its .caffemodel)")
    candidates = path_candidates(learned_net, [solverstate.parent]) + [solverstate.parent / Path(learned_net).name]
    found = next((candidate for candidate in candidates if candidate.is_file()), None)
    if found is not None:
        return found.resolve()
    raise TrainingError(
        f"the weights {learned_net!r} named by {solverstate} were not found "
        f"(looked in {', '.join(str(c.absolute()) for c in candidates)})",
        hint="keep each .caffemodel beside its .solverstate",
    )


def pack_run(run_dir: Path, target: Path) -> Path:
    """Write the run folder, with its newest complete snapshot only (older snapshots stay behind) and without
    its lock, as the tar file ``target``, atomically: how a run moves to the next machine of a run cut into
    slices (``scripts/gpu_slice.sh``). Returns the packed ``.solverstate``."""
    import tarfile

    run_dir = Path(run_dir)
    state = latest_snapshot(run_dir)
    if state is None:
        raise TrainingError(f"{run_dir} holds no complete snapshot to pack", hint="train it first")
    keep = {state, state.with_suffix(".caffemodel"), sidecar_path(state)}
    with atomic_path(target) as partial, tarfile.open(partial, "w") as tar:
        for path in sorted(run_dir.rglob("*")):
            snapshot_file = path.name.endswith((".solverstate", ".caffemodel", ".glrl.json"))
            if path.is_file() and path.name != ".lock" and (not snapshot_file or path in keep):
                tar.add(str(path), arcname=str(path.relative_to(run_dir)))
    return state


def packed_iteration(tar_path: Path) -> int:
    """The iteration of the snapshot a :func:`pack_run` tar holds."""
    import tarfile

    with tarfile.open(tar_path) as tar:
        return max(snapshot_iteration(Path(name)) for name in tar.getnames())

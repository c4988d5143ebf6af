"""The released models in ``models/``: what each one is, where its files are, and whether they are intact.

A released model is a ``.caffemodel`` for a committed deploy prototxt plus a metadata file beside it,
``models/<name>.json``::

    {
      "name": "glrl_x3",              # also the file stem of the weights: models/glrl_x3.caffemodel
      "net": "glrl",                  # a name from glrl.nets.registry
      "deploy": "prototxt/glrl/deploy.prototxt",   # relative to the repository root
      "scales": [3],                  # the scales it was trained for (several for a multi-scale model)
      "schedule": "cpu-short",        # solver schedule name, and what it amounted to:
      "iterations": 2000,
      "batch_size": 32,
      "solver": {"type": "Adam", "base_lr": 0.001, "max_iter": 2000, ...},   # the run's solver settings
      "data_manifest_sha256": "...",  # the patch set it was trained on (glrl.data_prep.manifest.content_sha256)
      "hardware": "...", "wall_time_s": 1234.5,
      "set5_psnr": {"3": 31.95},      # Set5 PSNR per scale, benchmark protocol, PyTorch backend fp32
      "sha256": "..."                 # of the .caffemodel
    }

``glrl models release`` (:mod:`glrl.release`) writes these and adds ``set5_ssim`` (per scale),
``set5_measured_with``, ``source`` (the weights file it copied) and ``released`` (UTC time); values the
training run did not record are ``null``.

Only this module knows that layout; eval, upscale and the tests ask it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from glrl import settings
from glrl.errors import ModelError
from glrl.fsutil import sha256_file

FIX_METADATA = "restore the file (git checkout models/), or release the model again (glrl models release --force)"
REQUIRED_KEYS = ("name", "net", "deploy", "scales", "schedule", "iterations", "set5_psnr", "sha256")


@dataclass(frozen=True)
class ReleasedModel:
    """One entry of ``models/``."""

    name: str
    net: str
    deploy: Path
    weights: Path
    scales: List[int]
    set5_psnr: Dict[int, float]
    sha256: str
    metadata: dict

    def verify(self) -> None:
        """Raise ModelError unless the weights and the deploy prototxt exist and the checksum matches."""
        for path in (self.weights, self.deploy):
            if not path.is_file():
                raise ModelError(f"released model {self.name}: missing file {path}",
                                 hint="restore it from git (git checkout -- models prototxt)")
        actual = sha256_file(self.weights)
        if actual != self.sha256:
            raise ModelError(
                f"released model {self.name}: {self.weights} has SHA-256 {actual}, metadata says {self.sha256}",
                hint="the weights file is corrupt or was replaced; restore it from git",
            )


def load_model(meta_path: Path) -> ReleasedModel:
    """The released model a metadata file describes (its deploy net found from the models folder's parent,
    else this checkout)."""
    repo_root = meta_path.parent.parent
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read model metadata {meta_path}: {exc}", hint=FIX_METADATA) from exc
    if not isinstance(meta, dict):
        raise ModelError(f"model metadata {meta_path} is not a JSON object", hint=FIX_METADATA)
    missing = [key for key in REQUIRED_KEYS if key not in meta]
    if missing:
        raise ModelError(f"model metadata {meta_path} lacks {', '.join(missing)}", hint=FIX_METADATA)
    try:
        scales = [int(s) for s in meta["scales"]]
        set5_psnr = {int(k): float(v) for k, v in meta["set5_psnr"].items()}
        if not all(isinstance(meta[key], str) for key in ("name", "net", "deploy", "sha256")):
            raise TypeError("name, net, deploy and sha256 must be strings")
    except (TypeError, ValueError, AttributeError) as exc:
        raise ModelError(f"model metadata {meta_path} has a field of the wrong type ({exc}): scales must be a list "
                         "of integers, set5_psnr an object of numbers by scale", hint=FIX_METADATA) from None
    return ReleasedModel(
        name=meta["name"],
        net=meta["net"],
        deploy=deploy_path(meta["deploy"], repo_root),
        weights=meta_path.with_suffix(".caffemodel"),
        scales=scales,
        set5_psnr=set5_psnr,
        sha256=meta["sha256"],
        metadata=meta,
    )


def deploy_path(relative: str, repo_root: Path) -> Path:
    """The deploy prototxt, relative to the models folder's parent (a checkout) or, for a models folder copied
    elsewhere, to this checkout, whose prototxt/ holds the nets' committed deploy files."""
    beside = repo_root / relative
    if beside.is_file():
        return beside
    ours = settings.REPO_ROOT / relative
    return ours if ours.is_file() else beside


def metadata_files(models_dir: Optional[Path] = None) -> List[Path]:
    """The metadata files in ``models_dir`` (default: the checkout's ``models/``), sorted; a ``models_dir``
    that is not a folder is an error (the default one may be absent: no models then)."""
    folder = Path(models_dir) if models_dir else settings.MODELS_DIR
    if not folder.is_dir():
        if models_dir:
            raise ModelError(f"the models folder {folder} does not exist",
                             hint="give --models-dir the folder holding <name>.json and <name>.caffemodel files")
        return []
    return sorted(folder.glob("*.json"))


def released_models(models_dir: Optional[Path] = None) -> List[ReleasedModel]:
    """Every model in ``models_dir`` (default: the checkout's ``models/``), sorted by name."""
    return sorted((load_model(path) for path in metadata_files(models_dir)), key=lambda m: m.name)


def get_model(name: str, models_dir: Optional[Path] = None) -> ReleasedModel:
    """The released model called ``name``."""
    models = released_models(models_dir)
    for model in models:
        if model.name == name:
            return model
    known = ", ".join(m.name for m in models) or "none"
    raise ModelError(f"no released model named {name!r}", hint=f"released models: {known}")


def model_for_scale(scale: int, net: str = "glrl", models_dir: Optional[Path] = None) -> ReleasedModel:
    """The released ``net`` model for ``scale``; prefer a single-scale model over a multi-scale one."""
    released = released_models(models_dir)
    models = [m for m in released if m.net == net]
    candidates = sorted((m for m in models if scale in m.scales), key=lambda m: len(m.scales))
    if candidates:
        return candidates[0]
    if not models:
        nets = sorted({m.net for m in released})
        raise ModelError(f"no released model of a net called {net!r}",
                         hint=f"nets with released models: {', '.join(nets) or 'none'} (glrl models list)")
    have = sorted({s for m in models for s in m.scales})
    raise ModelError(
        f"no released {net} model for scale x{scale}",
        hint=f"scales with a {net} model: {', '.join('x%d' % s for s in have) or 'none'}",
    )

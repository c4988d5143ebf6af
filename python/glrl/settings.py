"""Where things live: the data root, the project's released models and generated prototxt.

The data root is chosen, first match wins, from an explicit ``--data-root``, the ``GLRL_DATA`` environment
variable, or ``~/.cache/glrl/datasets``. Its layout is that of ``shared/datasets``: ``train/T91``,
``train/BSD200``, ``test/Set5``, ``test/Set14``, ``test/BSD100``, ``matlab_lr/<set>/x<s>``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

DATA_ENV = "GLRL_DATA"
DEFAULT_DATA_ROOT = Path.home() / ".cache" / "glrl" / "datasets"

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE_DATA = PACKAGE_DIR / "data"
# The repository root when running from a checkout (python/glrl/ -> repo). Released models and the
# committed prototxt live there; an installed wheel without a checkout has none.
REPO_ROOT = PACKAGE_DIR.parent.parent
MODELS_DIR = REPO_ROOT / "models"
PROTOTXT_DIR = REPO_ROOT / "prototxt"


def data_root(override: Optional[Union[str, Path]] = None) -> Path:
    """The folder that holds the datasets (it may not exist yet: callers verify what they need; a file
    there is an error naming where the path came from)."""
    from glrl.errors import DataError

    given, source = (override, "--data-root") if override else (os.environ.get(DATA_ENV), DATA_ENV)
    root = Path(given).expanduser().resolve() if given else DEFAULT_DATA_ROOT
    if root.exists() and not root.is_dir():
        raise DataError(f"the data root {root} ({source if given else 'the default'}) is a file, not a folder",
                        hint="point --data-root or GLRL_DATA at the folder holding test/ and train/")
    return root

WORK_ENV = "GLRL_WORK"


def work_dir(override: Optional[Union[str, Path]] = None) -> Path:
    """Where generated data and runs go: patch sets in ``<work>/data``, training runs in ``<work>/runs``,
    evaluation output in ``<work>/eval``. From ``override``, ``$GLRL_WORK``, else ``<repo>/work`` (git-ignored).
    """
    if override:
        return Path(override).expanduser().resolve()
    env = os.environ.get(WORK_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return REPO_ROOT / "work"

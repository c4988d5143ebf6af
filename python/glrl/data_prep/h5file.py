"""The HDF5 patch file as Caffe's ``HDF5Data`` layer reads it.

Datasets ``data`` (N x 1 x p x p) and ``label`` (N x 1 x q x q), float32, row-major as h5py writes them, which
is the N x C x H x W blob order Caffe loads (a MATLAB ``h5write`` of a p x p x 1 x N array yields the same
dimensions but each patch transposed, since MATLAB is column-major). ``origin`` (N x 6 int32: image,
down-scale, transform, scale, row, col) records where each patch came from; Caffe reads only the datasets
named by the layer's tops and ignores it. Timestamps are off so equal content gives equal bytes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from glrl.fsutil import atomic_path


def write_patch_file(path: Path, data: np.ndarray, label: np.ndarray, origin: np.ndarray) -> None:
    """Write one patch file under a temporary name and rename it when complete."""
    import h5py

    try:
        with atomic_path(path) as tmp, h5py.File(str(tmp), "w") as h5:
            for name, array in (("data", data), ("label", label), ("origin", origin)):
                h5.create_dataset(name, data=np.ascontiguousarray(array), track_times=False)
    except RuntimeError as exc:  # h5py reports some I/O failures so
        raise OSError(f"{path.name}: {exc}") from exc

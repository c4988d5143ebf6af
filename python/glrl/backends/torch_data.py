"""The layers that start a Caffe net: ``Input`` (tensors the caller feeds) and ``HDF5Data``.

``HDF5Data`` follows Caffe 1.0's ``HDF5DataLayer``: the list file (``hdf5_data_param.source``) names one
HDF5 file per line; each top is the dataset of that name in every file, read whole into memory when its
file comes up; batches take ``batch_size`` rows in order, running on into the next file and wrapping
around from the last file to the first. With ``shuffle`` the file order is shuffled at the start and at
every wrap-around, and the row order of a file whenever it is loaded and whenever its end is reached —
the same sequence of shuffles as Caffe's, drawn from a NumPy generator seeded by the net's seed (Caffe's
own random stream cannot be reproduced). When training on several processes, ``shard=(rank, count)``
keeps every count-th row as Caffe's data-parallel ``Skip()`` does (TRAIN phase only).

Paths are read as Caffe reads them, from the working directory; a relative path that does not exist
there is looked up in the net's search folders (the prototxt's folder, and any the caller adds), and a
list entry also beside the list file.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from glrl.backends.torch_layers import Layer, Shape
from glrl.caffe import pb
from glrl.errors import DataError


class Input(Layer):
    """The net's inputs: tops the caller feeds; ``input_param.shape`` gives their build-time shapes."""

    type_name = "Input"
    bottoms_range = (0, 0)
    tops_range = (1, None)
    is_source = True

    def setup(self, bottom_shapes: List[Shape]) -> List[Shape]:
        shapes = [tuple(int(d) for d in s.dim) for s in self.param.input_param.shape]
        tops = len(self.param.top)
        if len(shapes) not in (1, tops):
            raise self.error(f"input_param gives {len(shapes)} shapes for {tops} tops; give 1 or {tops}",
                             hint="add input_param { shape { dim: N dim: C dim: H dim: W } }")
        if any(d <= 0 for s in shapes for d in s):
            raise self.error(f"input shapes {shapes} must have positive dimensions")
        return shapes * tops if len(shapes) == 1 else shapes

    def forward(self) -> Sequence[torch.Tensor]:
        tops = ", ".join(self.param.top)
        raise self.error(f"no value was given for the input(s) {tops}",
                         hint="pass them to forward()/run() by name")


class HDF5Data(Layer):
    """Batches of rows from the HDF5 files of a list file, in Caffe's order (see the module docstring)."""

    type_name = "HDF5Data"
    bottoms_range = (0, 0)
    tops_range = (1, None)
    is_source = True

    def __init__(self, param: "pb.LayerParameter", bottom_shapes: Sequence[Shape], *, seed: Optional[int],
                 device: torch.device, dtype: torch.dtype, shard: Tuple[int, int] = (0, 1),
                 search_dirs: Sequence[Path] = ()) -> None:
        self.seed, self.device, self.dtype = seed, device, dtype
        self.search_dirs = [Path(d) for d in search_dirs]
        self.shard = shard if param.phase == pb.TRAIN else (0, 1)
        super().__init__(param, bottom_shapes)
        self._started = False

    # -- set-up: the list file and the shapes of the first file ---------------------------------------
    def setup(self, bottom_shapes: List[Shape]) -> List[Shape]:
        hp = self.param.hdf5_data_param
        if not hp.source:
            raise self.error("hdf5_data_param.source (the list of HDF5 files) is not set")
        if hp.batch_size <= 0:
            raise self.error("hdf5_data_param.batch_size must be positive")
        self.batch_size, self.shuffle = int(hp.batch_size), bool(hp.shuffle)
        self.files = self._read_list(self._find(Path(hp.source), []))
        self.row_shapes = self._row_shapes(self.files[0])
        return [(self.batch_size,) + shape for shape in self.row_shapes]

    def _find(self, path: Path, extra_dirs: List[Path]) -> Path:
        """``path`` as Caffe reads it (from the working directory), else from the first search folder
        that has it."""
        if path.is_absolute() or path.exists():
            return path
        for folder in extra_dirs + self.search_dirs:
            if (folder / path).exists():
                return folder / path
        return path

    def _read_list(self, source: Path) -> List[Path]:
        try:
            lines = source.read_text().split("\n")
        except OSError as exc:
            looked = ", ".join(str(d) for d in self.search_dirs) or "nowhere else"
            raise DataError(f"layer '{self.name}': cannot read the HDF5 list file {source}: {exc.strerror} "
                            f"(relative paths are tried from the working directory, then from {looked})",
                            hint="build the patch sets first (make data) or fix hdf5_data_param.source")
        files = []
        for line in (entry.strip() for entry in lines):
            if not line:
                continue
            files.append(self._find(Path(line), [source.parent]))
        if not files:
            raise DataError(f"layer '{self.name}': the list file {source} names no HDF5 file",
                            hint="list one .h5 path per line")
        return files

    def _open(self, path: Path):
        import h5py

        try:
            return h5py.File(str(path), "r")
        except OSError as exc:
            raise DataError(f"layer '{self.name}': cannot open HDF5 file {path}: {exc}",
                            hint="rebuild the patch set (make data) or fix the list file")

    def _datasets(self, handle, path: Path):
        datasets = []
        for top in self.param.top:
            dataset = handle.get(top)
            if dataset is None or not hasattr(dataset, "shape"):
                raise DataError(f"layer '{self.name}': HDF5 file {path} has no dataset '{top}'",
                                hint=f"the tops of an HDF5Data layer name datasets; the file has "
                                     f"{', '.join(sorted(handle.keys())) or 'none'}")
            if dataset.ndim < 1 or dataset.dtype.kind not in "fiu":
                raise DataError(f"layer '{self.name}': dataset '{top}' of {path} must be a numeric array "
                                f"with a first (row) axis, got {dataset.dtype} of shape {dataset.shape}")
            datasets.append(dataset)
        rows = {d.shape[0] for d in datasets}
        if len(rows) != 1 or 0 in rows:
            raise DataError(f"layer '{self.name}': datasets {list(self.param.top)} of {path} must have the "
                            f"same, non-zero number of rows, got {[d.shape[0] for d in datasets]}")
        return datasets

    def _row_shapes(self, path: Path) -> List[Shape]:
        with self._open(path) as handle:
            return [tuple(d.shape[1:]) for d in self._datasets(handle, path)]

    # -- Caffe's reading order -------------------------------------------------------------------------
    def _start(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._file_order = np.arange(len(self.files))
        if self.shuffle:
            self._rng.shuffle(self._file_order)
        self._file_index = 0
        self._load(self._file_order[0])
        self._row = 0
        self._offset = 0
        self._started = True

    def _load(self, index: int) -> None:
        path = self.files[index]
        np_dtype = np.float64 if self.dtype == torch.float64 else np.float32
        with self._open(path) as handle:
            datasets = self._datasets(handle, path)
            shapes = [tuple(d.shape[1:]) for d in datasets]
            if shapes != self.row_shapes:
                raise DataError(f"layer '{self.name}': rows of {path} have shapes {shapes}, but those of "
                                f"{self.files[0]} have {self.row_shapes}",
                                hint="every file of one list must hold rows of the same shapes")
            self._arrays = [np.asarray(d[...], dtype=np_dtype) for d in datasets]
        self._rows = self._arrays[0].shape[0]
        self._row_order = np.arange(self._rows)
        if self.shuffle:
            self._rng.shuffle(self._row_order)

    def _end_of_file(self) -> None:
        """Caffe's step past the last row: next file (reshuffling files at a wrap), then reshuffle rows."""
        if len(self.files) > 1:
            self._file_index += 1
            if self._file_index == len(self.files):
                self._file_index = 0
                if self.shuffle:
                    self._rng.shuffle(self._file_order)
            self._load(self._file_order[self._file_index])
        self._row = 0
        if self.shuffle:
            self._rng.shuffle(self._row_order)

    def next_batch(self) -> List[np.ndarray]:
        """The next ``batch_size`` rows of every top, as arrays."""
        if not self._started:
            self._start()
        rank, count = self.shard
        parts: List[List[np.ndarray]] = [[] for _ in self.param.top]
        needed = self.batch_size
        while needed:
            available = self._rows - self._row
            if count > 1:
                offsets = self._offset + np.arange(available)
                kept = np.nonzero(offsets % count == rank)[0][:needed]
                consumed = int(kept[-1]) + 1 if len(kept) == needed else available
            else:
                kept = np.arange(min(available, needed))
                consumed = len(kept)
            rows = self._row_order[self._row + kept]
            for part, array in zip(parts, self._arrays):
                part.append(array[rows])
            needed -= len(kept)
            self._row += consumed
            self._offset += consumed
            if self._row == self._rows:
                self._end_of_file()
        return [p[0] if len(p) == 1 else np.concatenate(p) for p in parts]

    def forward(self) -> Sequence[torch.Tensor]:
        return [torch.from_numpy(a).to(device=self.device, dtype=self.dtype) for a in self.next_batch()]

"""The layers that start a Caffe net: ``Input`` (tensors the caller feeds) and ``HDF5Data``.

``HDF5Data`` follows Caffe 1.0's ``HDF5DataLayer`` by way of :class:`glrl.data_prep.reader.CaffeHDF5Reader`:
the list file (``hdf5_data_param.source``) names one HDF5 file per line; each top is the dataset of that
name in every file, read whole into memory when its file comes up; batches take ``batch_size`` rows in
order, running on into the next file and wrapping around from the last file to the first. With ``shuffle``
the files and rows are shuffled exactly as Caffe shuffles them, with glibc ``rand()`` seeded by the net's
seed: Caffe never seeds ``rand()``, so a net built with ``seed`` None (or 1) reads Caffe's very batches.
When training on several processes, ``shard=(rank, count)`` keeps every count-th row as Caffe's
data-parallel ``Skip()`` does (TRAIN phase only).

Paths are read as Caffe reads them, from the working directory; a relative path that does not exist
there is looked up in the net's search folders (the prototxt's folder, and any the caller adds), and a
list entry first beside the list file. Set-up reads the list and the first file's header (as Caffe's does);
the other files are checked when the first batch is read.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from glrl.backends.torch_layers import Layer, Shape
from glrl.caffe import pb
from glrl.data_prep.reader import CaffeHDF5Reader, list_files, read_header
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
        self._reader: Optional[CaffeHDF5Reader] = None

    def setup(self, bottom_shapes: List[Shape]) -> List[Shape]:
        hp = self.param.hdf5_data_param
        if not hp.source:
            raise self.error("hdf5_data_param.source (the list of HDF5 files) is not set")
        if hp.batch_size <= 0:
            raise self.error("hdf5_data_param.batch_size must be positive")
        self.batch_size, self.shuffle = int(hp.batch_size), bool(hp.shuffle)
        with self._naming_errors():
            self.files = list_files(hp.source, self.search_dirs)
            _, row_shapes = read_header(self.files[0], list(self.param.top))
        return [(self.batch_size,) + shape for shape in row_shapes]

    @contextmanager
    def _naming_errors(self) -> Iterator[None]:
        """Data errors of the reader, prefixed with this layer's name."""
        try:
            yield
        except DataError as exc:
            raise DataError(f"layer '{self.name}': {exc.message}", hint=exc.hint) from exc

    def next_batch(self) -> List[np.ndarray]:
        """The next ``batch_size`` rows of every top, as arrays."""
        with self._naming_errors():
            if self._reader is None:
                rank, count = self.shard
                self._reader = CaffeHDF5Reader(
                    self.files, self.batch_size, list(self.param.top), self.shuffle,
                    rand_seed=1 if self.seed is None else self.seed, rank=rank, world_size=count,
                    dtype=np.float64 if self.dtype == torch.float64 else np.float32)
            return list(next(self._reader))

    def forward(self) -> Sequence[torch.Tensor]:
        return [torch.from_numpy(a).to(device=self.device, dtype=self.dtype) for a in self.next_batch()]

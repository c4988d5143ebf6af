"""Training batches read the way Caffe's ``HDF5Data`` layer reads them, with a restorable position.

Caffe reads the files named in the layer's ``source`` list in order, the rows of each file in order, and
wraps around at the end of the last file; with ``shuffle: true`` it shuffles the file order at every wrap
and the rows of each file when it loads it. :class:`HDF5Batches` keeps that order (shuffling from a
seeded generator of its own, since Caffe's RNG stream cannot be reproduced) and exposes its position as a
small dict, so a resumed run reads exactly the batches an uninterrupted run would have read; Caffe itself
restarts its data layer from the first row on resume.

Several processes (``rank`` of ``world``) walk the same global stream of ``batch_size`` rows and each takes
its contiguous ``batch_size / world`` slice, so together they see exactly the single-process batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from glrl.errors import DataError, TrainingError


@dataclass
class HDF5Input:
    """One ``HDF5Data`` layer of a net: its tops (dataset names), list file, batch size and shuffle flag."""

    layer: str
    tops: List[str]
    source: str
    batch_size: int
    shuffle: bool


def _in_phase(layer: Any, phase: str) -> bool:
    """Caffe's include/exclude rules, for the phase only (the only rule glrl's nets use)."""
    from glrl.caffe import pb

    phase_value = pb.Phase.Value(phase)
    if len(layer.include):
        return any(not rule.HasField("phase") or rule.phase == phase_value for rule in layer.include)
    return not any(rule.HasField("phase") and rule.phase == phase_value for rule in layer.exclude)


def hdf5_inputs(net_param: Any, phase: str = "TRAIN") -> List[HDF5Input]:
    """The ``HDF5Data`` layers of ``net_param`` (a ``caffe.NetParameter``) active in ``phase``."""
    found = []
    for layer in net_param.layer:
        if layer.type == "HDF5Data" and _in_phase(layer, phase):
            param = layer.hdf5_data_param
            found.append(HDF5Input(layer.name, list(layer.top), param.source, int(param.batch_size),
                                   bool(param.shuffle)))
    return found


def resolve_source(source: str, relative_to: Sequence[Path]) -> Path:
    """Find an HDF5 list file (or a file it names): as given, else under each of ``relative_to``."""
    path = Path(source).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path] + [Path(base) / path for base in relative_to]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise DataError(
        f"HDF5 file or list {source!r} not found (looked in {', '.join(str(c) for c in candidates)})",
        hint="build the training data first: glrl data build --scale S (or make data SCALE=S)",
    )


class HDF5Batches:
    """An endless iterator of batches ``{top: float32 array}`` in Caffe's HDF5Data order."""

    def __init__(
        self,
        list_file: Path,
        tops: Sequence[str],
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        import h5py

        if batch_size < 1:
            raise TrainingError(f"batch_size must be >= 1 (got {batch_size})", hint="fix the HDF5Data layer")
        if batch_size % world:
            raise TrainingError(
                f"the global batch of {batch_size} does not split evenly over {world} processes",
                hint="use a number of processes (GPUs) that divides the batch size",
            )
        self.list_file = Path(list_file)
        self.tops = list(tops)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world = world
        lines = [line.strip() for line in self.list_file.read_text().splitlines() if line.strip()]
        if not lines:
            raise DataError(f"HDF5 list file {self.list_file} names no files",
                            hint="rebuild the training data: glrl data build --scale S")
        self.files = [resolve_source(line, [self.list_file.parent]) for line in lines]
        self._handles = [h5py.File(str(path), "r") for path in self.files]
        self.rows: List[int] = []
        for path, handle in zip(self.files, self._handles):
            counts = set()
            for top in self.tops:
                if top not in handle:
                    raise DataError(f"{path} has no dataset {top!r} (the HDF5Data layer's top)",
                                    hint="rebuild the training data, or fix the layer's top names")
                counts.add(int(handle[top].shape[0]))
            if len(counts) != 1 or 0 in counts:
                raise DataError(f"{path}: datasets {self.tops} have row counts {sorted(counts)}",
                                hint="each HDF5 file needs the same non-zero number of rows in every dataset")
            self.rows.append(counts.pop())
        self._cached_index = -1
        self._cached: Dict[str, np.ndarray] = {}
        self.epoch = 0
        self.file_cursor = 0
        self.row_cursor = 0

    @property
    def total_rows(self) -> int:
        """Rows in one pass over all files (one epoch)."""
        return sum(self.rows)

    # -- position --------------------------------------------------------------------------------------------
    def state(self) -> Dict[str, Any]:
        """The reading position, JSON-serialisable (stored beside snapshots)."""
        return {"epoch": self.epoch, "file_cursor": self.file_cursor, "row_cursor": self.row_cursor,
                "seed": self.seed, "shuffle": self.shuffle, "total_rows": self.total_rows,
                "files": [path.name for path in self.files]}

    def set_state(self, state: Dict[str, Any]) -> None:
        """Continue from a position returned by :meth:`state` (on the same data)."""
        if state.get("total_rows") != self.total_rows or state.get("shuffle") != self.shuffle:
            raise TrainingError(
                "the training data changed since the snapshot was written "
                f"({state.get('total_rows')} rows then, {self.total_rows} now)",
                hint="resume with the data the run started with, or start a new run",
            )
        self.epoch = int(state["epoch"])
        self.file_cursor = int(state["file_cursor"])
        self.row_cursor = int(state["row_cursor"])
        self.seed = int(state["seed"])

    def skip_rows(self, count: int) -> None:
        """Advance by ``count`` rows of the global stream without reading them."""
        for _ in self._take(count):
            pass

    # -- reading ---------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Dict[str, np.ndarray]]:
        return self

    def __next__(self) -> Dict[str, np.ndarray]:
        positions = list(self._take(self.batch_size))
        share = self.batch_size // self.world
        mine = positions[self.rank * share:(self.rank + 1) * share]
        return {top: self._read(top, mine) for top in self.tops}

    def _file_order(self) -> List[int]:
        order = list(range(len(self.files)))
        if self.shuffle:
            order = [int(i) for i in np.random.default_rng([self.seed, self.epoch]).permutation(order)]
        return order

    def _row_order(self, file_index: int) -> Optional[np.ndarray]:
        if not self.shuffle:
            return None
        return np.random.default_rng([self.seed, self.epoch, file_index]).permutation(self.rows[file_index])

    def _take(self, count: int) -> Iterator[Tuple[int, int]]:
        """Yield ``count`` (file, row) positions and advance the cursor past them."""
        order = self._file_order()
        rows = self._row_order(order[self.file_cursor])
        for _ in range(count):
            file_index = order[self.file_cursor]
            row = self.row_cursor if rows is None else int(rows[self.row_cursor])
            yield file_index, row
            self.row_cursor += 1
            if self.row_cursor == self.rows[file_index]:
                self.row_cursor = 0
                self.file_cursor += 1
                if self.file_cursor == len(self.files):
                    self.file_cursor = 0
                    self.epoch += 1
                    order = self._file_order()
                rows = self._row_order(order[self.file_cursor])

    def _read(self, top: str, positions: Sequence[Tuple[int, int]]) -> np.ndarray:
        rows = [self._file_arrays(file_index)[top][row] for file_index, row in positions]
        return np.ascontiguousarray(np.stack(rows), dtype=np.float32)

    def _file_arrays(self, file_index: int) -> Dict[str, np.ndarray]:
        """The datasets of one file, loaded whole (as Caffe's HDF5Data loads the file it reads from)."""
        if self._cached_index != file_index:
            handle = self._handles[file_index]
            self._cached = {top: np.asarray(handle[top][()], dtype=np.float32) for top in self.tops}
            self._cached_index = file_index
        return self._cached

    def close(self) -> None:
        """Close the HDF5 files."""
        for handle in self._handles:
            handle.close()

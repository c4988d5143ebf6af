"""Training batches in exactly the order Caffe's ``HDF5Data`` layer reads them, with a restorable position.

Caffe reads the files named in the layer's ``source`` list one whole file at a time, hands out rows in
order and wraps around after the last file. With ``shuffle: true`` it shuffles the file order at set-up and
at every wrap, and a file's rows when it is loaded and whenever its last row is passed, all with
``std::random_shuffle`` over glibc ``rand()`` (seed 1), which :class:`glrl.data_prep.reader.GlibcRand`
reproduces; so these are Caffe's very batches. :class:`HDF5Batches` adds what Caffe lacks: its position
(the rand() state, the permutations and the cursors) as a JSON-able dict, so a resumed run reads exactly
the batches an uninterrupted run would have read (Caffe restarts its data layer on resume).

Several processes (``rank`` of ``world``) walk the same global stream of ``batch_size`` rows and each takes
its contiguous ``batch_size / world`` slice, so together they see exactly the single-process batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence

import numpy as np
from glrl.data_prep.reader import GlibcRand, load_file
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
    candidates = [path]
    if not path.is_absolute():
        candidates = [Path.cwd() / path] + [Path(base) / path for base in relative_to]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise DataError(
        f"HDF5 file or list {source!r} not found (looked in {', '.join(str(c) for c in candidates)})",
        hint="build the training data first: glrl data build --scale S (or make data SCALE=S)",
    )


class _RestorableRand(GlibcRand):
    """glibc ``rand()`` whose 34-word state can be saved and restored."""

    def state(self) -> List[int]:
        return [int(word) for word in self._r]

    def set_state(self, words: Sequence[int]) -> None:
        self._r = [int(word) for word in words]


class HDF5Batches:
    """An endless iterator of batches ``{top: float32 array}`` in Caffe's HDF5Data order."""

    def __init__(self, list_file: Path, tops: Sequence[str], batch_size: int, *, shuffle: bool = False,
                 rank: int = 0, world: int = 1) -> None:
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
        self.rank = rank
        self.world = world
        names = self.list_file.read_text().split()
        if not names:
            raise DataError(f"HDF5 list file {self.list_file} names no files",
                            hint="rebuild the training data: glrl data build --scale S")
        self.files = [resolve_source(name, [self.list_file.parent]) for name in names]
        self.rows: List[int] = []
        for path in self.files:
            with h5py.File(str(path), "r") as handle:
                missing = [top for top in self.tops if top not in handle]
                if missing:
                    raise DataError(f"{path} has no dataset {', '.join(missing)} (the HDF5Data layer's tops)",
                                    hint="rebuild the training data, or fix the layer's top names")
                self.rows.append(int(handle[self.tops[0]].shape[0]))
        self._rand = _RestorableRand(1)
        self.file_order = np.arange(len(self.files))
        if shuffle:
            self._rand.random_shuffle(self.file_order)
        self.file_cursor = 0
        self.rows_passed = 0
        self._load(int(self.file_order[0]))

    @property
    def total_rows(self) -> int:
        """Rows in one pass over all files (one epoch)."""
        return sum(self.rows)

    # -- position --------------------------------------------------------------------------------------------
    def state(self) -> Dict[str, Any]:
        """The reading position, JSON-serialisable (stored beside snapshots)."""
        return {"shuffle": self.shuffle, "total_rows": self.total_rows, "rows_passed": self.rows_passed,
                "files": [path.name for path in self.files], "rand": self._rand.state(),
                "file_order": [int(i) for i in self.file_order], "file_cursor": self.file_cursor,
                "row_order": [int(i) for i in self.row_order], "row_cursor": self.row_cursor}

    def set_state(self, state: Dict[str, Any]) -> None:
        """Continue from a position returned by :meth:`state` (on the same data)."""
        if state.get("total_rows") != self.total_rows or state.get("shuffle") != self.shuffle \
                or state.get("files") != [path.name for path in self.files]:
            raise TrainingError(
                "the training data changed since the snapshot was written "
                f"({state.get('total_rows')} rows then, {self.total_rows} now)",
                hint="resume with the data the run started with, or start a new run",
            )
        self._rand.set_state(state["rand"])
        self.file_order = np.asarray(state["file_order"], dtype=np.int64)
        self.file_cursor = int(state["file_cursor"])
        self._load(int(self.file_order[self.file_cursor]), shuffle_rows=False)
        self.row_order = np.asarray(state["row_order"], dtype=np.int64)
        self.row_cursor = int(state["row_cursor"])
        self.rows_passed = int(state["rows_passed"])

    def skip_rows(self, count: int) -> None:
        """Advance by ``count`` rows of the global stream without handing them out."""
        for _ in range(count):
            self._next_row()

    # -- reading ---------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Dict[str, np.ndarray]]:
        return self

    def __next__(self) -> Dict[str, np.ndarray]:
        share = self.batch_size // self.world
        first = self.rank * share
        picked: Dict[str, List[np.ndarray]] = {top: [] for top in self.tops}
        for index in range(self.batch_size):
            row = self.row_order[self.row_cursor]
            if first <= index < first + share:
                for top in self.tops:
                    picked[top].append(self._arrays[top][row])
            self._next_row()
        return {top: np.ascontiguousarray(np.stack(rows)) for top, rows in picked.items()}

    def _load(self, file_index: int, shuffle_rows: bool = True) -> None:
        """Caffe's LoadHDF5FileData: the whole file, a fresh row permutation (shuffled when asked)."""
        arrays = load_file(self.files[file_index], self.tops)
        self._arrays = dict(zip(self.tops, arrays))
        self.row_order = np.arange(arrays[0].shape[0])
        if self.shuffle and shuffle_rows:
            self._rand.random_shuffle(self.row_order)
        self.row_cursor = 0

    def _next_row(self) -> None:
        """Caffe's HDF5DataLayer::Next."""
        self.row_cursor += 1
        self.rows_passed += 1
        if self.row_cursor == len(self.row_order):
            if len(self.files) > 1:
                self.file_cursor += 1
                if self.file_cursor == len(self.files):
                    self.file_cursor = 0
                    if self.shuffle:
                        self._rand.random_shuffle(self.file_order)
                self._load(int(self.file_order[self.file_cursor]))
            self.row_cursor = 0
            if self.shuffle:
                self._rand.random_shuffle(self.row_order)

    def close(self) -> None:
        """Release the loaded file."""
        self._arrays = {}

"""Batches from Caffe HDF5 patch files in exactly the order Caffe 1.0's ``HDF5Data`` layer produces them.

Caffe's layer (``hdf5_data_layer.cpp``): read the list file (whitespace-separated paths); load one whole
file at a time; hand out its rows in order, a batch may span files; after the last row of the last file
start again at the first (wrap-around). With ``shuffle: true`` it shuffles the file order once at set-up
and again at every wrap-around, and the row order of a file each time it is loaded and each time its last
row is passed, all with ``std::random_shuffle``, i.e. libstdc++'s Fisher-Yates over glibc ``rand()``
(default seed 1). :class:`GlibcRand` reproduces that stream, so ``shuffle=True`` returns Caffe's very
batches as long as nothing else in the Caffe process calls ``rand()`` (a second shuffling data layer would).
In multi-GPU training (``world_size > 1``) solver ``rank`` keeps every row whose running offset modulo
``world_size`` equals ``rank`` (Caffe's ``Skip()``), so the ranks together see each row once.

:func:`torch_batches` wraps a reader in a background thread that yields (optionally pinned, device-resident)
torch tensors, so the GPU never waits on file loads.
"""
from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from glrl.errors import DataError

DEFAULT_TOPS = ("data", "label")


class GlibcRand:
    """glibc's ``rand()`` (the TYPE_3 additive feedback generator) after ``srand(seed)``."""

    MODULUS = 2147483647

    def __init__(self, seed: int = 1) -> None:
        seed = seed or 1  # glibc: srand(0) acts as srand(1)
        r = [seed]
        for _ in range(1, 31):
            r.append(16807 * r[-1] % self.MODULUS)
        r.extend(r[0:3])  # r[31..33] = r[0..2]
        self._r = r
        for _ in range(310):  # glibc discards the first 310 outputs
            self._step()

    def _step(self) -> int:
        value = (self._r[-31] + self._r[-3]) & 0xFFFFFFFF
        self._r.append(value)
        del self._r[0]
        return value

    def __call__(self) -> int:
        return self._step() >> 1

    def random_shuffle(self, items: np.ndarray) -> None:
        """libstdc++ ``std::random_shuffle(first, last)``: swap item i (1..n-1) with rand() % (i + 1)."""
        for i in range(1, len(items)):
            j = self() % (i + 1)
            if i != j:
                items[i], items[j] = items[j], items[i]


def read_list_file(path: Union[str, Path]) -> List[Path]:
    """The HDF5 paths of a Caffe list file, split on whitespace as Caffe's ``source_file >> line`` does."""
    try:
        names = Path(path).read_text(encoding="utf-8").split()
    except OSError as exc:
        raise DataError(f"cannot read the HDF5 list file {path}: {exc.strerror or exc}",
                        hint="build the patch set first: `glrl data build` (make data)") from exc
    if not names:
        raise DataError(f"the HDF5 list file {path} names no files", hint="rebuild it with `glrl data build`")
    return [Path(name) for name in names]


def load_file(path: Path, tops: Sequence[str]) -> Tuple[np.ndarray, ...]:
    """The whole datasets ``tops`` of one HDF5 file as float32 arrays (what Caffe loads into its blobs)."""
    import h5py

    try:
        with h5py.File(str(path), "r") as h5:
            missing = [top for top in tops if top not in h5]
            if missing:
                raise DataError(f"{path} has no dataset {', '.join(missing)} (it has {', '.join(h5)})",
                                hint="was it written by `glrl data build`? rebuild it")
            arrays = tuple(np.asarray(h5[top][...], dtype=np.float32) for top in tops)
    except OSError as exc:
        raise DataError(f"cannot read the HDF5 patch file {path}: {exc}",
                        hint="missing or damaged? rebuild the set: `glrl data build --force`") from exc
    rows = {array.shape[0] for array in arrays}
    if len(rows) != 1 or 0 in rows:
        raise DataError(f"{path}: datasets {', '.join(tops)} have unequal or zero row counts {sorted(rows)}",
                        hint="rebuild the set with `glrl data build --force`")
    return arrays


class CaffeHDF5Reader:
    """An endless iterator of batches (tuples of float32 numpy arrays, one per top) in Caffe's order."""

    def __init__(
        self,
        source: Union[str, Path, Sequence[Union[str, Path]]],
        batch_size: int,
        tops: Sequence[str] = DEFAULT_TOPS,
        shuffle: bool = False,
        rand_seed: int = 1,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise DataError(f"batch size must be positive, not {batch_size}")
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is not in 0..{world_size - 1}")
        self.files = read_list_file(source) if isinstance(source, (str, Path)) else [Path(p) for p in source]
        if not self.files:
            raise DataError("no HDF5 files given to the reader")
        self.batch_size = batch_size
        self.tops = tuple(tops)
        self.shuffle = shuffle
        self.rank, self.world_size = rank, world_size
        self._rand = GlibcRand(rand_seed)
        self._file_order = np.arange(len(self.files))
        if shuffle:
            self._rand.random_shuffle(self._file_order)
        self._current_file = 0
        self._offset = 0  # rows passed so far (Caffe's offset_), for the multi-GPU split
        self._load(self._file_order[0])

    def _load(self, index: int) -> None:
        self._blobs = load_file(self.files[index], self.tops)
        self._row_order = np.arange(self._blobs[0].shape[0])
        if self.shuffle:
            self._rand.random_shuffle(self._row_order)
        self._row = 0

    def _pass_rows(self, count: int) -> None:
        """Advance ``count`` rows in the current file; past its last row move on as Caffe's ``Next()``."""
        self._row += count
        self._offset += count
        if self._row == len(self._row_order):
            if len(self.files) > 1:
                self._current_file += 1
                if self._current_file == len(self.files):
                    self._current_file = 0
                    if self.shuffle:
                        self._rand.random_shuffle(self._file_order)
                self._load(self._file_order[self._current_file])
            self._row = 0
            if self.shuffle:
                self._rand.random_shuffle(self._row_order)

    def __iter__(self) -> "CaffeHDF5Reader":
        return self

    def __next__(self) -> Tuple[np.ndarray, ...]:
        parts: List[Tuple[np.ndarray, ...]] = []
        needed = self.batch_size
        while needed:
            left = len(self._row_order) - self._row
            first = (self.rank - self._offset) % self.world_size  # first row of ours in what is left
            available = max(0, -(-(left - first) // self.world_size))
            take = min(needed, available)
            if take:
                picks = self._row_order[self._row + first + self.world_size * np.arange(take)]
                parts.append(tuple(blob[picks] for blob in self._blobs))
                needed -= take
            self._pass_rows(first + self.world_size * (take - 1) + 1 if needed == 0 else left)
        if len(parts) == 1:
            return parts[0]
        return tuple(np.concatenate(columns) for columns in zip(*parts))

    def rows_per_epoch(self) -> int:
        """Rows in all listed files together (reads only the HDF5 headers)."""
        import h5py

        total = 0
        for path in self.files:
            with h5py.File(str(path), "r") as h5:
                total += h5[self.tops[0]].shape[0]
        return total


def torch_batches(
    reader: Iterator[Tuple[np.ndarray, ...]],
    device: Optional[str] = None,
    pin_memory: Optional[bool] = None,
    queue_size: int = 8,
) -> Iterator[Tuple["object", ...]]:
    """Torch tensors of ``reader``'s batches, prepared by a background thread ``queue_size`` batches ahead:
    pinned (by default when ``device`` is CUDA) and copied to ``device`` without blocking."""
    import torch

    target = torch.device(device) if device is not None else None
    pin = pin_memory if pin_memory is not None else (target is not None and target.type == "cuda")
    batches: "queue.Queue[object]" = queue.Queue(maxsize=queue_size)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in reader:
                tensors = tuple(torch.from_numpy(array) for array in batch)
                if pin:
                    tensors = tuple(t.pin_memory() for t in tensors)
                while not stop.is_set():
                    try:
                        batches.put(tensors, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            batches.put(exc)

    worker = threading.Thread(target=produce, name="glrl-batches", daemon=True)
    worker.start()
    try:
        while True:
            item = batches.get()
            if isinstance(item, BaseException):
                raise item
            if target is not None:
                item = tuple(t.to(target, non_blocking=pin) for t in item)
            yield item
    finally:
        stop.set()

"""The one reader of Caffe HDF5 patch sets: batches in exactly the order Caffe 1.0's ``HDF5Data`` layer
produces them, with a restorable position.

Caffe's layer (``hdf5_data_layer.cpp``): read the list file (whitespace-separated paths); load one whole
file at a time; hand out its rows in order, a batch may span files; after the last row of the last file
start again at the first (wrap-around). With ``shuffle: true`` it shuffles the file order once at set-up
and again at every wrap-around, and the row order of a file each time it is loaded and each time its last
row is passed, all with ``std::random_shuffle``, i.e. libstdc++'s Fisher-Yates over glibc ``rand()``
(Caffe never calls ``srand``, so the seed is 1). :class:`GlibcRand` reproduces that stream, so
``shuffle=True`` returns Caffe's very batches as long as nothing else in the Caffe process calls ``rand()``
(a second shuffling data layer would).

Paths are found as Caffe finds them, from the working directory; a relative path missing there is looked
up beside the list file (for its entries) and then in ``search_dirs`` (e.g. the prototxt's folder). Every
file's header is checked when the reader is made (each top present, numeric, equal non-zero row counts,
the same row shapes in every file), so a bad patch set fails at once with the file named.

:meth:`CaffeHDF5Reader.state` is the reading position (``rand()`` state, permutations, cursors) as a
JSON-able dict and :meth:`~CaffeHDF5Reader.set_state` continues from it, so a resumed training run reads
exactly the batches an uninterrupted one would (Caffe restarts its data layer on resume).

Several processes (``rank`` of ``world_size``) split the rows in one of two ways, both used:

* ``split="interleave"`` is what real Caffe does (``Skip()``): each rank keeps every row whose running
  offset modulo ``world_size`` equals ``rank`` and makes a batch of ``batch_size`` of them. The TorchNet
  ``HDF5Data`` layer's ``shard`` uses it, to behave like Caffe's multi-GPU data layer.
* ``split="slice"`` walks the single-process stream of ``batch_size``-row batches and each rank takes its
  contiguous ``batch_size / world_size`` slice, so N processes together see exactly the batch that one
  process would: the trainer uses it, which makes a 2-GPU run equal a 1-GPU run (Caffe's interleave
  cannot: its ranks' batches together are a different set of rows).

:func:`torch_batches` wraps a reader in a background thread that yields (optionally pinned, device-resident)
torch tensors, so the GPU never waits on file loads.
"""
from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from glrl.errors import DataError
from glrl.fsutil import find_file, path_candidates

DEFAULT_TOPS = ("data", "label")
SPLITS = ("interleave", "slice")
PathLike = Union[str, Path]
Shape = Tuple[int, ...]
BUILD_HINT = "build the patch set first: `glrl data build` (make data), or fix the list file"


class GlibcRand:
    """glibc's ``rand()`` (the TYPE_3 additive feedback generator) after ``srand(seed)``; its 34-word
    state can be saved and restored."""

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

    def state(self) -> List[int]:
        """The generator's state words (JSON-able)."""
        return [int(word) for word in self._r]

    def set_state(self, words: Sequence[int]) -> None:
        """Continue from a :meth:`state`."""
        self._r = [int(word) for word in words]


# -- finding and checking files ------------------------------------------------------------------------------
def read_list_file(path: PathLike) -> List[Path]:
    """The HDF5 paths of a Caffe list file, as written, split on whitespace (``source_file >> line``)."""
    try:
        names = Path(path).read_text(encoding="utf-8").split()
    except OSError as exc:
        raise DataError(f"cannot read the HDF5 list file {path}: {exc.strerror or exc}",
                        hint=BUILD_HINT) from exc
    except UnicodeDecodeError as exc:  # e.g. an .h5 file named where its list file belongs
        raise DataError(f"the HDF5 list file {path} is not text: an HDF5Data source names a list file "
                        "(one .h5 path per line), not an HDF5 file itself",
                        hint="write the .h5 paths into a .txt file and name that as the source") from exc
    if not names:
        raise DataError(f"the HDF5 list file {path} names no files", hint="rebuild it with `glrl data build`")
    return [Path(name) for name in names]


def resolve_source(source: PathLike, search_dirs: Sequence[PathLike] = ()) -> Path:
    """An HDF5 list file (or a file it names) found as :func:`glrl.fsutil.find_file` finds it, as an absolute path."""
    found = find_file(source, search_dirs)
    if found is None:
        looked = ", ".join(str(c) for c in path_candidates(source, search_dirs))
        raise DataError(f"HDF5 file or list {str(source)!r} not found (looked in {looked})",
                        hint="build the training data first: glrl data build --scale S "
                             "(or make data SCALE=S)")
    return found.resolve()


def list_files(source: PathLike, search_dirs: Sequence[PathLike] = ()) -> List[Path]:
    """The HDF5 files of the list file ``source`` (found in the working directory, else in ``search_dirs``);
    a relative entry is found in the working directory, else beside the list file, else in ``search_dirs``."""
    list_path = find_file(source, search_dirs)
    if list_path is None:
        looked = ", ".join(str(c) for c in path_candidates(source, search_dirs))
        raise DataError(f"cannot read the HDF5 list file {source}: not found (looked in {looked})",
                        hint=BUILD_HINT)
    files = []
    for name in read_list_file(list_path):
        found = find_file(name, [list_path.parent, *search_dirs])
        if found is None:
            looked = ", ".join(str(c) for c in path_candidates(name, [list_path.parent, *search_dirs]))
            raise DataError(f"the HDF5 file {name} named in {list_path} was not found (looked in {looked})",
                            hint=BUILD_HINT)
        files.append(found)
    return files


def read_header(path: Path, tops: Sequence[str]) -> Tuple[int, List[Shape]]:
    """The row count and the row shapes of the datasets ``tops`` of one HDF5 file, read from its header and
    checked: every top a numeric dataset with a row axis, all with the same non-zero number of rows."""
    import h5py

    try:
        with h5py.File(str(path), "r") as h5:
            datasets = []
            for top in tops:
                dataset = h5.get(top)
                if dataset is None or not hasattr(dataset, "shape"):
                    present = ", ".join(f"'{name}'" for name in sorted(h5.keys())) or "none"
                    raise DataError(f"HDF5 file {path} has no dataset '{top}' (it has {present})",
                                    hint="the tops of an HDF5Data layer name its datasets: fix the top "
                                         "names, or rebuild the set with `glrl data build --force`")
                if dataset.ndim < 1 or dataset.dtype.kind not in "fiu":
                    raise DataError(f"dataset '{top}' of {path} must be a numeric array with a first (row) "
                                    f"axis, got {dataset.dtype} of shape {dataset.shape}",
                                    hint="rebuild the set with `glrl data build --force`")
                datasets.append(dataset)
            rows = [int(dataset.shape[0]) for dataset in datasets]
            shapes = [tuple(int(d) for d in dataset.shape[1:]) for dataset in datasets]
    except OSError as exc:
        raise DataError(f"cannot read the HDF5 patch file {path}: {exc}",
                        hint="missing or damaged? rebuild the set: `glrl data build --force`") from exc
    if len(set(rows)) != 1 or 0 in rows:
        raise DataError(f"{path}: datasets {', '.join(tops)} have unequal or zero row counts {rows}",
                        hint="rebuild the set with `glrl data build --force`")
    return rows[0], shapes


def _load_arrays(path: Path, tops: Sequence[str], dtype: np.dtype) -> Tuple[np.ndarray, ...]:
    """The whole datasets ``tops`` of one HDF5 file in ``dtype`` (what Caffe loads into its blobs)."""
    import h5py

    try:
        with h5py.File(str(path), "r") as h5:
            return tuple(np.asarray(h5[top][...], dtype=dtype) for top in tops)
    except (OSError, KeyError) as exc:
        raise DataError(f"cannot read the HDF5 patch file {path}: {exc}",
                        hint="changed or damaged since the reader started? rebuild the set: "
                             "`glrl data build --force`") from exc


# -- the reader ----------------------------------------------------------------------------------------------
class CaffeHDF5Reader:
    """An endless iterator of batches (tuples of numpy arrays, one per top) in Caffe's order.

    ``source`` is a list file or a sequence of HDF5 paths; ``rand_seed`` seeds the ``rand()`` stream
    (Caffe's is 1); ``rank``/``world_size``/``split`` share the rows between processes (see the module
    docstring); ``search_dirs`` are where relative paths are looked up after the working directory;
    ``dtype`` is the arrays' type (Caffe's ``Dtype``).
    """

    def __init__(
        self,
        source: Union[PathLike, Sequence[PathLike]],
        batch_size: int,
        tops: Sequence[str] = DEFAULT_TOPS,
        shuffle: bool = False,
        rand_seed: int = 1,
        rank: int = 0,
        world_size: int = 1,
        *,
        split: str = "interleave",
        search_dirs: Sequence[PathLike] = (),
        dtype: Any = np.float32,
    ) -> None:
        if batch_size < 1:
            raise DataError(f"batch size must be positive, not {batch_size}",
                            hint="fix hdf5_data_param.batch_size")
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is not in 0..{world_size - 1}")
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}", hint=f"use one of {', '.join(SPLITS)}")
        if split == "slice" and batch_size % world_size:
            raise DataError(f"the batch of {batch_size} rows does not split evenly over {world_size} "
                            "processes",
                            hint="use a number of processes that divides the batch size")
        if isinstance(source, (str, Path)):
            self.files = list_files(source, search_dirs)
        else:
            self.files = [resolve_source(path, search_dirs) for path in source]
        if not self.files:
            raise DataError("no HDF5 files given to the reader")
        self.batch_size = batch_size
        self.tops = tuple(tops)
        self.shuffle = shuffle
        self.rank, self.world_size, self.split = rank, world_size, split
        self.dtype = np.dtype(dtype)
        headers = [read_header(path, self.tops) for path in self.files]
        self.rows = [rows for rows, _ in headers]
        self.row_shapes = headers[0][1]
        for path, (_, shapes) in zip(self.files[1:], headers[1:]):
            if shapes != self.row_shapes:
                raise DataError(f"rows of {path} have shapes {shapes}, but those of {self.files[0]} have "
                                f"{self.row_shapes}",
                                hint="every file of one list must hold rows of the same shapes")
        self._rand = GlibcRand(rand_seed)
        self.file_order = np.arange(len(self.files))
        if shuffle:
            self._rand.random_shuffle(self.file_order)
        self.file_cursor = 0
        self.rows_passed = 0  # Caffe's offset_: rows passed so far, for the interleaved split
        self._load(int(self.file_order[0]))

    @property
    def total_rows(self) -> int:
        """Rows in one pass over all files (one epoch)."""
        return sum(self.rows)

    # -- position ----------------------------------------------------------------------------------------
    def state(self) -> Dict[str, Any]:
        """The reading position, JSON-serialisable (stored beside training snapshots)."""
        return {"shuffle": self.shuffle, "total_rows": self.total_rows, "rows_passed": self.rows_passed,
                "files": [path.name for path in self.files], "rand": self._rand.state(),
                "file_order": [int(i) for i in self.file_order], "file_cursor": self.file_cursor,
                "row_order": [int(i) for i in self.row_order], "row_cursor": self.row_cursor}

    def set_state(self, state: Dict[str, Any]) -> None:
        """Continue from a position returned by :meth:`state` (on the same data)."""
        if state.get("total_rows") != self.total_rows or state.get("shuffle") != self.shuffle \
                or state.get("files") != [path.name for path in self.files]:
            raise DataError(
                "the HDF5 data changed since the reading position was saved "
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
        """Pass ``count`` rows of the single-process stream without handing them out (files whose rows are
        all skipped are not read)."""
        self._walk(count, keep=False)

    # -- reading -----------------------------------------------------------------------------------------
    def __iter__(self) -> "CaffeHDF5Reader":
        return self

    def __next__(self) -> Tuple[np.ndarray, ...]:
        if self.split == "slice":
            share = self.batch_size // self.world_size
            self._walk(self.rank * share, keep=False)
            parts = self._walk(share, keep=True)
            self._walk(self.batch_size - (self.rank + 1) * share, keep=False)
        else:
            parts = self._interleaved()
        if len(parts) == 1:
            return parts[0]
        return tuple(np.concatenate(columns) for columns in zip(*parts))

    def close(self) -> None:
        """Release the loaded file (it is read again if reading goes on)."""
        self._arrays = None

    def _load(self, file_index: int, shuffle_rows: bool = True) -> None:
        """Caffe's LoadHDF5FileData: a fresh row permutation (shuffled when asked); the rows themselves are
        read when the first of them is handed out."""
        self._file_index = file_index
        self._arrays: Optional[Tuple[np.ndarray, ...]] = None
        self.row_order = np.arange(self.rows[file_index])
        if self.shuffle and shuffle_rows:
            self._rand.random_shuffle(self.row_order)
        self.row_cursor = 0

    def _rows_of(self, picks: np.ndarray) -> Tuple[np.ndarray, ...]:
        if self._arrays is None:
            self._arrays = _load_arrays(self.files[self._file_index], self.tops, self.dtype)
        return tuple(array[picks] for array in self._arrays)

    def _pass_rows(self, count: int) -> None:
        """Advance ``count`` rows in the current file; past its last row move on as Caffe's ``Next()``."""
        self.row_cursor += count
        self.rows_passed += count
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

    def _walk(self, count: int, keep: bool) -> List[Tuple[np.ndarray, ...]]:
        """Pass the next ``count`` rows of the stream; their values, file by file, when ``keep``."""
        parts = []
        while count:
            take = min(count, len(self.row_order) - self.row_cursor)
            if keep:
                parts.append(self._rows_of(self.row_order[self.row_cursor:self.row_cursor + take]))
            self._pass_rows(take)
            count -= take
        return parts

    def _interleaved(self) -> List[Tuple[np.ndarray, ...]]:
        """The next batch of this rank's rows under Caffe's ``Skip()`` (every ``world_size``-th row)."""
        parts = []
        needed = self.batch_size
        while needed:
            left = len(self.row_order) - self.row_cursor
            first = (self.rank - self.rows_passed) % self.world_size  # first row of ours in what is left
            available = max(0, -(-(left - first) // self.world_size))
            take = min(needed, available)
            if take:
                parts.append(self._rows_of(self.row_order[self.row_cursor + first
                                                          + self.world_size * np.arange(take)]))
                needed -= take
            self._pass_rows(first + self.world_size * (take - 1) + 1 if needed == 0 else left)
        return parts


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

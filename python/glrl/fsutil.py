"""File-system helpers: atomic writes, so that nothing already written is lost and no truncated file
ever appears under a final name (a crash leaves the old file or no file, never half a new one); and a
folder lock, so that two processes never write one run folder at once."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import IO, Iterator, List, Optional, Sequence, Union

from glrl.errors import GlrlError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; folders are not locked there
    fcntl = None

PathLike = Union[str, "os.PathLike[str]"]


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A temporary file name beside ``path`` for a writer that needs a name rather than a stream (h5py,
    tarfile, Caffe's own writer): renamed over ``path`` when the block succeeds, removed when it fails."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=str(target.parent))
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file owner-only; give it the mode a plain open() would have
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    if mode not in ("w", "wb"):
        raise ValueError("atomic_write supports modes 'w' and 'wb'")
    with atomic_path(path) as tmp, open(tmp, mode) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def replace_folder(partial: Path, target: Path) -> None:
    """Put the finished folder ``partial`` in the place of ``target``: at every moment ``target`` is absent,
    the old complete folder or the new one; the old one is deleted once the new one is in place, and put
    back if it cannot be."""
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    if target.exists():
        os.replace(target, old)
    try:
        os.replace(partial, target)
    except OSError:
        if old.exists():
            os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def path_candidates(path: PathLike, search_dirs: Sequence[PathLike] = ()) -> List[Path]:
    """Where a file named in a Caffe file is looked for: an absolute path as it is; a relative one from the
    working directory (as Caffe opens it), then under each of ``search_dirs``."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return [path]
    return [path] + [Path(folder) / path for folder in search_dirs]


def find_file(path: PathLike, search_dirs: Sequence[PathLike] = ()) -> Optional[Path]:
    """The first of :func:`path_candidates` that is a file; None where none is."""
    return next((candidate for candidate in path_candidates(path, search_dirs) if candidate.is_file()), None)


def _read_umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


# read once at import: os.umask can only be read by setting it, which must not race with other threads
_UMASK = _read_umask()


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


class FolderInUse(GlrlError):
    """Another process holds the lock of a folder this process must write."""


LOCK_NAME = ".lock"


@contextlib.contextmanager
def folder_lock(folder: PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``folder`` (its ``.lock`` file) while the block runs.

    The lock is an ``flock`` on the open file, so the kernel releases it when the holder exits in any way
    (a crash or ``kill -9`` leaves no stale lock). The file records the holder's pid, host and start time,
    which the :class:`FolderInUse` error raised to a second process quotes. ``what`` names the folder's
    use in that message ("run folder", ...). A folder the lock had to create and that holds nothing else
    when the block ends (a command refused after taking the lock) is removed again.
    """
    target = Path(folder)
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    path = target / LOCK_NAME
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise FolderInUse(f"the {what} {target} is in use by {holder}",
                              hint="wait for it to finish or stop it (SIGTERM snapshots a training run), "
                                   "or use another folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime())}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            if created and [entry.name for entry in target.iterdir()] == [LOCK_NAME]:
                with contextlib.suppress(OSError):
                    path.unlink()
                    target.rmdir()
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

"""Errors that reach users: each names the thing that is wrong and what to do about it.

The CLI prints ``error: <message>`` and, when given, ``hint: <hint>`` and exits with status 2; no traceback.
Library callers can catch :class:`GlrlError` (or a subclass) to tell user errors from bugs.
"""
from __future__ import annotations

from typing import Optional


class GlrlError(Exception):
    """A problem with the user's input or environment, with a hint on how to fix it."""

    def __init__(self, message: str, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nhint: {self.hint}"


class DataError(GlrlError):
    """A dataset, image or patch file is missing, unreadable or corrupt."""


class FormatError(GlrlError):
    """A prototxt, caffemodel, solverstate or other Caffe file is malformed or does not fit."""


class ModelError(GlrlError):
    """A network or released model cannot be built, loaded or run as asked."""


class TrainingError(GlrlError):
    """A training run cannot go on (diverged, bad solver settings, nothing to resume from)."""


def from_os_error(exc: OSError) -> GlrlError:
    """A file-system failure (a folder that cannot be made, a file that cannot be written or read) as a user
    error naming the path: the command-line tool's last line of defence against a traceback."""
    path = exc.filename
    reason = exc.strerror or str(exc)
    if isinstance(exc, FileExistsError):
        hint = "a file stands where a folder is needed: choose another path or move the file"
    elif isinstance(exc, NotADirectoryError):
        hint = "part of the path is a file, not a folder: choose another path"
    elif isinstance(exc, IsADirectoryError):
        hint = "that is a folder: name a file (in it, or elsewhere)"
    elif isinstance(exc, PermissionError):
        hint = "choose a location you can write to (or read, for an input)"
    elif isinstance(exc, FileNotFoundError):
        hint = "check the path"
    else:
        hint = "check the path, the free space and the permissions"
    return GlrlError(f"{path}: {reason}" if path is not None else reason, hint=hint)

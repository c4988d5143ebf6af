"""Ctrl-C (SIGINT) and SIGTERM (``timeout``, ``kill``) as a request to stop at the next safe point: training
stops after the iteration in hand and snapshots, a data build after the image or file in hand and removes its
partial folder.

The handler only records the request; the long-running loop looks at it where stopping is safe. A
KeyboardInterrupt raised by the handler itself lands wherever the main thread happens to be, inside a process
pool's own bookkeeping, say, and can leave the command waiting for good (CI once saw a SIGTERM'd data build
not ended after 60 s). A second signal does raise at once: whoever asks twice wants out now.
"""
from __future__ import annotations

import signal
from typing import Any, Dict, Optional


class StopSignals:
    """While entered, SIGINT and SIGTERM set :attr:`received` (only the main thread can take signals;
    elsewhere nothing changes); the old handlers come back on exit."""

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def raise_if_received(self) -> None:
        """The safe point: raise KeyboardInterrupt if a stop was asked for."""
        if self.received is not None:
            raise KeyboardInterrupt

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

"""Ctrl-C and SIGTERM ask a long command to stop at its next safe point; asked twice, it stops at once."""
import signal

import pytest

from glrl.signals import StopSignals


def test_a_signal_is_recorded_and_raised_only_at_the_safe_point():
    with StopSignals() as stop:
        stop.raise_if_received()  # nothing asked yet
        signal.raise_signal(signal.SIGTERM)  # recorded, not raised wherever the main thread happened to be
        assert stop.received == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            stop.raise_if_received()


def test_a_second_signal_stops_at_once_and_the_old_handlers_come_back():
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    with StopSignals():
        signal.raise_signal(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert {signum: signal.getsignal(signum) for signum in before} == before

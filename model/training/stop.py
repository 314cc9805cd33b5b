"""Stopping a training run on a signal without losing its steps.

A scheduler, a pre-empted GPU lease or `timeout` stops a run with SIGTERM, and a
person with Ctrl-C (SIGINT). Either would lose every step since the last val
check. `stop_on_signals` turns the first such signal into a request that the
training loop honours at its next step boundary: it saves the exact state
(weights, optimizer moments, step) and returns, so `--resume` continues the run
as if it had never stopped. A second signal acts as it normally would.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def stop_on_signals(signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> Iterator[threading.Event]:
    """Yield an event that the first of `signals` sets; the previous handlers come back then and on exit."""
    requested = threading.Event()
    previous = {sig: signal.getsignal(sig) for sig in signals}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def request_stop(signum: int, _frame) -> None:
        logger.warning(
            "%s: the run saves its state after this step and stops; send it again to stop at once",
            signal.Signals(signum).name,
        )
        requested.set()
        restore()

    for sig in signals:
        signal.signal(sig, request_stop)
    try:
        yield requested
    finally:
        restore()

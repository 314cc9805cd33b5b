"""Stopping a training run on a signal without losing its steps.

A scheduler, a pre-empted cloud machine or `timeout` stops a run with SIGTERM, and a
person with Ctrl-C (SIGINT). Either would lose every step since the last val
check. `stop_on_signals` turns the first such signal into a request that the
training loop honours at its next step boundary: it saves the exact state
(weights, optimizer moments, step) and returns, so `--resume` continues the run
as if it had never stopped. A second signal acts as it normally would, except
while a checkpoint is being written (`signals_deferred`): it waits until the
files are whole.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
EXIT_STOPPED = 75  # sysexits' EX_TEMPFAIL: stopped on a signal with its state saved; --resume continues


@contextmanager
def stop_on_signals(signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> Iterator[threading.Event]:
    """Yield an event that the first of `signals` sets; the previous handlers come back then and on exit.

    Signals the process ignores (a background job's SIGINT) stay ignored, and off the main
    thread, where Python cannot install handlers, the event is simply never set.
    """
    requested = threading.Event()
    previous = _handled(signals)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def request_stop(signum: int, _frame) -> None:
        # handlers back first: Event.set takes a lock, and a second signal re-entering this
        # handler inside it would deadlock (worker.loop.StopFlag avoids the lock instead)
        restore()
        requested.set()
        logger.warning(
            "%s: the run saves its state after this step and stops; send it again to stop at once",
            signal.Signals(signum).name,
        )

    for sig in previous:
        signal.signal(sig, request_stop)
    try:
        yield requested
    finally:
        restore()


@contextmanager
def signals_deferred(signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Hold `signals` back while files are written, so that none is left half-written; they act after.

    The handlers are swapped, not the signal mask: torch's threads would take a masked signal.
    """
    held: list[int] = []
    swapped = _handled(signals)
    for sig in swapped:
        signal.signal(sig, lambda signum, _frame: held.append(signum))
    try:
        yield
    finally:
        for sig, handler in swapped.items():
            signal.signal(sig, handler)
        for signum in held:
            signal.raise_signal(signum)


def _handled(signals: tuple[signal.Signals, ...]) -> dict[signal.Signals, object]:
    """The current handlers of those `signals` this thread may replace: main thread only, none ignored or set from C."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: handler for sig in signals if (handler := signal.getsignal(sig)) not in (signal.SIG_IGN, None)}

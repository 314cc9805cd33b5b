"""The stages of a batch (the README's data-flow diagram) and their timing: one owner for the stage names.

Each value is the ``stage`` label of the ``uapt_stage_seconds`` metric, so the
names are part of the worker's monitoring interface and must not change.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from enum import StrEnum


class Stage(StrEnum):
    """A timed step of one batch; a StrEnum, so ``str(stage)`` is the metric label itself."""

    PARSE = "parse"
    IMAGE = "image"
    ENCODE = "encode"  # the frozen image encoder, run while the batch before generates
    PROFILE_READ = "profile_read"
    GENERATE = "generate"
    PRODUCE = "produce"
    PROFILE_WRITE = "profile_write"


@contextmanager
def timed(into: MutableMapping[Stage, float], stage: Stage) -> Iterator[None]:
    """Add the wall time of the ``with`` body to ``into[stage]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        into[stage] = into.get(stage, 0.0) + time.perf_counter() - start

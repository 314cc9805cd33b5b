"""The worker package's own errors, under one root, split by what the operator must do about them.

- `ConfigurationError`: a setting or environment that can never work; the command
  line prints one line and exits 2.
- `EventError` (worker/schemas.py): bad input; the record is dead-lettered and the stream goes on.
Any other exception is a bug: it keeps its traceback and exits 1.
"""

from __future__ import annotations


class WorkerError(Exception):
    """Root of every error the worker package raises on purpose."""


class ConfigurationError(WorkerError):
    """A configuration the worker cannot run with; the message says which setting and why."""

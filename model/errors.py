"""The root of the model package's own errors, so callers catch these and nothing wider.

Each module names its errors (`ConfigError`, `CheckpointError`, `DatasetError`, ...)
under `ModelError`. A command line turns a `ModelError` into one line and an exit;
any other exception, a plain `ValueError` from a library included, is a bug and
keeps its traceback. This module imports nothing from `model`, so every module
of the package, the light config and the network core among them, can use it.
"""

from __future__ import annotations


class ModelError(ValueError):
    """A problem with the model's inputs, files or settings that the message explains; not a bug.

    A `ValueError` so that callers written before this root existed still catch it.
    """

"""The profiles package's own errors, under one root, so callers catch these and nothing wider.

A command line turns a `ProfilesError` into one line and an exit; any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class ProfilesError(Exception):
    """Root of every error the profiles package raises on purpose."""


class DatabaseUnavailable(ProfilesError):
    """The database could not be reached, and the caller chose to stop waiting for it."""


class DatabaseMisconfigured(ProfilesError):
    """The database url can never work as written (its host name does not resolve); not an outage."""

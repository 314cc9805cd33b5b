"""Why an event went to the dead-letter topic: one owner for the reason labels.

Each value is the ``reason`` header of a dead letter and the ``reason`` label of
``uapt_failures_total``, so the names are part of the worker's monitoring interface
(the alert rules in deploy/ match on them) and must not change.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """A dead-letter reason; a StrEnum, so ``str(reason)`` is the header and label itself."""

    # the message itself (worker/schemas.py)
    EMPTY = "empty"
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    TOO_DEEP = "too_deep"  # JSON nested past the parser's recursion limit
    NOT_OBJECT = "not_object"
    UNKNOWN_SCHEMA = "unknown_schema"
    INVALID_EVENT = "invalid_event"  # an EventError that names no narrower reason
    INVALID_FIELD = "invalid_field"
    INVALID_TEXT = "invalid_text"
    INVALID_FORGET = "invalid_forget"
    # the image (worker/images.py)
    IMAGE_INVALID = "image_invalid"
    IMAGE_REFUSED = "image_refused"  # a guard (scheme, address, path, size) stopped it before any fetch
    IMAGE_FETCH = "image_fetch"
    IMAGE_DECODE = "image_decode"
    # a batch-level step or a bug (worker/processing.py)
    PROFILE_ERROR = "profile_error"
    MODEL_ERROR = "model_error"
    INTERNAL_ERROR = "internal_error"

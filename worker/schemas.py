"""Versioned event schemas: ``uapt.post/1`` and ``uapt.forget/1`` in, ``uapt.caption/1`` out (the README's event formats).

``uapt.caption/1`` gained optional fields, not a version: ``abstained``, ``reason``,
``ood_score`` and ``confidence`` on the event, ``confidence`` on each caption. Each has a
default (false or null), so an event written before them still parses, and a reader
that ignores unknown fields still reads every field it knew. What is new to such a
reader is an event whose ``captions`` list is empty: an abstained post (README, events).

`parse_event` turns raw Kafka bytes into a `PostEvent` or a `ForgetEvent` (a
control event: erase this user's profile) or raises an `EventError`
whose ``reason`` is a short, stable label (it names the dead-letter header and
the failure metric). Id and text rules are the profile store's own (`check_id`,
`validate_post`), so an event the worker accepts is always one the store can fold.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from profiles import InvalidPost, Post, check_id, validate_post
from worker.errors import WorkerError
from worker.reasons import Reason

POST_SCHEMA = "uapt.post/1"
FORGET_SCHEMA = "uapt.forget/1"
CAPTION_SCHEMA = "uapt.caption/1"


class EventError(WorkerError):
    """An event that cannot be captioned; ``reason`` labels it for the DLQ header and metrics."""

    reason = Reason.INVALID_EVENT

    def __init__(self, message: str, *, reason: Reason | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class UnknownSchemaError(EventError):
    reason = Reason.UNKNOWN_SCHEMA


def _checked_id(value: str, info: ValidationInfo) -> str:
    """The store's id rules, applied here so a bad id is a bad event (invalid_field), not a failed fold."""
    return check_id(value, info.field_name or "id")


Identifier = Annotated[StrictStr, AfterValidator(_checked_id)]


class ImageRef(BaseModel):
    """Where the image is: exactly one of an http(s) URL, base64 bytes, or a path under the image root."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    url: StrictStr | None = None
    b64: StrictStr | None = None
    path: StrictStr | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageRef:
        given = [name for name in ("url", "b64", "path") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"image needs exactly one of url, b64, path; got {given or 'none'}")
        return self


class PostEvent(BaseModel):
    """A new post: the image to caption, whose it is, and (maybe) the words its author wrote."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)
    schema_: Literal["uapt.post/1"] = Field(alias="schema")
    post_id: Identifier
    user_id: Identifier
    image: ImageRef
    text: StrictStr = ""
    num_captions: Annotated[int, Field(strict=True, ge=1)] | None = None


class ForgetEvent(BaseModel):
    """A request to erase a user's profile, published with key = user_id so it lands in order with their posts."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)
    schema_: Literal["uapt.forget/1"] = Field(alias="schema")
    user_id: Identifier


class CaptionOut(BaseModel):
    text: str
    score: float
    confidence: float | None = None  # probability it is right (model.guidance.confidence); null: no OOD file


class CaptionEvent(BaseModel):
    """What the worker publishes for each accepted post."""

    model_config = ConfigDict(populate_by_name=True)
    schema_: Literal["uapt.caption/1"] = Field(default=CAPTION_SCHEMA, alias="schema")
    post_id: str
    user_id: str
    captions: list[CaptionOut]
    keywords: list[str]
    model: str
    latency_ms: float
    abstained: bool = False  # true: captions is empty and reason says why
    reason: str | None = None  # one of model.guidance.abstention.REASONS when abstained
    ood_score: float | None = None  # the image's (model.guidance.ood); null: no OOD file
    confidence: float | None = None  # the best caption's, kept when abstained

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode("utf-8")


def parse_event(raw: bytes | None) -> PostEvent | ForgetEvent:
    """Decode, schema-check and text-check one input message; raises EventError on any fault."""
    if not raw:
        raise EventError("empty message", reason=Reason.EMPTY)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventError(f"message is not UTF-8 ({exc.reason} at byte {exc.start})", reason=Reason.NOT_UTF8) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EventError(f"message is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", reason=Reason.NOT_JSON) from None
    except RecursionError:
        raise EventError("message is JSON nested too deeply to parse", reason=Reason.TOO_DEEP) from None
    except ValueError as exc:  # e.g. an integer past Python's digit limit
        raise EventError(f"message is not usable JSON: {exc}", reason=Reason.NOT_JSON) from None
    if not isinstance(document, dict):
        raise EventError(f"message is JSON {type(document).__name__}, not an object", reason=Reason.NOT_OBJECT)
    version = document.get("schema")
    if version == FORGET_SCHEMA:
        try:
            return ForgetEvent.model_validate(document)
        except ValidationError as exc:
            raise EventError(_first_error(exc), reason=Reason.INVALID_FORGET) from None
    if version != POST_SCHEMA:
        raise UnknownSchemaError(f"schema {version!r} is not supported (expected {POST_SCHEMA!r} or {FORGET_SCHEMA!r})")
    try:
        event = PostEvent.model_validate(document)
    except ValidationError as exc:
        raise EventError(_first_error(exc), reason=Reason.INVALID_FIELD) from None
    if event.text:
        try:
            validate_post(Post(post_id=event.post_id, user_id=event.user_id, text=event.text))
        except InvalidPost as exc:
            raise EventError(f"text: {exc}", reason=Reason.INVALID_TEXT) from None
    return event


def _first_error(exc: ValidationError) -> str:
    """One readable line naming the field at fault (the full list can be long and echo the input)."""
    errors = exc.errors(include_input=False, include_url=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "event"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"

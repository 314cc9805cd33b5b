"""Building ``uapt.post/1`` and ``uapt.forget/1`` events on the producer side (publish command, demo, benchmark, tests)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from worker.schemas import FORGET_SCHEMA, POST_SCHEMA


def post_event(
    post_id: str,
    user_id: str,
    *,
    image_bytes: bytes | None = None,
    image_url: str | None = None,
    image_path: str | None = None,
    text: str = "",
    num_captions: int | None = None,
) -> bytes:
    """Encode one new-post event; give exactly one of the three image forms."""
    forms = {"b64": image_bytes, "url": image_url, "path": image_path}
    given = [name for name, value in forms.items() if value is not None]
    if len(given) != 1:
        raise ValueError(f"post_event needs exactly one of image_bytes, image_url, image_path; got {given or 'none'}")
    image = {"b64": base64.b64encode(image_bytes).decode("ascii")} if image_bytes is not None else {given[0]: forms[given[0]]}
    event: dict = {"schema": POST_SCHEMA, "post_id": post_id, "user_id": user_id, "image": image}
    if text:
        event["text"] = text
    if num_captions is not None:
        event["num_captions"] = num_captions
    return json.dumps(event, ensure_ascii=False).encode("utf-8")


def forget_event(user_id: str) -> bytes:
    """Encode a request to erase ``user_id``'s profile; publish it with key = user_id, like their posts."""
    return json.dumps({"schema": FORGET_SCHEMA, "user_id": user_id}, ensure_ascii=False).encode("utf-8")


def image_reference(argument: str) -> dict[str, str | bytes]:
    """Turn a command-line IMAGE (http(s) URL or local file) into post_event keyword arguments."""
    if argument.startswith(("http://", "https://")):
        return {"image_url": argument}
    path = Path(argument)
    if not path.is_file():
        raise ValueError(f"IMAGE {argument!r} is neither an http(s) URL nor a readable file")
    return {"image_bytes": path.read_bytes()}

"""The training-data format: one JSONL line per post, images beside it.

A dataset is a folder holding ``posts.jsonl`` and the image files. Each line is
one JSON object::

    {"post_id": "p1", "user_id": "u1", "image": "images/p1.jpg",
     "text": "the caption the user wrote", "split": "train"}

- ``post_id``: unique across the file; ``user_id``: who posted it;
- ``image``: a path relative to the dataset folder (no absolute paths, no ``..``);
- ``text``: the user's own caption, non-empty;
- ``split``: ``train``, ``val`` or ``test``. Keywords (user context) are built
  from ``train`` posts only, so every user in val/test should have train posts.
- ``labels`` (optional): the image's ground truth (scene, objects, colours, count),
  which the evaluator uses to score whether a caption names what the image shows.

Other keys are allowed and ignored, so real exports can carry extra metadata.
`check_dataset` reports every bad line with its number; `load_posts` refuses a
dataset with problems.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image

from model.errors import ModelError

POSTS_FILE = "posts.jsonl"
SYNTH_FILE = "synth.json"  # written by model.data.synth beside posts.jsonl
SPLITS = ("train", "val", "test")
REQUIRED_FIELDS = ("post_id", "user_id", "image", "text", "split")


class DatasetError(ModelError):
    """The dataset folder or one of its lines is invalid; the message says where."""


@dataclass(frozen=True)
class PostRecord:
    """One post of a dataset, with the image path resolved to an absolute path."""

    post_id: str
    user_id: str
    image: Path
    text: str
    split: str
    labels: dict[str, Any] | None = None  # optional ground truth of the image (docs/DATASET.md)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset line (line 0 means the file itself)."""

    line: int
    message: str

    def __str__(self) -> str:
        where = POSTS_FILE if self.line == 0 else f"{POSTS_FILE}:{self.line}"
        return f"{where}: {self.message}"


def _posts_path(data_dir: Path) -> Path:
    path = Path(data_dir) / POSTS_FILE
    if not path.is_file():
        raise DatasetError(f"data_dir {data_dir}: no {POSTS_FILE} in it")
    return path


def _parse_line(raw: str, lineno: int, data_dir: Path) -> tuple[PostRecord | None, list[Problem]]:
    """Parse one line into a record, or say everything wrong with it."""
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, [Problem(lineno, f"malformed JSON ({exc.msg} at column {exc.colno})")]
    if not isinstance(obj, dict):
        return None, [Problem(lineno, f"expected a JSON object, got {type(obj).__name__}")]
    problems = []
    for field in REQUIRED_FIELDS:
        value = obj.get(field)
        if not isinstance(value, str) or not value.strip():
            problems.append(Problem(lineno, f"field '{field}' missing or not a non-empty string"))
    if problems:
        return None, problems
    if obj["split"] not in SPLITS:
        problems.append(Problem(lineno, f"split '{obj['split']}' is not one of {', '.join(SPLITS)}"))
    labels = obj.get("labels")
    if labels is not None and not isinstance(labels, dict):
        problems.append(Problem(lineno, f"field 'labels' must be a JSON object when present, got {type(labels).__name__}"))
    rel = PurePosixPath(obj["image"])
    if rel.is_absolute() or ".." in rel.parts:
        problems.append(Problem(lineno, f"image '{obj['image']}' must be a path inside the dataset folder"))
        return None, problems
    record = PostRecord(
        post_id=obj["post_id"],
        user_id=obj["user_id"],
        image=(Path(data_dir) / rel).resolve(),
        text=obj["text"],
        split=obj["split"],
        labels=labels if isinstance(labels, dict) else None,
    )
    return (None if problems else record), problems


def _read(data_dir: Path, *, verify_images: bool, require_images: bool = True) -> tuple[list[PostRecord], list[Problem]]:
    path = _posts_path(data_dir)
    records: list[PostRecord] = []
    problems: list[Problem] = []
    first_seen: dict[str, int] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        record, line_problems = _parse_line(raw, lineno, data_dir)
        problems.extend(line_problems)
        if record is None:
            continue
        if record.post_id in first_seen:
            problems.append(
                Problem(lineno, f"duplicate post_id '{record.post_id}' (first on line {first_seen[record.post_id]})")
            )
            continue
        first_seen[record.post_id] = lineno
        image_problem = _image_problem(record.image, verify_images) if require_images else None
        if image_problem:
            problems.append(Problem(lineno, image_problem))
            continue
        records.append(record)
    if not records and not problems:
        problems.append(Problem(0, "no posts"))
    return records, problems


def _image_problem(path: Path, verify: bool) -> str | None:
    if not path.is_file():
        return f"image file {path} not found"
    if verify:
        try:
            with Image.open(path) as image:
                image.verify()
        except Exception as exc:  # PIL raises many types for broken files
            return f"image file {path} is not a readable image ({exc})"
    return None


def check_dataset(data_dir: str | Path, *, verify_images: bool = True) -> tuple[list[PostRecord], list[Problem]]:
    """Validate every line; returns the good records and all problems found.

    Besides per-line problems, warns (line 0) about users that have val/test
    posts but no train posts, since they get no keywords.
    """
    records, problems = _read(Path(data_dir), verify_images=verify_images)
    train_users = {r.user_id for r in records if r.split == "train"}
    for user in sorted({r.user_id for r in records if r.split != "train"} - train_users):
        problems.append(Problem(0, f"user '{user}' has val/test posts but no train posts (no keywords)"))
    return records, problems


def load_posts(data_dir: str | Path, *, require_images: bool = True) -> list[PostRecord]:
    """All posts of a dataset, in file order; raises DatasetError naming the first problems.

    `require_images=False` is for a dataset whose images were drawn only in part, on
    purpose (`write_dataset`'s `image_splits`): its missing image files are not a problem.
    """
    records, problems = _read(Path(data_dir), verify_images=False, require_images=require_images)
    if problems:
        shown = "; ".join(str(p) for p in problems[:3])
        more = f" (and {len(problems) - 3} more; run 'uapt data check')" if len(problems) > 3 else ""
        raise DatasetError(f"{data_dir}: {shown}{more}")
    return records


def split_for(index: int, posts_per_user: int) -> str:
    """Per-user chronological split of a user's index-th oldest post: the last ~15% test, the ~15% before it val.

    Used by the synthetic generator and by `uapt data import` where the input gives no split.

    Users with fewer than 3 posts keep everything in train, since a user with no
    train posts has no profile.
    """
    n_eval = max(1, round(posts_per_user * 0.15)) if posts_per_user >= 3 else 0
    if index >= posts_per_user - n_eval:
        return "test"
    if index >= posts_per_user - 2 * n_eval:
        return "val"
    return "train"


def synth_arguments(data_dir: str | Path) -> dict[str, int] | None:
    """The `uapt data synth` arguments that made this dataset (its synth.json), or None for other data."""
    path = Path(data_dir) / SYNTH_FILE
    if not path.is_file():
        return None
    try:
        return {key: int(value) for key, value in json.loads(path.read_text(encoding="utf-8")).items()}
    except (ValueError, AttributeError) as exc:
        raise DatasetError(f"{path}: not a JSON object of integers ({exc})") from exc


def dataset_identity(records: Sequence[PostRecord]) -> dict[str, Any]:
    """Users, posts, posts per split, and a fingerprint that tells one dataset from another.

    Neither feature cache keys a dataset (the image cache keys each file's bytes, the store
    each post's image file), so the fingerprint is made here: the SHA-256 of every post's id,
    user, split, text, labels and image file name, in post-id order. It reads no image
    bytes and no folder path, so a dataset copied to another machine, or written again by
    `uapt data synth` with the same arguments, keeps it.
    """
    digest = hashlib.sha256()
    for r in sorted(records, key=lambda r: r.post_id):
        line = [r.post_id, r.user_id, r.split, r.text, r.labels, r.image.name]
        digest.update(json.dumps(line, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n")
    return {
        "users": len({r.user_id for r in records}),
        "posts": len(records),
        "splits": {split: sum(r.split == split for r in records) for split in SPLITS},
        "fingerprint": digest.hexdigest()[:16],
    }

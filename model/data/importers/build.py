"""Checked candidates -> a dataset folder: splits, images, posts.jsonl and the import report.

Checks, each a reason in the report: a post id seen before (``duplicate_post_id``), an
empty text or id, a split other than train/val/test, a local image that is missing
(``image_missing``) or not a readable image within the pixel limit (``image_unreadable``),
and a URL the guards refuse or that cannot be fetched or decoded (`fetch.REASONS`).

Splits where the input names none (``split_rule``):
- ``time`` (default): per user, posts ordered by (time, post id); the newest ~15% test,
  the ~15% before them val, the rest train (`dataset.split_for`), as the worker sees a
  user: history first, new posts after.
- ``hash``: by a SHA-1 of the post id (`csmn.hashed_share`): below 0.70 train, below 0.85
  val, else test; for inputs without trustworthy times.
Both are deterministic: the same rows give the same splits, in any order.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from model.data.dataset import POSTS_FILE, SPLITS, split_for
from model.data.importers.csmn import hashed_share
from model.data.importers.fetch import FetchItem, fetch_to_shards
from model.data.importers.rows import BadRow, Candidate, is_url
from model.image_guards import ALLOWED_FORMATS
from model.image_policy import ImagePolicy

REPORT_DIR = "import"
SPLIT_RULES = ("time", "hash")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class ImportOptions:
    split_rule: str = "time"
    shard_size: int = 1000
    workers: int = 16
    policy: ImagePolicy = field(default_factory=ImagePolicy)

    def __post_init__(self) -> None:
        if self.split_rule not in SPLIT_RULES:
            raise ValueError(f"split_rule must be one of {', '.join(SPLIT_RULES)}, got {self.split_rule!r}")


@dataclass(frozen=True)
class ImportSummary:
    rows_read: int
    imported: int
    bad: int
    bad_by_reason: dict[str, int]
    splits: dict[str, int]

    def to_dict(self) -> dict:
        return dict(vars(self))


def image_key(post_id: str) -> str:
    """A file and webdataset key for a post: readable, no dots, unique by a hash of the id."""
    digest = hashlib.sha1(post_id.encode("utf-8")).hexdigest()[:12]
    return f"{_UNSAFE.sub('_', post_id)[:80]}-{digest}"


def build_dataset(items: Iterable[Candidate | BadRow], out_dir: Path, *, base: Path, options: ImportOptions) -> ImportSummary:
    """Write `out_dir`/posts.jsonl, its images and `out_dir`/import/{summary.json,bad_rows.jsonl}.

    `base` is the folder relative image paths are read from. Rerunning into the same folder
    resumes: fetched shards are kept, linked images are not copied again.
    """
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    bad: list[BadRow] = []
    posts: list[Candidate] = []
    seen: dict[str, str] = {}
    rows_read = 0
    for item in items:
        rows_read += 1
        problem = item if isinstance(item, BadRow) else _problem(item, seen)
        if problem is not None:
            bad.append(problem)
            continue
        seen[item.post_id] = item.where
        posts.append(item)
    images: dict[str, str] = {}
    fetches: list[FetchItem] = []
    for post in posts:
        if is_url(post.image):
            meta = {"post_id": post.post_id, "user_id": post.user_id, "url": post.image}
            fetches.append(FetchItem(image_key(post.post_id), post.image, meta))
            continue
        linked = _link_image(post, base, out_dir, options.policy.max_pixels)
        if isinstance(linked, BadRow):
            bad.append(linked)
        else:
            images[post.post_id] = linked
    if fetches:
        outcomes = fetch_to_shards(fetches, out_dir, options.policy, shard_size=options.shard_size, workers=options.workers)
        by_key = {image_key(p.post_id): p for p in posts if is_url(p.image)}
        for key, outcome in outcomes.items():
            post = by_key[key]
            if outcome.path is None:
                bad.append(BadRow(post.where, outcome.reason or "image_fetch", outcome.detail or "", post.post_id))
            else:
                images[post.post_id] = outcome.path
    posts = [p for p in posts if p.post_id in images]  # splits count only the posts that stay
    splits = _splits(posts, options.split_rule)
    lines = []
    counts: Counter[str] = Counter()
    for post in posts:
        record = {"post_id": post.post_id, "user_id": post.user_id, "image": images[post.post_id],
                  "text": post.text, "split": splits[post.post_id]}
        if post.time is not None:
            record["time"] = post.time
        record.update(post.extra or {})
        lines.append(json.dumps(record, ensure_ascii=False))
        counts[record["split"]] += 1
    (out_dir / POSTS_FILE).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    summary = ImportSummary(
        rows_read=rows_read,
        imported=len(lines),
        bad=len(bad),
        bad_by_reason=dict(sorted(Counter(b.reason for b in bad).items())),
        splits={split: counts[split] for split in SPLITS},
    )
    _write_report(out_dir / REPORT_DIR, summary, bad)
    return summary


def _problem(post: Candidate, seen: dict[str, str]) -> BadRow | None:
    if not post.post_id or not post.user_id:
        return BadRow(post.where, "missing_field", "empty post_id or user_id", post.post_id or None)
    if not post.text.strip():
        return BadRow(post.where, "empty_text", "the text is empty", post.post_id)
    if post.post_id in seen:
        return BadRow(post.where, "duplicate_post_id", f"first seen at {seen[post.post_id]}", post.post_id)
    if post.split is not None and post.split not in SPLITS:
        return BadRow(post.where, "bad_split", f"split {post.split!r} is not one of {', '.join(SPLITS)}", post.post_id)
    if post.split is None and post.time is None:
        return BadRow(post.where, "bad_time", "no split and no time to order the user's posts by", post.post_id)
    return None


def _splits(posts: list[Candidate], rule: str) -> dict[str, str]:
    """post_id -> split: the input's where given, else by `rule` (module docstring)."""
    splits = {p.post_id: p.split for p in posts if p.split is not None}
    unsplit = [p for p in posts if p.split is None]
    if rule == "hash":
        for p in unsplit:
            share = hashed_share(p.post_id)
            splits[p.post_id] = "train" if share < 0.70 else "val" if share < 0.85 else "test"
        return splits
    by_user: dict[str, list[Candidate]] = defaultdict(list)
    for p in unsplit:
        by_user[p.user_id].append(p)
    for user_posts in by_user.values():
        user_posts.sort(key=lambda p: (p.time, p.post_id))
        for index, p in enumerate(user_posts):
            splits[p.post_id] = split_for(index, len(user_posts))
    return splits


def _link_image(post: Candidate, base: Path, out_dir: Path, max_pixels: int) -> str | BadRow:
    """Hard-link (or copy, across file systems) a local image into out_dir/images; its relative path."""
    source = Path(post.image) if Path(post.image).is_absolute() else base / post.image
    if not source.is_file():
        return BadRow(post.where, "image_missing", f"no file {source}", post.post_id)
    try:
        with Image.open(source, formats=ALLOWED_FORMATS) as probe:  # the header only
            width, height = probe.size
    except Exception as exc:  # PIL raises many types for files that are not images
        return BadRow(post.where, "image_unreadable", f"{source}: {type(exc).__name__}: {exc}", post.post_id)
    if width * height > max_pixels:
        return BadRow(post.where, "image_unreadable", f"{source} is {width}x{height}, over the {max_pixels}-pixel limit", post.post_id)
    relative = f"images/{image_key(post.post_id)}{source.suffix.lower()}"
    target = out_dir / relative
    if not target.exists():
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
    return relative


def _write_report(report_dir: Path, summary: ImportSummary, bad: list[BadRow]) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2) + "\n", encoding="utf-8")
    with open(report_dir / "bad_rows.jsonl", "w", encoding="utf-8") as handle:
        for row in bad:
            handle.write(json.dumps({"where": row.where, "post_id": row.post_id, "reason": row.reason, "detail": row.detail}, ensure_ascii=False) + "\n")

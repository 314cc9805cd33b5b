"""The two datasets of Park et al. 2017 (CSMN), in the layout of github.com/cesc-park/attend2u.

Read from that repository (commit 2154219, README.md and scripts/generate_dataset.py,
scripts/generate_yfcc_dataset.py, scripts/cnn_feature_extractor.py, utils/data_utils.py):

InstaPIC-1.1M (``csmn-instagram``): ``json/insta-caption-{train,test1,test2}.json``, each
``{user_id: {post_id: {"caption": text, ...}}}`` (a caption may be a list of strings, which
their tokenizer joins with spaces); the image of a post is ``images/{user_id}_@_{post_id}``.

YFCC100M split (``csmn-yfcc``): ``json/yfcc-caption-{train,test}.json``, each
``{user_id: [post, ...]}`` where a post has ``title``, ``description`` and ``page url``;
the post id is the last path part of the page URL, the text is chosen as in
`yfcc100m.caption_text`, and the image is ``images/{user_id}_{post_id}``.

Splits: their evaluation reads test1 (utils/data_utils.py: ``val_fpath = 'test1.txt'``), so
test1 is our ``test``; InstaPIC's second test set, test2, is our ``val``. The YFCC100M split
has one test file (our ``test``) and no validation set, so `VAL_SHARE` of its train posts,
chosen by a hash of the post id, become ``val``. Each line keeps ``source_split`` (their
file's name), so their partition can be recovered exactly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from model.data.importers.rows import BadRow, Candidate
from model.data.importers.yfcc100m import caption_text, clean_text

INSTAGRAM_FILES = {"train": "train", "test1": "test", "test2": "val"}  # their file -> our split
YFCC_FILES = {"train": "train", "test": "test"}
VAL_SHARE = 0.05


def hashed_share(post_id: str) -> float:
    """A post id's fixed place in [0, 1), from SHA-1: splits that do not depend on row order."""
    return int.from_bytes(hashlib.sha1(post_id.encode("utf-8")).digest()[:8], "big") / 2**64


def read_csmn_instagram(root: Path) -> Iterator[Candidate | BadRow]:
    for name, split in INSTAGRAM_FILES.items():
        path = root / "json" / f"insta-caption-{name}.json"
        for where, user_id, post_id, post in _posts(path, by_post_id=True):
            if isinstance(post, BadRow):
                yield post
                continue
            caption = post.get("caption")
            if isinstance(caption, list) and all(isinstance(part, str) for part in caption):
                caption = " ".join(caption)
            if not isinstance(caption, str) or not caption.strip():
                yield BadRow(where, "empty_text", "no caption", post_id)
                continue
            yield Candidate(where, post_id, user_id, f"images/{user_id}_@_{post_id}", caption, split=split,
                            extra={"source_split": name})


def read_csmn_yfcc(root: Path) -> Iterator[Candidate | BadRow]:
    for name, split in YFCC_FILES.items():
        path = root / "json" / f"yfcc-caption-{name}.json"
        for where, user_id, _, post in _posts(path, by_post_id=False):
            if isinstance(post, BadRow):
                yield post
                continue
            url = post.get("page url")
            if not isinstance(url, str) or len(url.rstrip("/").split("/")) < 2:
                yield BadRow(where, "missing_field", "no usable 'page url'")
                continue
            post_id = url.split("/")[-2]  # their rule: .../photos/{user}/{post_id}/
            title, description = post.get("title"), post.get("description")
            text = caption_text(clean_text(title if isinstance(title, str) else ""),
                                clean_text(description if isinstance(description, str) else ""))
            if not text:
                yield BadRow(where, "empty_text", "title and description are empty", post_id)
                continue
            ours = "val" if split == "train" and hashed_share(post_id) < VAL_SHARE else split
            yield Candidate(where, post_id, user_id, f"images/{user_id}_{post_id}", text, split=ours,
                            extra={"source_split": name})


def _posts(path: Path, *, by_post_id: bool) -> Iterator[tuple[str, str, str | None, dict | BadRow]]:
    """(where, user_id, post_id, post) for every post of one of their JSON files."""
    if not path.is_file():
        raise ValueError(f"input: {path} not found (the layout is that of github.com/cesc-park/attend2u)")
    try:
        users = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"input: {path} is not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(users, dict):
        raise ValueError(f"input: {path} is not a JSON object of users")
    for user_id, posts in users.items():
        if by_post_id:
            items = posts.items() if isinstance(posts, dict) else None
        else:
            items = enumerate(posts) if isinstance(posts, list) else None
        if items is None:
            yield f"{path.name}:{user_id}", user_id, None, BadRow(f"{path.name}:{user_id}", "malformed_json", "a user's posts are not in the expected container")
            continue
        for key, post in items:
            where = f"{path.name}:{user_id}/{key}"
            post_id = str(key) if by_post_id else None
            if not isinstance(post, dict):
                yield where, user_id, post_id, BadRow(where, "malformed_json", f"post is a {type(post).__name__}, not an object", post_id)
                continue
            yield where, user_id, post_id, post

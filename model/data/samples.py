"""Dataset records -> model samples: each post with the context text of its user.

Context comes from the same ``profiles`` code the worker uses (the README's model section): the user's top-k TF-IDF keywords over *train* posts, turned into
one text by `model.keywords_to_text`. A train post's keywords leave out its
own post (``exclude_post_id``), so a caption never sees its own words; val
and test posts use the user's full train profile, as a worker would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from model.data.dataset import DatasetError, PostRecord
from model.keywords import keywords_to_text
from profiles import InvalidPost, Post, TfidfProfiles


@dataclass(frozen=True)
class Sample:
    post_id: str
    user_id: str
    image: Path
    text: str
    keywords: tuple[str, ...]
    context_text: str
    labels: dict | None = None  # the image's ground truth, when the dataset has it


def train_profiles(records: Sequence[PostRecord]) -> TfidfProfiles:
    """TF-IDF profiles of the train split; an invalid post text raises DatasetError naming it."""
    try:
        return TfidfProfiles(Post(r.post_id, r.user_id, r.text) for r in records if r.split == "train")
    except InvalidPost as exc:
        raise DatasetError(f"records: a train post cannot go into a profile: {exc}") from exc


def build_samples(records: Sequence[PostRecord], split: str, k: int, profiles: TfidfProfiles) -> list[Sample]:
    """The samples of one split, in file order, each with its user's top-k keywords."""

    samples = []
    for r in records:
        if r.split != split:
            continue
        exclude = r.post_id if split == "train" else None
        keywords = tuple(kw.term for kw in profiles.top_keywords(r.user_id, k, exclude_post_id=exclude))
        samples.append(Sample(r.post_id, r.user_id, r.image, r.text, keywords, keywords_to_text(keywords), r.labels))
    return samples

"""Dataset statistics in the shape of the paper's Table 1.

Definitions (also in ``uapt data stats --help`` and the README):
- posts, users, posts/user (mean);
- words/post: mean number of whitespace-separated tokens of a caption
  (emoji and hashtags count as words, as a reader would see them);
- intra-user similarity: mean TF-IDF cosine over all pairs of distinct captions
  written by the same user; inter-user similarity: the same over pairs written
  by different users (see `model.data.style.caption_similarity`). A dataset where
  users have styles of their own has intra well above inter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from model.data.dataset import SPLITS, DatasetError, PostRecord
from model.data.style import caption_similarity


@dataclass(frozen=True)
class DatasetStats:
    posts: int
    users: int
    posts_per_user: float
    words_per_post: float
    intra_user_similarity: float
    inter_user_similarity: float
    split_posts: dict[str, int]

    def to_dict(self) -> dict:
        return asdict(self)

    def markdown(self) -> str:
        header = "| posts | users | posts/user | words/post | intra-user sim. | inter-user sim. |"
        row = (
            f"| {self.posts} | {self.users} | {self.posts_per_user:.1f} | {self.words_per_post:.2f} "
            f"| {self.intra_user_similarity:.4f} | {self.inter_user_similarity:.4f} |"
        )
        splits = ", ".join(f"{s} {self.split_posts.get(s, 0)}" for s in SPLITS)
        return f"{header}\n| --- | --- | --- | --- | --- | --- |\n{row}\n\nsplits: {splits}"


def compute_stats(records: Sequence[PostRecord]) -> DatasetStats:
    if not records:
        raise DatasetError("records is empty")
    texts = [r.text for r in records]
    users = [r.user_id for r in records]
    intra, inter = caption_similarity(texts, users)
    n_users = len(set(users))
    return DatasetStats(
        posts=len(records),
        users=n_users,
        posts_per_user=len(records) / n_users,
        words_per_post=sum(len(t.split()) for t in texts) / len(texts),
        intra_user_similarity=intra,
        inter_user_similarity=inter,
        split_posts=dict(Counter(r.split for r in records)),
    )

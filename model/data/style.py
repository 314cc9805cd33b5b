"""Writing style as TF-IDF vectors: caption similarity and nearest user by style.

Both the dataset statistics (paper Table 1: intra- and inter-user caption
similarity) and the evaluator's personalization score measure style with the
same tool: scikit-learn's ``TfidfVectorizer`` (L2-normalised rows, smooth idf)
over the analyzer of ``profiles`` that builds the users' keyword profiles, so
"style" here means the words a profile would see.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from model.data.dataset import DatasetError
from profiles import analyze


def style_vectorizer() -> TfidfVectorizer:
    return TfidfVectorizer(analyzer=analyze)


def caption_similarity(texts: Sequence[str], user_ids: Sequence[str]) -> tuple[float, float]:
    """Mean pairwise cosine of caption TF-IDF vectors (one document per caption).

    Returns (intra, inter): the mean over all pairs of distinct captions by the
    same user, and over all pairs by different users. Exact, in O(nnz): with
    unit rows, the sum of cosines over ordered pairs i != j of a group equals
    ||sum of its rows||^2 - sum of ||row||^2. Captions without any analyzer
    term are zero vectors and count as similarity 0.
    """
    if len(texts) != len(user_ids):
        raise ValueError(f"texts and user_ids differ in length ({len(texts)} != {len(user_ids)})")
    matrix = style_vectorizer().fit_transform(texts)  # (N, V) sparse, rows unit or zero
    self_sims = np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel()  # ||row||^2

    def pair_sum(rows: np.ndarray) -> float:
        total = np.asarray(matrix[rows].sum(axis=0)).ravel()
        return float(total @ total - self_sims[rows].sum())

    groups: dict[str, list[int]] = defaultdict(list)
    for i, user in enumerate(user_ids):
        groups[user].append(i)
    n = len(texts)
    intra_sum = sum(pair_sum(np.array(rows)) for rows in groups.values())
    intra_pairs = sum(len(rows) * (len(rows) - 1) for rows in groups.values())
    all_sum = pair_sum(np.arange(n))
    inter_pairs = n * (n - 1) - intra_pairs
    intra = intra_sum / intra_pairs if intra_pairs else float("nan")
    inter = (all_sum - intra_sum) / inter_pairs if inter_pairs else float("nan")
    return intra, inter


class StyleProfiles:
    """Each user's train captions as one TF-IDF document; finds the closest user to a text."""

    def __init__(self, texts_by_user: dict[str, Sequence[str]]):
        if not texts_by_user:
            raise DatasetError("texts_by_user is empty: no user has train captions")
        self.users = sorted(texts_by_user)
        self._vectorizer = style_vectorizer()
        self._profiles = self._vectorizer.fit_transform(
            [" \n ".join(texts_by_user[u]) for u in self.users]
        )  # (U, V), unit rows

    def nearest_users(self, texts: Sequence[str]) -> list[str | None]:
        """The user whose profile has the highest cosine to each text (None if no known term)."""
        sims = (self._vectorizer.transform(texts) @ self._profiles.T).toarray()  # (N, U)
        best = sims.argmax(axis=1)
        return [self.users[b] if sims[i, b] > 0 else None for i, b in enumerate(best)]

    def hit_rate(self, texts: Sequence[str], user_ids: Sequence[str]) -> float:
        """Share of texts whose nearest user is their own author."""
        if len(texts) != len(user_ids):
            raise ValueError(f"texts and user_ids differ in length ({len(texts)} != {len(user_ids)})")
        if not texts:
            raise ValueError("texts is empty")
        nearest = self.nearest_users(texts)
        return sum(n == u for n, u in zip(nearest, user_ids)) / len(texts)

"""Scoring a checkpoint the way the paper does, plus a personalization score.

For each post of a split, the model captions the image given the user's
train-profile keywords; the caption is scored against the post's own text (one
reference per post, as in the paper) with `model.metrics`.

Personalization: the share of generated captions whose nearest user by TF-IDF
writing style (cosine to each user's train-split profile, `model.style`) is
the poster. The same figure for the real captions is the ceiling: how often a
user's own words already identify them.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from model.dataset import PostRecord
from model.features import FeatureCache
from model.metrics import METRIC_NAMES, caption_metrics
from model.samples import train_profiles
from model.style import StyleProfiles
from model.trainer import encode_split

logger = logging.getLogger(__name__)

EXAMPLES_KEPT = 12


@dataclass(frozen=True)
class EvalOptions:
    split: str = "test"
    num_beams: int = 3
    temperature: float = 0.8
    limit: int | None = None
    keywords_k: int | None = None  # None: what the checkpoint was trained with (else 5)
    batch_size: int = 16


@dataclass
class EvalReport:
    checkpoint: str
    ablation: str | None
    split: str
    posts: int
    metrics: dict[str, float]
    personalization: float
    personalization_ceiling: float
    wall_s: float
    examples: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def markdown(self) -> str:
        names = [*METRIC_NAMES, "personalization", "ceiling"]
        values = [*(self.metrics[n] for n in METRIC_NAMES), self.personalization, self.personalization_ceiling]
        lines = [
            f"{self.checkpoint} on {self.split} ({self.posts} posts)",
            "",
            "| " + " | ".join(names) + " |",
            "|" + " --- |" * len(names),
            "| " + " | ".join(f"{v:.4f}" for v in values) + " |",
        ]
        return "\n".join(lines)


def generate_captions(model, image_features: torch.Tensor, context_features: torch.Tensor, options: EvalOptions) -> list[str]:
    """The best beam-search caption for each row of features, in batches."""
    captions: list[str] = []
    for start in range(0, image_features.size(0), options.batch_size):
        stop = start + options.batch_size
        nbest = model.generate(
            image_features[start:stop],
            context_features[start:stop],
            num_beams=options.num_beams,
            temperature=options.temperature,
            num_return_sequences=1,
        )
        captions.extend(hyps[0].text if hyps else "" for hyps in nbest)
    return captions


def _trained_keywords_k(checkpoint: Path) -> int:
    """The keyword count the trainer recorded in the checkpoint's extra data (5 if absent)."""
    from model.checkpoint import CONFIG_FILE

    meta = json.loads((checkpoint / CONFIG_FILE).read_text(encoding="utf-8"))
    return int(meta.get("extra", {}).get("train", {}).get("keywords_k", 5))


def evaluate_checkpoint(
    records: Sequence[PostRecord],
    checkpoint: str | Path,
    *,
    options: EvalOptions = EvalOptions(),
    cache_dir: str | Path = "runs/feature-cache",
    device: str = "auto",
) -> EvalReport:
    """Caption every post of `options.split` and score the captions."""
    from model import load_model
    from model.checkpoint import read_checkpoint_config

    started = time.perf_counter()
    checkpoint = Path(checkpoint)
    config = read_checkpoint_config(checkpoint)
    k = options.keywords_k or _trained_keywords_k(checkpoint)
    model = load_model(config, checkpoint=checkpoint, device=device)
    cache = FeatureCache(cache_dir, model)
    profiles = train_profiles(records)
    split = encode_split(records, options.split, k, cache, profiles)
    n = len(split.samples) if options.limit is None else min(options.limit, len(split.samples))
    if n == 0:
        raise ValueError(f"split: the dataset has no '{options.split}' posts")
    samples = split.samples[:n]
    logger.info("captioning %d %s posts with %s", n, options.split, checkpoint)
    generated = generate_captions(model, split.image_features[:n], split.context_features[:n], options)

    references = {s.post_id: s.text for s in samples}
    candidates = {s.post_id: g for s, g in zip(samples, generated)}
    metrics = caption_metrics(references, candidates)
    texts_by_user: dict[str, list[str]] = defaultdict(list)
    for r in records:
        if r.split == "train":
            texts_by_user[r.user_id].append(r.text)
    style = StyleProfiles(texts_by_user)
    users = [s.user_id for s in samples]
    return EvalReport(
        checkpoint=str(checkpoint),
        ablation=config.ablation,
        split=options.split,
        posts=n,
        metrics=metrics,
        personalization=style.hit_rate(generated, users),
        personalization_ceiling=style.hit_rate([s.text for s in samples], users),
        wall_s=time.perf_counter() - started,
        examples=[
            {"post_id": s.post_id, "user_id": s.user_id, "keywords": list(s.keywords), "generated": g, "reference": s.text}
            for s, g in list(zip(samples, generated))[:EXAMPLES_KEPT]
        ],
    )

"""Scoring a checkpoint the way the paper does, plus a personalization score.

For each post of a split, the model captions the image given the user's
train-profile keywords; the caption is scored against the post's own text (one
reference per post, as in the paper) with `model.evaluation.metrics`.

Grounding (when the dataset has `labels`): content_scene / content_object, the
share of gradable posts whose best caption names the image's scene / main object,
and wrong_scene_rate (`model.evaluation.grounding`). Loops and sameness: repeat_3gram_rate
and distinct_per_user (`model.evaluation.metrics`).

Abstention (when the checkpoint has an OOD file, `model.guidance.ood`): ece, coverage and
selective figures at the file's thresholds, and with an ``ood_dir`` of images the model
should refuse, ood_auroc and ood_fpr95 (`model.evaluation.abstention`).

Personalization: the share of generated captions whose nearest user by TF-IDF
writing style (cosine to each user's train-split profile, `model.data.style`) is
the poster. The same figure for the real captions is the ceiling: how often a
user's own words already identify them.

personalization_unseen: the same score on users the checkpoint never trained on (a
second dataset, e.g. `uapt data synth --heldout-users`' ``heldout`` folder): their keywords
come from their own train-split history, and the nearest user is sought among them only,
so chance is 1 / unseen_users. It says whether the model reads a style from keywords or
only recognises the users it knows.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm import tqdm

from model.captioner import abstention_policy
from model.checkpoint import CONFIG_FILE, read_checkpoint_config
from model.config import DEFAULT_SERVING_DTYPE, ConfigError, DecodingOptions
from model.data.dataset import DatasetError, PostRecord
from model.data.samples import Sample, train_profiles
from model.data.style import StyleProfiles
from model.evaluation import grounding
from model.evaluation.metrics import caption_metrics, distinct_per_user, repeat_ngram_rate
from model.evaluation.abstention import abstention_figures, ood_set_figures
from model.evaluation.ood_set import read_kinds
from model.evaluation.report import write_html_report
from model.factory import load_model
from model.keywords import keywords_to_text
from model.serving_dtype import lm_dtype_name
from model.training.feature_store import FeatureStore
from model.training.features import FeatureCache, Features, default_store, encode_split
from model.uapt import Caption

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")  # what ood_dir images may be

@dataclass(frozen=True)
class EvalOptions:
    split: str = "test"
    decoding: DecodingOptions = DecodingOptions()
    limit: int | None = None
    keywords_k: int | None = None  # None: what the checkpoint was trained with (else 5)
    cold_start: bool = False  # caption every post as if its user had no past posts (no keywords)
    batch_size: int = 16

    def __post_init__(self) -> None:
        # a slice with 0 or a negative limit would score no posts or silently drop the last ones
        for name in ("limit", "keywords_k", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}")


@dataclass
class EvalReport:
    checkpoint: str
    ablation: str | None
    split: str
    posts: int
    metrics: dict[str, float]
    personalization: float
    personalization_ceiling: float
    gradable_posts: int  # posts with labels whose user writes about their images
    content_scene: float | None  # None: the split has no labels
    content_object: float | None
    wrong_scene_rate: float | None
    repeat_3gram_rate: float
    distinct_per_user: float
    wall_s: float
    cold_start: bool = False
    personalization_unseen: float | None = None  # None: no unseen users were given
    unseen_users: int | None = None
    decoding: dict = field(default_factory=dict)  # DecodingOptions.to_dict() as the model applied them
    serving_dtype: str = "float32"  # what the frozen LM decoded in (model.serving_dtype)
    # with an OOD file (model.evaluation.abstention); None without one, or without ood_dir for the ood_ figures
    ece: float | None = None
    coverage: float | None = None
    selective: dict | None = None
    ood_auroc: float | None = None
    ood_fpr95: float | None = None
    abstention: dict | None = None  # thresholds, abstentions by reason, ece_best_caption, risk_coverage, the OOD set by kind
    captions: list[dict] = field(default_factory=list)  # every post: ids, keywords, reference, n-best (best first)

    def to_dict(self) -> dict:
        return asdict(self)

    def headline(self) -> dict[str, float | None]:
        """The figures a reader looks at first, by name (paper metrics, then ours)."""
        return {
            **self.metrics,
            "personalization": self.personalization,
            "ceiling": self.personalization_ceiling,
            "personalization_unseen": self.personalization_unseen,
            "content_scene": self.content_scene,
            "content_object": self.content_object,
            "wrong_scene_rate": self.wrong_scene_rate,
            "repeat_3gram_rate": self.repeat_3gram_rate,
            "distinct_per_user": self.distinct_per_user,
        }

    def markdown(self) -> str:
        figures = self.headline()
        names = list(figures)
        values = ["n/a" if v is None else f"{v:.4f}" for v in figures.values()]
        lines = [
            f"{self.checkpoint} on {self.split} ({self.posts} posts{', every user new' if self.cold_start else ''})",
            "",
            "| " + " | ".join(names) + " |",
            "|" + " --- |" * len(names),
            "| " + " | ".join(values) + " |",
        ]
        return "\n".join(lines)


@dataclass(frozen=True)
class PostsToCaption:
    """The posts an evaluation captions (the split's first `limit`), with their frozen features, row i for post i."""

    samples: list[Sample]
    image_features: Features  # read batch by batch
    context_features: torch.Tensor


def posts_to_caption(
    records: Sequence[PostRecord], cache: FeatureCache, options: EvalOptions, k: int, feature_store: str | Path | None = None
) -> PostsToCaption:
    """`options.split`'s posts up to `options.limit`, keywords the top `k` of each user's train profile (none
    with `options.cold_start`); image features from `feature_store` (default: the one inside the cache)."""
    store = default_store(cache) if feature_store is None else FeatureStore(feature_store, cache.model.backbone_id())
    split = encode_split(records, options.split, k, cache, train_profiles(records), store)
    n = len(split.samples) if options.limit is None else min(options.limit, len(split.samples))
    if n == 0:
        raise DatasetError(f"split: the dataset has no '{options.split}' posts")
    samples, contexts = split.samples[:n], split.context_features[:n]
    if options.cold_start:  # what a user without history gets: the serving path's empty keyword list
        samples = [replace(s, keywords=(), context_text=keywords_to_text([])) for s in samples]
        contexts = cache.context_features([s.context_text for s in samples])
    images = split.image_features if n == len(split.samples) else split.image_features[:n]
    return PostsToCaption(samples, images, contexts)


def generate_captions(
    model, image_features: Features, context_features: Features, options: EvalOptions
) -> list[list[Caption]]:
    """The n-best beam-search captions (best first) for each row of features, in batches (read batch by batch)."""
    captions: list[list[Caption]] = []
    starts = range(0, image_features.size(0), options.batch_size)
    for start in tqdm(starts, desc="captioning", unit="batch", leave=False, mininterval=5):
        stop = start + options.batch_size
        captions.extend(
            model.generate(image_features[start:stop], context_features[start:stop], options.decoding)
        )
    return captions


def trained_keywords_k(checkpoint: Path) -> int:
    """The keyword count the trainer recorded in the checkpoint's extra data (5 if absent)."""

    meta = json.loads((checkpoint / CONFIG_FILE).read_text(encoding="utf-8"))
    return int(meta.get("extra", {}).get("train", {}).get("keywords_k", 5))


def evaluate_checkpoint(
    records: Sequence[PostRecord],
    checkpoint: str | Path,
    *,
    options: EvalOptions = EvalOptions(),
    cache_dir: str | Path = "runs/feature-cache",
    feature_store: str | Path | None = None,
    device: str = "auto",
    serving_dtype: str = DEFAULT_SERVING_DTYPE,
    report_path: str | Path | None = None,
    unseen_records: Sequence[PostRecord] | None = None,
    ood_dir: str | Path | None = None,
) -> EvalReport:
    """Caption every post of `options.split` and score the captions; optionally write an HTML page of them.

    `unseen_records`: a dataset of users the checkpoint never saw; their `options.split` posts
    (up to `options.limit`) are captioned too, for ``personalization_unseen``.
    Image features come from `feature_store` (default: the one inside `cache_dir`), as in training.
    `serving_dtype` is the frozen LM's, as `uapt caption` and the worker take it (`model.serving_dtype`).
    """

    started = time.perf_counter()
    checkpoint = Path(checkpoint)
    config = read_checkpoint_config(checkpoint)
    k = options.keywords_k if options.keywords_k is not None else trained_keywords_k(checkpoint)
    model = load_model(config, checkpoint=checkpoint, device=device, serving_dtype=serving_dtype)
    cache = FeatureCache(cache_dir, model)
    posts = posts_to_caption(records, cache, options, k, feature_store)
    samples, images, contexts, n = posts.samples, posts.image_features, posts.context_features, len(posts.samples)
    logger.info("captioning %d %s posts with %s", n, options.split, checkpoint)
    nbest = generate_captions(model, images, contexts, options)
    generated = [hyps[0].text if hyps else "" for hyps in nbest]

    references = {s.post_id: s.text for s in samples}
    candidates = {s.post_id: g for s, g in zip(samples, generated)}
    metrics = caption_metrics(references, candidates)
    style = StyleProfiles(_train_texts(records))
    users = [s.user_id for s in samples]
    unseen = None if unseen_records is None else _personalization_unseen(model, cache, records, unseen_records, k, options)
    content = grounding.content_scores(generated, [s.labels for s in samples])
    report = EvalReport(
        checkpoint=str(checkpoint),
        ablation=config.ablation,
        split=options.split,
        posts=n,
        metrics=metrics,
        personalization=style.hit_rate(generated, users),
        personalization_ceiling=style.hit_rate([s.text for s in samples], users),
        gradable_posts=content["gradable_posts"],
        content_scene=content["content_scene"],
        content_object=content["content_object"],
        wrong_scene_rate=content["wrong_scene_rate"],
        repeat_3gram_rate=repeat_ngram_rate(generated),
        distinct_per_user=distinct_per_user(generated, users),
        wall_s=time.perf_counter() - started,
        cold_start=options.cold_start,
        personalization_unseen=None if unseen is None else unseen[0],
        unseen_users=None if unseen is None else unseen[1],
        decoding=model.applied_decoding(options.decoding).to_dict(),
        serving_dtype=lm_dtype_name(model.lm),
        captions=[
            {
                "post_id": s.post_id,
                "user_id": s.user_id,
                "keywords": list(s.keywords),
                "reference": s.text,
                "nbest": [{"text": h.text, "score": round(h.score, 4)} for h in hyps],
            }
            for s, hyps in zip(samples, nbest)
        ],
    )
    if model.guidance.ood is not None:
        add_abstention(report, model, images[:], nbest, [s.labels for s in samples], cache, options, ood_dir)
    elif ood_dir is not None:
        raise ConfigError(f"ood_dir: {checkpoint} has no OOD file to score it with (uapt fit-ood)")
    if report_path is not None:
        write_html_report(report_path, report, samples, nbest)
    return report


def _train_texts(records: Sequence[PostRecord]) -> dict[str, list[str]]:
    texts_by_user: dict[str, list[str]] = defaultdict(list)
    for r in records:
        if r.split == "train":
            texts_by_user[r.user_id].append(r.text)
    return texts_by_user


def _personalization_unseen(
    model, cache: FeatureCache, records: Sequence[PostRecord], unseen: Sequence[PostRecord], k: int, options: EvalOptions
) -> tuple[float, int]:
    """(hit rate, users) on the unseen users' split posts, keywords and style profiles from their own train posts."""
    shared = {r.user_id for r in unseen} & {r.user_id for r in records}
    if shared:
        raise DatasetError(f"unseen_records: {len(shared)} users are also in the evaluated dataset (e.g. {min(shared)!r})")
    split = encode_split(unseen, options.split, k, cache, train_profiles(unseen))
    n = len(split.samples) if options.limit is None else min(options.limit, len(split.samples))
    if n == 0:
        raise DatasetError(f"unseen_records: no '{options.split}' posts")
    logger.info("captioning %d %s posts of unseen users", n, options.split)
    nbest = generate_captions(model, split.image_features[:n], split.context_features[:n], options)
    users = [s.user_id for s in split.samples[:n]]
    score = StyleProfiles(_train_texts(unseen)).hit_rate([hyps[0].text if hyps else "" for hyps in nbest], users)
    return score, len(set(users))


def add_abstention(
    report: EvalReport, model, image_features: torch.Tensor, nbest, labels, cache: FeatureCache, options: EvalOptions, ood_dir
) -> None:
    """Score the split's posts with the checkpoint's OOD file; with `ood_dir`, its images too (captioned as a new user's)."""
    policy = abstention_policy(model, None, None)
    ood, confidences = model.guidance.ood.scores(image_features, [[(h.text, h.score) for h in hyps] for hyps in nbest], model.guidance.scene_reader)
    figures = abstention_figures(ood, confidences, [[h.text for h in hyps] for hyps in nbest], labels, policy)
    report.ece, report.coverage, report.selective = figures.pop("ece"), figures.pop("coverage"), figures.pop("selective")
    if ood_dir is not None:
        files = sorted(p for p in Path(ood_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if Path(ood_dir).is_dir() else []
        if not files:
            raise ConfigError(f"ood_dir: {ood_dir} holds no images")
        features = cache.image_features(files)
        contexts = cache.context_features([keywords_to_text([])] * len(files))
        out_nbest = generate_captions(model, features, contexts, options)
        out_ood, out_conf = model.guidance.ood.scores(features, [[(h.text, h.score) for h in hyps] for hyps in out_nbest], model.guidance.scene_reader)
        ood_figures = ood_set_figures(ood, out_ood, [c[0] if c else None for c in out_conf], [f.name for f in files], read_kinds(ood_dir), policy)
        report.ood_auroc, report.ood_fpr95 = ood_figures.pop("ood_auroc"), ood_figures.pop("ood_fpr95")
        figures["ood_set"] = {**ood_figures, "best_captions": {f.name: hyps[0].text if hyps else "" for f, hyps in zip(files, out_nbest)}}
    report.abstention = figures


def read_best_captions(eval_json: Path) -> dict[str, str]:
    """post_id -> best caption, from the JSON `evaluate_checkpoint`'s report was written to (`uapt evaluate --out`)."""
    posts = json.loads(Path(eval_json).read_text(encoding="utf-8"))["captions"]
    return {p["post_id"]: p["nbest"][0]["text"] if p["nbest"] else "" for p in posts}

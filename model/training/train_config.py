"""Training hyper-parameters (paper section 4.2 defaults), free of torch imports.

Kept apart from `model.training.trainer` so the CLI can show the defaults in ``--help``
without importing torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from model.config import ConfigError

IMAGE_WORD_MIN_GAIN = 0.05  # image_word_loss_weight's words: val cross-entropy this share below the prior's (docs/RESULTS.md)
METRICS_FILE = "metrics.json"  # what a training run writes beside its checkpoint (config, curves, data)
PAPER_WARMUP_STEPS = 6000
PRECISIONS = ("auto", "float32", "bfloat16")
WARMUP_FRACTION = 0.05


@dataclass(frozen=True)
class TrainConfig:
    """AdamW betas (0.9, 0.96), weight decay 0.005, peak lr 6e-4, batch 50, 6 epochs (paper).

    warmup_steps=None picks ``min(6000, 5% of all steps)`` (at least 1): the
    paper warms up for 6k of roughly 130k steps (InstaPIC-1.1M, batch 50, 6
    epochs; about 5%), so small datasets keep the same proportion instead of
    spending their whole run warming up.
    """

    epochs: int = 6
    batch_size: int = 50
    lr: float = 6e-4
    betas: tuple[float, float] = (0.9, 0.96)
    weight_decay: float = 0.005
    warmup_steps: int | None = None
    seed: int = 0
    keywords_k: int = 5
    max_steps: int | None = None
    eval_every: int | None = None  # steps between val checks; None: once per epoch
    probe_posts: int = 48  # val posts captioned greedily at each check to measure grounding
    precision: str = "auto"  # "float32", "bfloat16" (frozen LM in bf16, autocast), or "auto"
    max_grad_norm: float | None = 1.0  # clip the prefix gradients' global norm; None: no clipping
    context_dropout: float = 0.0  # share of train rows shown a new user's (empty) profile; not in the paper
    visual_lr_scale: float = 1.0  # the image path (visual projection, mapping, global term) at lr x this; not in the paper
    image_word_loss_weight: float = 1.0  # the image's words count this many times in the train loss; not in the paper

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "keywords_k"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.eval_every is not None and self.eval_every < 1:
            raise ConfigError(f"eval_every must be >= 1, got {self.eval_every}")
        if self.probe_posts < 0:
            raise ConfigError(f"probe_posts must be >= 0, got {self.probe_posts}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ConfigError(f"max_grad_norm must be positive or None, got {self.max_grad_norm}")
        if not 0.0 <= self.context_dropout < 1.0:
            raise ConfigError(f"context_dropout must be in [0, 1), got {self.context_dropout}")
        for name in ("visual_lr_scale", "image_word_loss_weight"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def resolved_warmup(self, total_steps: int) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return max(1, min(PAPER_WARMUP_STEPS, round(WARMUP_FRACTION * total_steps)))

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data

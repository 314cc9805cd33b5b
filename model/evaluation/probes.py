"""Cheap views of what a model in training has learnt, run at each val check.

`image_reliance` tells whether the prefix reads the image at all; `grounding_probe`
whether greedy captions name the image's scene and object. `uapt evaluate` gives
the full figures; these are for watching a run.
"""

from __future__ import annotations

import torch

from model.config import DecodingOptions
from model.evaluation import grounding
from model.training.features import Split
from model.training.loss import batch_loss, lm_autocast


@torch.no_grad()
def evaluate_loss(model, split: Split, batch_size: int, device: torch.device, shuffle_images: bool = False) -> float:
    """Token-weighted mean NLL over a whole split.

    With `shuffle_images`, every caption is scored with the image of the next sample of
    its own user (same context, different picture).
    """
    count = len(split.samples)
    images = same_user_shift(split) if shuffle_images else torch.arange(count)
    total, tokens = 0.0, 0.0
    for start in range(0, count, batch_size):
        index = torch.arange(start, min(start + batch_size, count))
        loss, n = batch_loss(model, split, index, device, image_index=images[index])
        total += float(loss) * n
        tokens += n
    return total / max(tokens, 1)


def same_user_shift(split: Split) -> torch.Tensor:
    """For each sample, the index of the next sample of the same user (cyclically)."""
    by_user: dict[str, list[int]] = {}
    for i, sample in enumerate(split.samples):
        by_user.setdefault(sample.user_id, []).append(i)
    target = torch.arange(len(split.samples))
    for rows in by_user.values():
        target[rows] = torch.tensor(rows[1:] + rows[:1])
    return target


def image_reliance(model, split: Split, batch_size: int, device: torch.device, val_loss: float) -> float:
    """How much worse (relative NLL) captions score with another image of the same user.

    0 means the prefix ignores the image; the demo's captions name scene and object,
    so a model that reads the image should lose a clear share here.
    """
    shuffled = evaluate_loss(model, split, batch_size, device, shuffle_images=True)
    return (shuffled - val_loss) / val_loss


@torch.no_grad()
def grounding_probe(model, split: Split, limit: int, device: torch.device) -> dict[str, float] | None:
    """Greedy captions of the first `limit` gradable val posts: how often they name the scene and object.

    A cheap view of whether captions follow the image while training; `uapt evaluate`
    gives the full beam-search figures. None when the split has no labels.
    """
    rows = [i for i, s in enumerate(split.samples) if grounding.is_gradable(s.labels)][:limit]
    if not rows:
        return None
    index = torch.tensor(rows)
    with lm_autocast(model, device):
        nbest = model.generate(
            split.image_features[index].to(device), split.context_features[index].to(device), DecodingOptions(num_beams=1)
        )
    captions = [hyps[0].text for hyps in nbest]
    scores = grounding.content_scores(captions, [split.samples[i].labels for i in rows])
    return {"scene": scores["content_scene"], "object": scores["content_object"], "example": captions[0]}

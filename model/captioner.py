"""`Captioner`: what the worker calls. Images plus each user's keywords in, n-best captions out."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from PIL import Image
from torch import Tensor

from model.config import DecodingOptions
from model.guidance.abstention import AbstentionError, AbstentionPolicy, Judgement
from model.keywords import keywords_to_text
from model.serving_dtype import lm_dtype_name
from model.uapt import UAPT, Caption, InputError


class Captioner:
    """Wraps a loaded UAPT model with its decoding options (default: the paper's beam 3, temperature 0.8, plus repetition control).

    The options are checked when they are built (`DecodingOptions`), so a worker with a
    bad setting stops at start-up, not at its first batch. The abstention thresholds are not
    decoding options: they judge captions after decoding (None: the checkpoint's OOD file's).
    """

    def __init__(
        self,
        model: UAPT,
        decoding: DecodingOptions = DecodingOptions(),
        *,
        max_ood_score: float | None = None,
        min_confidence: float | None = None,
    ) -> None:
        self.model = model
        self.decoding = decoding
        self.model_id = model.checkpoint_id or f"{model.config.preset}:untrained"
        self.serving_dtype = lm_dtype_name(model.lm)  # what the frozen LM decodes in (model.serving_dtype)
        self.policy = abstention_policy(model, max_ood_score, min_confidence)  # None: no OOD file, never abstains

    def encode_images(self, images: Sequence[Image.Image]) -> list[Tensor]:
        """Frozen image features, one (T, image_dim) tensor per image: the step a worker runs
        while the batch before generates, and keeps per image so that a failing batch can be split."""
        if not images:
            return []
        return list(self.model.encode_images(images).unbind(0))

    def caption_encoded(
        self, image_features: Sequence[Tensor], keywords: Sequence[Sequence[str]], num_captions: int = 3
    ) -> list[list[Caption]]:
        """n-best captions (best first) for each image's features (from `encode_images`), personalized by its user's keywords.

        `num_captions` is the n-best size of this call (a post may ask for its own); the
        beam widens to it where it is narrower.
        """
        if len(image_features) != len(keywords):
            raise InputError(f"keywords has {len(keywords)} entries for {len(image_features)} images")
        if not image_features:
            return []
        texts = [keywords_to_text(words) for words in keywords]
        distinct = {text: row for row, text in enumerate(dict.fromkeys(texts))}
        context_features = self.model.encode_context(list(distinct))[[distinct[text] for text in texts]]  # once per user
        decoding = dataclasses.replace(
            self.decoding, num_beams=max(self.decoding.num_beams, num_captions), num_return_sequences=num_captions
        )
        features = torch.stack(list(image_features))  # (B, T, image_dim)
        return self.model.generate(features, context_features, decoding)

    def caption(
        self, images: Sequence[Image.Image], keywords: Sequence[Sequence[str]], num_captions: int = 3
    ) -> list[list[Caption]]:
        """n-best captions (best first) for each image, personalized by its user's keywords."""
        if len(images) != len(keywords):
            raise InputError(f"keywords has {len(keywords)} entries for {len(images)} images")
        return self.caption_encoded(self.encode_images(images), keywords, num_captions)

    def judge(self, image_features: Sequence[Tensor], captions: Sequence[Sequence[Caption]]) -> list[Judgement]:
        """Each image's OOD score and its best caption's confidence, and whether to abstain; sets every caption's confidence.

        Without an OOD file in the checkpoint, nothing is scored and nothing abstained.
        """
        if len(image_features) != len(captions):
            raise InputError(f"captions has {len(captions)} entries for {len(image_features)} images")
        if self.policy is None or not captions:
            return [Judgement(None, None) for _ in captions]
        nbest = [[(c.text, c.score) for c in image] for image in captions]
        ood, confidences = self.model.guidance.ood.scores(torch.stack(list(image_features)), nbest, self.model.guidance.scene_reader)
        judgements = []
        for score, image, image_confidences in zip(ood, captions, confidences):
            for caption, confidence in zip(image, image_confidences):
                caption.confidence = confidence
            best = image_confidences[0] if image_confidences else None
            judgements.append(Judgement(score, best, self.policy.reason(score, best)))
        return judgements


def abstention_policy(model: UAPT, max_ood_score: float | None, min_confidence: float | None) -> AbstentionPolicy | None:
    """The checkpoint's default thresholds with the given ones in their place; None when the checkpoint has no OOD file."""
    if model.guidance.ood is None:
        if max_ood_score is not None or min_confidence is not None:
            raise AbstentionError("max_ood_score and min_confidence need a checkpoint with an OOD file (uapt fit-ood)")
        return None
    defaults = model.guidance.ood.policy
    return AbstentionPolicy(
        defaults.max_ood_score if max_ood_score is None else max_ood_score,
        defaults.min_confidence if min_confidence is None else min_confidence,
    )

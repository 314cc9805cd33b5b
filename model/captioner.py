"""`Captioner`: what the worker calls. Images plus each user's keywords in, n-best captions out."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torch import Tensor

from model.config import NO_REPEAT_NGRAM_SIZE, NUM_BEAMS, REPETITION_PENALTY, TEMPERATURE
from model.generation import BeamSettings
from model.guidance.abstention import AbstentionError, AbstentionPolicy, Judgement
from model.guidance.tagger_config import check_weight
from model.keywords import keywords_to_text
from model.uapt import UAPT, Caption, InputError


class Captioner:
    """Wraps a loaded UAPT model with the paper's decoding settings (beam 3, temperature 0.8) plus repetition control."""

    def __init__(
        self,
        model: UAPT,
        *,
        num_beams: int = NUM_BEAMS,
        temperature: float = TEMPERATURE,
        max_new_tokens: int | None = None,
        length_penalty: float = 1.0,
        no_repeat_ngram_size: int = NO_REPEAT_NGRAM_SIZE,
        repetition_penalty: float = REPETITION_PENALTY,
        image_word_weight: float | None = None,
        scene_constraint: bool = True,
        max_ood_score: float | None = None,
        min_confidence: float | None = None,
    ) -> None:
        # Validate now (GenerationError), not at the first batch of a running worker.
        BeamSettings(
            num_beams=num_beams,
            temperature=temperature,
            max_new_tokens=max_new_tokens or 1,
            no_repeat_ngram_size=no_repeat_ngram_size,
            repetition_penalty=repetition_penalty,
        )
        self.model = model
        self.num_beams = num_beams
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.length_penalty = length_penalty
        self.no_repeat_ngram_size = no_repeat_ngram_size
        self.repetition_penalty = repetition_penalty
        # None: the checkpoint's tagger's own weight
        self.image_word_weight = None if image_word_weight is None else check_weight(image_word_weight)
        self.scene_constraint = scene_constraint  # with the checkpoint's scene reader, if any
        self.model_id = model.checkpoint_id or f"{model.config.preset}:untrained"
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
        """n-best captions (best first) for each image's features (from `encode_images`), personalized by its user's keywords."""
        if len(image_features) != len(keywords):
            raise InputError(f"keywords has {len(keywords)} entries for {len(image_features)} images")
        if not image_features:
            return []
        texts = [keywords_to_text(words) for words in keywords]
        distinct = {text: row for row, text in enumerate(dict.fromkeys(texts))}
        context_features = self.model.encode_context(list(distinct))[[distinct[text] for text in texts]]  # once per user
        return self.model.generate(
            torch.stack(list(image_features)),  # (B, T, image_dim)
            context_features,
            num_beams=max(self.num_beams, num_captions),
            temperature=self.temperature,
            max_new_tokens=self.max_new_tokens,
            num_return_sequences=num_captions,
            length_penalty=self.length_penalty,
            no_repeat_ngram_size=self.no_repeat_ngram_size,
            repetition_penalty=self.repetition_penalty,
            image_word_weight=self.image_word_weight,
            scene_constraint=self.scene_constraint,
        )

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

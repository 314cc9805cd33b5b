"""`Captioner`: what the worker calls. Images plus each user's keywords in, n-best captions out."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from model.generation import BeamSettings
from model.uapt import UAPT, Caption, keywords_to_text


class Captioner:
    """Wraps a loaded UAPT model with the paper's decoding settings (beam 3, temperature 0.8)."""

    def __init__(
        self,
        model: UAPT,
        *,
        num_beams: int = 3,
        temperature: float = 0.8,
        max_new_tokens: int | None = None,
        length_penalty: float = 1.0,
    ) -> None:
        # Validate now (GenerationError), not at the first batch of a running worker.
        BeamSettings(num_beams=num_beams, temperature=temperature, max_new_tokens=max_new_tokens or 1)
        self.model = model
        self.num_beams = num_beams
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.length_penalty = length_penalty
        self.model_id = model.checkpoint_id or f"{model.config.preset}:untrained"

    def caption(
        self, images: Sequence[Image.Image], keywords: Sequence[Sequence[str]], num_captions: int = 3
    ) -> list[list[Caption]]:
        """n-best captions (best first) for each image, personalized by its user's keywords."""
        if len(images) != len(keywords):
            raise ValueError(f"keywords has {len(keywords)} entries for {len(images)} images")
        if not images:
            return []
        image_features = self.model.encode_images(images)
        texts = [keywords_to_text(words) for words in keywords]
        distinct = {text: row for row, text in enumerate(dict.fromkeys(texts))}
        context_features = self.model.encode_context(list(distinct))[[distinct[text] for text in texts]]  # once per user
        return self.model.generate(
            image_features,
            context_features,
            num_beams=max(self.num_beams, num_captions),
            temperature=self.temperature,
            max_new_tokens=self.max_new_tokens,
            num_return_sequences=num_captions,
            length_penalty=self.length_penalty,
        )

"""Scene reader: a classifier of the image's scene whose words beam search must then write.

Why: the trained prefix leaves the scene out of about a third of its captions, and in
most of those no beam names any scene (docs/RESULTS.md), so a logit bias such as
image word guidance (`model.guidance.tagger`) has nothing to move. A required word does:
where the reader is confident of the scene, beam search keeps a second bank of beams
that have written one of the scene's words and ranks their captions first
(`model.generation`, constrained beam search as in Anderson et al. 2017, who
required an image tagger's words to caption objects a captioner had not seen).

The reader is a softmax read-out of the same pooled frozen image features as the
tagger (`pool_features`), fitted on the train split's scene labels. Its words come
from the train captions, not from a list: a caption word belongs to a scene when at
least `purity` of the train captions that use it show that scene, so the users' words
for it are allowed ("beach", "sand", "shore") and the LM chooses among them. Only
one-token forms, with and without a leading space, can be required: a user whose word
is longer ("seaside") is pushed to another user's. A required token counts where it
stands, even inside a longer word (" frost" + "ing"; docs/RESULTS.md).

A fitted reader lives beside a checkpoint's weights as the read-out ``scene_reader``
(`model.guidance.storage`): ``scene_reader.safetensors`` and ``scene_reader.json``
(scenes, their words and token ids, threshold, checksum). Fitting it is offline work
(`model.training.fit_scene_reader`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor, nn

from model.guidance.scene_reader_config import SceneReaderError, SceneReaderFit, check_min_confidence
from model.guidance.storage import ReadoutError, load_readout, readout_files, save_readout
from model.guidance.tagger import pool_features

NAME = "scene_reader"  # the read-out's name in a checkpoint's folder
TENSORS_FILE, META_FILE = readout_files(NAME)
FORMAT = "uapt-scene-reader/1"


class SceneReader(nn.Module):
    """Pooled frozen image features, standardised -> a probability per scene; the confident scene's token ids."""

    def __init__(
        self, image_dim: int, bands: int, scenes: Sequence[str], words: Sequence[Sequence[str]],
        token_ids: Sequence[Sequence[int]], min_confidence: float,
    ) -> None:
        super().__init__()
        if bands < 1:
            raise SceneReaderError(f"bands must be >= 1, got {bands}")
        if not (len(scenes) == len(words) == len(token_ids)) or len(scenes) < 2:
            raise SceneReaderError(f"need 2 or more scenes, each with words and token ids; got {len(scenes)}, {len(words)}, {len(token_ids)}")
        self.image_dim = image_dim
        self.bands = bands
        self.scenes = list(scenes)
        self.words = [list(w) for w in words]
        self.token_ids = [list(ids) for ids in token_ids]
        self.min_confidence = check_min_confidence(min_confidence)
        pooled_dim = image_dim * (1 + bands if bands > 1 else 1)
        self.register_buffer("feature_mean", torch.zeros(pooled_dim))
        self.register_buffer("feature_std", torch.ones(pooled_dim))
        self.linear = nn.Linear(pooled_dim, len(scenes))
        nn.init.zeros_(self.linear.weight)  # a convex fit: starting at zero makes it the same every time
        nn.init.zeros_(self.linear.bias)
        self.requires_grad_(False)

    def forward(self, image_features: Tensor) -> Tensor:  # (B, T, D) -> (B, S) probabilities, float32
        return self.read_out(pool_features(image_features.to(self.linear.weight), self.bands)).softmax(dim=-1)

    def read_out(self, pooled: Tensor) -> Tensor:  # (B, pooled dim) -> (B, S) logits, float32
        return self.linear((pooled - self.feature_mean) / self.feature_std).float()

    def required_ids(self, image_features: Tensor) -> list[list[int]]:
        """Per image, the token ids of its most likely scene's words, or [] where that scene's probability is below the threshold."""
        confidence, scene = self(image_features).max(dim=-1)
        return [
            self.token_ids[s] if c >= self.min_confidence else []
            for c, s in zip(confidence.tolist(), scene.tolist())
        ]


def save_scene_reader(reader: SceneReader, directory: str | Path, fit: SceneReaderFit, figures: dict) -> None:
    """Write the read-out's tensors and its JSON description (with their checksum) into `directory`."""
    meta = {
        "format": FORMAT,
        "image_dim": reader.image_dim,
        "bands": reader.bands,
        "scenes": reader.scenes,
        "words": reader.words,
        "token_ids": reader.token_ids,
        "min_confidence": reader.min_confidence,
        "fit": asdict(fit),
        "figures": figures,
    }
    save_readout(directory, NAME, reader.state_dict(), meta)


def load_scene_reader(directory: str | Path, image_dim: int, vocab_size: int) -> SceneReader | None:
    """The scene reader saved in `directory`, or None when it has none; a damaged or unfitting one raises."""
    directory = Path(directory)
    meta_path, tensors_path = directory / META_FILE, directory / TENSORS_FILE
    try:
        stored = load_readout(directory, NAME, (FORMAT,))
    except ReadoutError as error:
        raise SceneReaderError(f"cannot load the scene reader: {error}") from error
    if stored is None:
        return None
    tensors, meta = stored
    try:
        if meta["image_dim"] != image_dim:
            raise SceneReaderError(f"fitted on {meta['image_dim']}-d image features, the model has {image_dim}")
        largest = max((max(ids) for ids in meta["token_ids"] if ids), default=-1)
        if any(token < 0 for ids in meta["token_ids"] for token in ids):
            raise SceneReaderError("token ids must be >= 0")
        if largest >= vocab_size:
            raise SceneReaderError(f"token id {largest} is outside the LM's vocabulary of {vocab_size}")
        reader = SceneReader(
            image_dim, int(meta["bands"]), meta["scenes"], meta["words"], meta["token_ids"], float(meta["min_confidence"])
        )
        reader.load_state_dict(tensors)
    except SceneReaderError as error:
        raise SceneReaderError(f"{meta_path}: {error}") from None
    except (KeyError, TypeError, ValueError, RuntimeError, OverflowError) as error:
        raise SceneReaderError(f"{meta_path} and {tensors_path} do not describe a scene reader for this model: {error!r}") from error
    return reader

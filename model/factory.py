"""`load_model`: the one place that builds a UAPT model from a preset (and optionally a checkpoint)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from model import assets
from model.checkpoint import load_checkpoint, read_checkpoint_config
from model.config import ConfigError, UAPTConfig, check_serving_dtype, get_config
from model.device import resolve_device, resolve_dtype
from model.encoders import build_encoders
from model.errors import ModelError
from model.guidance.aids import load_guidance
from model.lm import load_lm
from model.serving_dtype import apply_serving_dtype
from model.uapt import UAPT

logger = logging.getLogger(__name__)


class ModelUnavailable(ModelError):
    """The backbones a preset names cannot be loaded on this machine (e.g. no hub access)."""


def load_model(
    preset: str | UAPTConfig | None = "offline",
    *,
    checkpoint: str | Path | None = None,
    device: str = "auto",
    ablation: str | None = None,
    dtype: str | torch.dtype | None = None,
    serving_dtype: str | None = None,
):
    """Build UAPT for `preset` (a name or a config), optionally load a checkpoint; eval mode, backbones frozen.

    A checkpoint gives the trained prefix weights (`load_checkpoint`) and the decoding aids
    fitted beside them (`load_guidance`: image-word tagger, scene reader, where it has
    them), attached here as `model.guidance`. Damaged weights raise CheckpointError, a
    damaged aid ImageWordsError, SceneReaderError or ReadoutError,
    an OOD file for other image features OODError.

    preset None means the checkpoint's own preset and ablation (or "offline" without a
    checkpoint). dtype None means the inference default (half precision on CUDA, float32
    on CPU); training should pass "float32". `serving_dtype` (one of SERVING_DTYPES, for
    captioning) instead keeps every part float32 but the frozen LM, which goes to the
    dtype it names or, for "auto", chooses (`model.serving_dtype`); it and `dtype` are
    never both given.
    """
    if serving_dtype is not None:
        if dtype is not None:
            raise ConfigError("give dtype (the whole model's) or serving_dtype (the frozen LM's), not both")
        check_serving_dtype(serving_dtype)  # before the backbones load

    if isinstance(preset, UAPTConfig):
        config = preset
    elif preset is None and checkpoint is not None:
        config = read_checkpoint_config(checkpoint)
        if ablation is not None and ablation != config.ablation:
            config = config.with_ablation(ablation)  # load_checkpoint will report the mismatch
    else:
        config = get_config(preset or "offline", ablation)
    target = resolve_device(device)
    try:
        image_encoder, context_encoder = build_encoders(config)
        lm, tokenizer = load_lm(config.lm, config.lm_config, seed=config.backbone_seed)
    except assets.AssetMissing as error:
        raise ModelUnavailable(f"preset {config.preset!r} cannot be loaded here: {error}") from error
    model = UAPT(config, image_encoder, context_encoder, lm, tokenizer)  # prefix weights seeded per part
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
        vocab_size = model.lm.get_input_embeddings().num_embeddings
        model.guidance = load_guidance(
            checkpoint, model.image_encoder.dim, vocab_size, model.backbone_id(), model.image_encoder.num_tokens
        )
    model.to(device=target, dtype=torch.float32 if serving_dtype is not None else resolve_dtype(dtype, target))
    if serving_dtype is not None:
        apply_serving_dtype(model, serving_dtype, checkpoint)
    logger.info("loaded UAPT preset=%s ablation=%s on %s", config.preset, config.ablation, target)
    return model.eval()

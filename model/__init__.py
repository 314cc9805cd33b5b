"""The UAPT model: frozen encoders and LM, trainable prefix networks, batched beam search, checkpoints.

Importing this package is cheap and never downloads anything; backbones are built by
`load_model`.
"""

from model.captioner import Captioner
from model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from model.config import ABLATIONS, PRESETS, UAPTConfig, get_config
from model.factory import ModelUnavailable, load_model
from model.uapt import UAPT, Caption, UAPTOutput, keywords_to_text

__all__ = [
    "ABLATIONS",
    "PRESETS",
    "UAPT",
    "Caption",
    "Captioner",
    "CheckpointError",
    "ModelUnavailable",
    "UAPTConfig",
    "UAPTOutput",
    "get_config",
    "keywords_to_text",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
]

"""The UAPT model: frozen encoders and LM, trainable prefix networks, batched beam search, checkpoints.

The names below are imported on first use (PEP 562), so `import model` (and with it
`uapt --help`) does not pay for torch. Nothing here downloads anything; backbones are
built by `load_model`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ABLATIONS": "model.config",
    "PRESETS": "model.config",
    "UAPTConfig": "model.config",
    "get_config": "model.config",
    "UAPT": "model.uapt",
    "Caption": "model.uapt",
    "UAPTOutput": "model.uapt",
    "keywords_to_text": "model.uapt",
    "Captioner": "model.captioner",
    "CheckpointError": "model.checkpoint",
    "load_checkpoint": "model.checkpoint",
    "save_checkpoint": "model.checkpoint",
    "ModelUnavailable": "model.factory",
    "load_model": "model.factory",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from model.captioner import Captioner
    from model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from model.config import ABLATIONS, PRESETS, UAPTConfig, get_config
    from model.factory import ModelUnavailable, load_model
    from model.uapt import UAPT, Caption, UAPTOutput, keywords_to_text


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value

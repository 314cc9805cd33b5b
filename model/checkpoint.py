"""Checkpoints: only the trainable weights (safetensors) plus a JSON config naming the frozen backbones.

Nothing is ever unpickled: safetensors holds raw tensors and config.json holds plain
data. A checksum of the weights file in config.json catches corrupted copies.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from model.assets import file_sha256
from model.config import ConfigError, UAPTConfig
from model.device import dtype_name
from model.errors import ModelError
from model.guidance.aids import READOUT_FILES

WEIGHTS_FILE = "trainable.safetensors"
CONFIG_FILE = "config.json"
FORMAT = "uapt-checkpoint/1"
NOT_COMPARED = {"notes", "init_seed"}
"""Config fields a checkpoint may differ in from the model it loads into: they say nothing about its weights."""
SIDE_FILES = ("metrics.json", "curve.png", *READOUT_FILES)
"""Written beside the weights (by the trainer, `uapt fit-image-words`, `uapt fit-scene-reader`, `uapt fit-ood`); they travel with a copied checkpoint."""


class CheckpointError(ModelError):
    """A checkpoint that is missing, corrupt, or made for a different model."""


def save_checkpoint(
    model, out_dir: str | Path, extra: dict[str, Any] | None = None, dtype: torch.dtype = torch.float32
) -> Path:
    """Write trainable.safetensors (in `dtype`) and config.json to `out_dir`; returns the directory."""
    tensors = {name: t.detach().to("cpu") for name, t in model.prefix.state_dict().items()}
    meta = {
        "format": FORMAT,
        "config": model.config.to_dict(),
        "backbone_id": model.backbone_id(),
        "trainable_parameters": sum(p.numel() for p in model.trainable_parameters()),
        "extra": extra or {},
    }
    return _write(Path(out_dir), tensors, meta, dtype)


def copy_checkpoint(ckpt_dir: str | Path, out_dir: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Copy a checkpoint with its weights stored in `dtype`, e.g. float16 to ship a small one.

    Needs no model: the weights and config are read and written as they are. Loading
    casts the weights back to the model's dtype.
    """

    src, out = Path(ckpt_dir), Path(out_dir)
    meta = _read_meta(src)
    if src.resolve() == out.resolve():
        raise CheckpointError(f"out_dir must differ from ckpt_dir ({src})")
    _write(out, load_file(str(src / WEIGHTS_FILE)), meta, dtype)
    for name in SIDE_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)
    return out


def _write(out: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any], dtype: torch.dtype) -> Path:
    """The one writer of a checkpoint folder: weights in `dtype`, then config.json with their checksum."""

    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHTS_FILE
    save_file({name: t.to(dtype).contiguous() for name, t in tensors.items()}, str(weights))
    meta = {**meta, "sha256": file_sha256(weights), "stored_dtype": dtype_name(dtype)}
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return out


def read_checkpoint_config(ckpt_dir: str | Path) -> UAPTConfig:
    """The UAPTConfig a checkpoint was trained with (to build the matching model)."""
    return UAPTConfig.from_dict(_read_meta(Path(ckpt_dir))["config"])


def weights_sha256(ckpt_dir: str | Path) -> str:
    """The checksum of a checkpoint's trainable weights, as its config records it: what names the trained weights."""
    return _read_meta(Path(ckpt_dir))["sha256"]


def load_checkpoint(model, ckpt_dir: str | Path) -> None:
    """Load trainable weights into `model` after checking they were made for exactly this model.

    Only the weights: the decoding aids fitted beside them are `model.guidance.aids.load_guidance`'s.
    """

    directory = Path(ckpt_dir)
    meta = _read_meta(directory)
    saved = meta["config"]
    current = model.config.to_dict()
    differing = sorted(
        k for k in set(saved) | set(current) if k not in NOT_COMPARED and saved.get(k) != current.get(k)
    )
    if differing:
        details = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs model {current.get(k)!r}" for k in differing)
        raise CheckpointError(f"checkpoint {directory} was made for a different model ({details})")
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"checkpoint {directory} has no {WEIGHTS_FILE}")
    if file_sha256(weights) != meta.get("sha256"):
        raise CheckpointError(f"checkpoint {directory}: {WEIGHTS_FILE} does not match the checksum in {CONFIG_FILE}")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"checkpoint {directory}: cannot read {WEIGHTS_FILE}: {error}") from error
    expected = model.prefix.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if tensors[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"checkpoint {directory} does not fit the model: missing {missing}, unexpected {unexpected}, wrong shape {wrong}"
        )
    model.prefix.load_state_dict(tensors)
    model.checkpoint_id = f"{directory.resolve().name}@{meta['sha256'][:12]}"


def _read_meta(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a UAPT checkpoint (no {CONFIG_FILE})")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"checkpoint {directory}: {CONFIG_FILE} is unreadable: {error}") from error
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"checkpoint {directory}: {CONFIG_FILE} is not in format {FORMAT}")
    try:
        UAPTConfig.from_dict(meta["config"])
    except (ConfigError, TypeError) as error:
        raise CheckpointError(f"checkpoint {directory}: invalid config: {error}") from error
    return meta


def write_whole(path: Path, text: str) -> None:
    """Write through a temporary file and rename it: processes sharing the folder never read half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)

"""Shrink a trained checkpoint for shipping: the same weights stored as float16.

`model.checkpoint.save_checkpoint` writes float32. A checkpoint meant to be
committed beside the code (the demo's) has to stay small, and the prefix
networks lose nothing visible at half precision. `load_checkpoint` takes the
result as it is: safetensors carries the dtype, `load_state_dict` casts back
to the model's dtype, and the checksum in config.json is recomputed here for
the new file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, read_checkpoint_config


def half_precision_copy(ckpt_dir: str | Path, out_dir: str | Path) -> Path:
    """Copy checkpoint `ckpt_dir` to `out_dir` with float16 weights; returns `out_dir`."""
    src, out = Path(ckpt_dir), Path(out_dir)
    read_checkpoint_config(src)  # refuses anything that is not a checkpoint
    if src.resolve() == out.resolve():
        raise ValueError(f"out_dir must differ from ckpt_dir ({src})")
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.to(torch.float16).contiguous() for k, v in load_file(str(src / WEIGHTS_FILE)).items()}
    save_file(tensors, str(out / WEIGHTS_FILE))
    meta = json.loads((src / CONFIG_FILE).read_text(encoding="utf-8"))
    meta["sha256"] = hashlib.sha256((out / WEIGHTS_FILE).read_bytes()).hexdigest()
    meta.setdefault("extra", {})["stored_dtype"] = "float16"
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
    for name in ("metrics.json", "curve.png"):
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)
    return out

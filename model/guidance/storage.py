"""A read-out fitted beside a checkpoint's weights: its tensors (safetensors) and a JSON description with their checksum.

The image-word tagger (`model.guidance.tagger`) and the scene reader (`model.guidance.scene_reader`)
are stored this way, so that a damaged or swapped tensor file is refused at load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from model.assets import file_sha256


def write_readout(directory: Path, tensors_file: str, meta_file: str, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Write the tensors, then the description with their checksum added as "sha256"."""
    save_file({name: value.detach().cpu().contiguous() for name, value in tensors.items()}, str(directory / tensors_file))
    meta = {**meta, "sha256": file_sha256(directory / tensors_file)}
    (directory / meta_file).write_text(json.dumps(meta, indent=1), encoding="utf-8")


def read_readout(
    directory: Path, tensors_file: str, meta_file: str, formats: tuple[str, ...], error: type[Exception], what: str
) -> tuple[dict[str, Any], dict[str, Tensor]] | None:
    """(description, tensors), or None when `directory` has no description; raises `error` on a damaged pair."""
    meta_path, tensors_path = directory / meta_file, directory / tensors_file
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        checksum = file_sha256(tensors_path)
    except (OSError, ValueError) as failure:
        raise error(f"{directory}: cannot read the {what}: {failure}") from failure
    if not isinstance(meta, dict) or meta.get("format") not in formats:
        raise error(f"{meta_path} is not in format {' or '.join(formats)}")
    if checksum != meta.get("sha256"):
        raise error(f"{tensors_path} does not match the checksum in {meta_path}")
    try:
        return meta, load_file(str(tensors_path))
    except (OSError, SafetensorError) as failure:
        raise error(f"{directory}: cannot read the {what}: {failure}") from failure

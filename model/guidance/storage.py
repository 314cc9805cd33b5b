"""The one storage format of a decoding aid fitted beside a checkpoint's weights: a read-out.

A read-out called NAME is two files in the checkpoint's folder: ``NAME.safetensors``
(its tensors) and ``NAME.json`` (its description: a "format" and whatever its model
needs, plus the tensor file's checksum as "sha256", added on save). A damaged or
swapped tensor file is refused at load. The image-word tagger
(`model.guidance.tagger`) and the scene reader (`model.guidance.scene_reader`) are
stored this way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from model.assets import file_sha256
from model.errors import ModelError


class ReadoutError(ModelError):
    """A read-out whose files cannot be read, are in another format, or do not match their checksum."""


def readout_files(name: str) -> tuple[str, str]:
    """The file names of read-out `name`: (tensors, description)."""
    return f"{name}.safetensors", f"{name}.json"


def save_readout(directory: str | Path, name: str, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Write the tensors, then the description `meta` with their checksum added as "sha256"."""
    directory = Path(directory)
    tensors_file, meta_file = readout_files(name)
    save_file({key: value.detach().cpu().contiguous() for key, value in tensors.items()}, str(directory / tensors_file))
    meta = {**meta, "sha256": file_sha256(directory / tensors_file)}
    (directory / meta_file).write_text(json.dumps(meta, indent=1), encoding="utf-8")


def load_readout(
    directory: str | Path, name: str, formats: tuple[str, ...]
) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
    """(tensors, description) of read-out `name`, or None when `directory` has no description.

    Raises ReadoutError when the description is unreadable or not in one of `formats`,
    or the tensors are unreadable or do not match the description's checksum.
    """
    directory = Path(directory)
    tensors_file, meta_file = readout_files(name)
    meta_path, tensors_path = directory / meta_file, directory / tensors_file
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        checksum = file_sha256(tensors_path)
    except (OSError, ValueError) as failure:
        raise ReadoutError(f"{directory}: cannot read {name}: {failure}") from failure
    if not isinstance(meta, dict) or meta.get("format") not in formats:
        raise ReadoutError(f"{meta_path} is not in format {' or '.join(formats)}")
    if checksum != meta.get("sha256"):
        raise ReadoutError(f"{tensors_path} does not match the checksum in {meta_path}")
    try:
        return load_file(str(tensors_path)), meta
    except (OSError, SafetensorError) as failure:
        raise ReadoutError(f"{directory}: cannot read {name}: {failure}") from failure

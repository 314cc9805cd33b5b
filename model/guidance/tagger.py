"""Image word guidance: a read-out of which caption words an image makes likely, used to steer decoding.

Why: the trained prefix passes the image's scene on weakly (docs/RESULTS.md),
while a linear read-out of the same frozen features names the scene at 0.89. The
`ImageWordTagger` is such a read-out, fitted to the words of the train captions (no
labels): for each word w of its vocabulary it predicts p(w in caption | image).

Decoding adds ``weight * (log p(w | image) - log p(w))``, the image's pointwise mutual
information with w, to the logits of w's tokens. Words the image makes likelier than
usual gain, words it makes unlikely lose, and words the image says nothing about (a
user's hashtags, a series counter) keep what the LM gives them. With weight 1 this is
Bayes' rule for p(w | image, user) if image and user are independent given w. Not in
the paper; MAGIC (Su et al. 2022) steers an LM with CLIP scores in the same spirit.

The read-out sees the image's mean feature and, with ``bands`` > 1, the mean of each
horizontal band of the feature grid (top to bottom) beside it: the whole-image mean
mixes what is above with what is below, and a scene is largely sky over ground
(spatial pyramid pooling, Lazebnik et al. 2006, along one axis).

Where the bias goes: each word's one-token forms, with and without a leading space.
The form without one is the caption's first word, but also what follows "#" and what
ends some longer words (" bobcat" is " bob" + "cat"), so a tagger can steer it at every
token, at the caption's first token only, or never (`TaggerFit.bare_form`; docs/RESULTS.md).

A tagger may also carry a plausibility gate for decoding (`model.generation`): the bias
then moves only tokens the LM finds plausible at that step (measured after the
repetition penalty and the temperature).

A fitted tagger lives beside a checkpoint's weights as the read-out ``image_words``
(`model.guidance.storage`): ``image_words.safetensors`` (the read-out) and
``image_words.json`` (vocabulary, token ids, default weight, checksum). Fitting it is
offline work (`model.training.fit_tagger`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.generation import TokenBias
from model.guidance.storage import ReadoutError, load_readout, readout_files, save_readout
from model.guidance.tagger_config import ImageWordsError, TaggerFit, check_bare_form, check_plausibility, check_weight

NAME = "image_words"  # the read-out's name in a checkpoint's folder
TENSORS_FILE, META_FILE = readout_files(NAME)
FORMAT = "uapt-image-words/2"  # 2 added first_token_ids: code that reads only 1 would drop them unseen
READABLE_FORMATS = (FORMAT, "uapt-image-words/1")
WORD = re.compile(r"[a-z]+")


def caption_words(text: str) -> set[str]:
    """The lower-case alphabetic words of a caption (hashtags lose their '#', emoji drop out)."""
    return set(WORD.findall(text.lower()))


def single_token_ids(tokenizer, word: str, bare_form: str = "everywhere") -> tuple[list[int], list[int]]:
    """(ids steered at every token, ids steered at the caption's first token only) of `word`.

    Only one-token forms are steered. " word" is steered at every token; "word" (no
    leading space) joins it, goes to the first token only, or is left out, as
    `bare_form` says (`TaggerFit`).
    """
    check_bare_form(bare_form)
    spaced, bare = (tokenizer(form, add_special_tokens=False).input_ids for form in (" " + word, word))
    every = [int(spaced[0])] if len(spaced) == 1 else []
    if len(bare) != 1 or bare_form == "never":
        return every, []
    if bare_form == "first-word":
        return every, [int(bare[0])]
    return every + [int(bare[0])], []


def pool_features(image_features: Tensor, bands: int) -> Tensor:
    """(B, T, D) image tokens -> (B, D) mean, or with `bands` > 1 (B, (1 + bands) * D): the mean, then each band's.

    Bands are horizontal strips of the token grid, top first; the tokens must be a
    square grid in raster order (`model.encoders`), with at least `bands` rows.
    """
    pooled = image_features.mean(dim=1)
    if bands == 1:
        return pooled
    batch, tokens, dim = image_features.shape
    side = math.isqrt(tokens)
    if side * side != tokens or side < bands:
        raise ImageWordsError(
            f"{bands} bands need a square grid of at least {bands} rows; the image has {tokens} tokens"
        )
    rows = image_features.reshape(batch, side, side, dim).mean(dim=2)  # (B, side, D)
    edges = [round(i * side / bands) for i in range(bands + 1)]
    return torch.cat([pooled] + [rows[:, top:bottom].mean(dim=1) for top, bottom in zip(edges, edges[1:])], dim=-1)


def _flatten(ids_per_word: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    """Every token id, and the row of the word it belongs to: two (K,) long tensors."""
    pairs = [(token, row) for row, ids in enumerate(ids_per_word) for token in ids]
    return (torch.tensor([t for t, _ in pairs], dtype=torch.long), torch.tensor([r for _, r in pairs], dtype=torch.long))


class ImageWordTagger(nn.Module):
    """Pooled frozen image features (`pool_features`), standardised -> one logit per word (is it in the caption?)."""

    def __init__(
        self,
        image_dim: int,
        words: Sequence[str],
        token_ids: Sequence[Sequence[int]],
        log_prior: Tensor,
        pmi_cap: float,
        weight: float,
        bands: int = 1,
        plausibility: float = 0.0,
        first_token_ids: Sequence[Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        if bands < 1:
            raise ImageWordsError(f"bands must be >= 1, got {bands}")
        if not (len(words) == len(token_ids) == log_prior.numel()):
            raise ImageWordsError(
                f"{len(words)} words, {len(token_ids)} token-id lists and {log_prior.numel()} priors must match"
            )
        if first_token_ids is None:
            first_token_ids = [[] for _ in words]
        if len(first_token_ids) != len(words):
            raise ImageWordsError(f"{len(words)} words and {len(first_token_ids)} first-token id lists must match")
        self.words = list(words)
        self.token_ids = [list(ids) for ids in token_ids]  # steered at every token
        self.first_token_ids = [list(ids) for ids in first_token_ids]  # steered at the caption's first token only
        self.pmi_cap = pmi_cap
        self.weight = weight
        self.plausibility = plausibility  # the gate of its bias in decoding (`TokenBias.plausibility`, `model.generation`)
        self.image_dim = image_dim
        self.bands = bands
        pooled_dim = image_dim * (1 + bands if bands > 1 else 1)
        self.register_buffer("feature_mean", torch.zeros(pooled_dim))
        self.register_buffer("feature_std", torch.ones(pooled_dim))
        self.linear = nn.Linear(pooled_dim, len(words))
        self.register_buffer("log_prior", log_prior.float().clone())
        # starts at the priors: no image evidence until the fit finds some
        nn.init.zeros_(self.linear.weight)
        with torch.no_grad():
            self.linear.bias.copy_(torch.logit(self.log_prior.exp(), eps=1e-4))
        # (K,) pairs: token `flat_tokens[k]` takes the guidance of word `flat_words[k]`
        tokens, rows = _flatten(self.token_ids)
        self.register_buffer("flat_tokens", tokens)
        self.register_buffer("flat_words", rows)
        # the same for the first token only; rebuilt from the JSON rather than saved, so that
        # tensor files written before first-token steering still load
        tokens, rows = _flatten(self.first_token_ids)
        self.register_buffer("first_flat_tokens", tokens, persistent=False)
        self.register_buffer("first_flat_words", rows, persistent=False)
        self.requires_grad_(False)

    def forward(self, image_features: Tensor) -> Tensor:  # (B, T, D) -> (B, W) logits, float32
        # in the read-out's own dtype and device: a model cast to half precision on CUDA casts it too
        return self.read_out(pool_features(image_features.to(self.linear.weight), self.bands))

    def read_out(self, pooled: Tensor) -> Tensor:  # (B, pooled dim) -> (B, W) logits, float32
        return self.linear((pooled - self.feature_mean) / self.feature_std).float()

    def pmi(self, image_features: Tensor) -> Tensor:
        """log p(w | image) - log p(w), capped at +-pmi_cap: (B, W)."""
        return (F.logsigmoid(self(image_features)) - self.log_prior.float()).clamp(-self.pmi_cap, self.pmi_cap)

    def token_bias(self, image_features: Tensor, vocab_size: int, weight: float) -> TokenBias:
        """The logit biases (B, vocab_size) that decoding adds: weight x PMI on each word's tokens, 0 elsewhere.

        At the caption's first token the first-token-only ids are steered too.
        """
        pmi = self.pmi(image_features)
        later = pmi.new_zeros(pmi.size(0), vocab_size)
        later[:, self.flat_tokens] = weight * pmi[:, self.flat_words]
        if not self.first_flat_tokens.numel():
            return TokenBias.every_step(later)
        first = later.clone()
        first[:, self.first_flat_tokens] = weight * pmi[:, self.first_flat_words]
        return TokenBias(first, later)


def save_tagger(tagger: ImageWordTagger, directory: str | Path, fit: TaggerFit, figures: dict) -> None:
    """Write the read-out's tensors and its JSON description (with their checksum) into `directory`."""
    meta = {
        "format": FORMAT,
        "image_dim": tagger.image_dim,
        "bands": tagger.bands,
        "plausibility": tagger.plausibility,
        "words": tagger.words,
        "token_ids": tagger.token_ids,
        "first_token_ids": tagger.first_token_ids,
        "pmi_cap": tagger.pmi_cap,
        "weight": tagger.weight,
        "fit": asdict(fit),
        "figures": figures,
    }
    save_readout(directory, NAME, tagger.state_dict(), meta)


def load_tagger(directory: str | Path, image_dim: int, vocab_size: int) -> ImageWordTagger | None:
    """The tagger saved in `directory`, or None when it has none; a damaged or unfitting one raises."""
    directory = Path(directory)
    meta_path, tensors_path = directory / META_FILE, directory / TENSORS_FILE
    try:
        stored = load_readout(directory, NAME, READABLE_FORMATS)
    except ReadoutError as error:
        raise ImageWordsError(f"cannot load the image-word tagger: {error}") from error
    if stored is None:
        return None
    tensors, meta = stored
    try:
        if meta["image_dim"] != image_dim:
            raise ImageWordsError(f"fitted on {meta['image_dim']}-d image features, the model has {image_dim}")
        first_token_ids = meta.get("first_token_ids")  # taggers written before first-token steering have none
        largest = max((max(ids) for ids in meta["token_ids"] + (first_token_ids or []) if ids), default=-1)
        if largest >= vocab_size:
            raise ImageWordsError(f"token id {largest} is outside the LM's vocabulary of {vocab_size}")
        tagger = ImageWordTagger(
            image_dim, meta["words"], meta["token_ids"], tensors["log_prior"], float(meta["pmi_cap"]),
            check_weight(float(meta["weight"])),
            int(meta.get("bands", 1)),  # taggers written before bands and the gate pooled the mean, ungated
            check_plausibility(float(meta.get("plausibility", 0.0))),
            first_token_ids,
        )
        tagger.load_state_dict(tensors)
    except ImageWordsError as error:
        raise ImageWordsError(f"{meta_path}: {error}") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise ImageWordsError(f"{meta_path} and {tensors_path} do not describe a tagger for this model: {error!r}") from error
    return tagger

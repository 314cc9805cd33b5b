"""Fit an image-word tagger (`model.guidance.tagger`): on features and captions, or on a checkpoint's train split.

Minutes, not hours: the frozen image features come from the feature cache, the
tagger is a logistic read-out, and the LM is loaded only for its tokenizer. The
val split scores the fit (binary cross-entropy against the word priors alone).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from model.data.dataset import PostRecord
from model.guidance.tagger import ImageWordTagger, caption_words, pool_features, save_tagger, single_token_ids
from model.guidance.tagger_config import ImageWordsError, TaggerFit
from model.training.features import checkpoint_splits

logger = logging.getLogger(__name__)


def build_vocabulary(
    captions: Sequence[str], tokenizer, min_count: int, bare_form: str = "everywhere"
) -> tuple[list[str], list[list[int]], list[list[int]], Tensor]:
    """Words used by at least `min_count` captions that have a steered one-token form.

    Returns (words, ids steered at every token, ids steered at the first token only,
    multi-hot (N, W)); see `single_token_ids`.
    """
    counts = Counter(word for text in captions for word in caption_words(text))
    words, token_ids, first_token_ids = [], [], []
    for word, count in sorted(counts.items()):
        every, first = single_token_ids(tokenizer, word, bare_form) if count >= min_count else ([], [])
        if every or first:
            words.append(word)
            token_ids.append(every)
            first_token_ids.append(first)
    if not words:
        raise ImageWordsError(f"no caption word is used by {min_count} captions and is one token: nothing to fit")
    return words, token_ids, first_token_ids, word_targets(words, captions)


def word_targets(words: Sequence[str], captions: Sequence[str]) -> Tensor:
    """(N, W) multi-hot: does caption i use word j."""
    column = {word: j for j, word in enumerate(words)}
    targets = torch.zeros(len(captions), len(words))
    for i, text in enumerate(captions):
        for word in caption_words(text) & column.keys():
            targets[i, column[word]] = 1.0
    return targets


def fit_tagger(
    image_features: Tensor,
    captions: Sequence[str],
    tokenizer,
    fit: TaggerFit = TaggerFit(),
    val: tuple[Tensor, Sequence[str]] | None = None,
) -> tuple[ImageWordTagger, dict]:
    """Fit the read-out on train images and their captions; returns it and fit figures (BCE, and on `val` if given).

    With several L2 penalties in `fit`, one read-out is fitted per penalty and each word keeps
    the weights of the penalty with its lowest cross-entropy on `val`; the figures' `val_bce`
    (and `min_val_gain`'s choice) then read the split that chose the penalties, which flatters them.
    """
    if image_features.size(0) != len(captions) or not captions:
        raise ImageWordsError(f"{image_features.size(0)} images for {len(captions)} captions")
    if len(fit.l2) > 1 and val is None:
        raise ImageWordsError(f"choosing among {len(fit.l2)} L2 penalties word by word needs val images and captions")
    words, token_ids, first_token_ids, targets = build_vocabulary(captions, tokenizer, fit.min_count, fit.bare_form)
    prior = targets.mean(dim=0).clamp(min=1.0 / len(captions))
    tagger = ImageWordTagger(
        image_features.size(-1), words, token_ids, prior.log(), fit.pmi_cap, fit.weight, fit.bands, fit.plausibility,
        first_token_ids,
    )
    pooled = pool_features(image_features.float(), fit.bands)  # pooled once, not at every fit or step
    tagger.feature_mean.copy_(pooled.mean(dim=0))
    tagger.feature_std.copy_(pooled.std(dim=0).clamp(min=1e-6))
    figures: dict = {"words": len(words), "train_captions": len(captions)}
    if len(fit.l2) == 1:
        _fit_read_out(tagger, pooled, targets, fit, fit.l2[0])
    else:
        start = {name: value.clone() for name, value in tagger.linear.state_dict().items()}
        weights, biases, val_losses = [], [], []  # one of each per penalty
        for l2 in fit.l2:
            tagger.linear.load_state_dict(start)
            _fit_read_out(tagger, pooled, targets, fit, l2)
            weights.append(tagger.linear.weight.clone())
            biases.append(tagger.linear.bias.clone())
            val_losses.append(per_word_bce(tagger, *val))
        choice = torch.stack(val_losses).argmin(dim=0)  # (W,) index into fit.l2
        rows = torch.arange(len(words))
        tagger.linear.weight.copy_(torch.stack(weights)[choice, rows])
        tagger.linear.bias.copy_(torch.stack(biases)[choice, rows])
        figures["words_per_l2"] = {str(l2): int((choice == i).sum()) for i, l2 in enumerate(fit.l2)}
    # the final weights' train loss, on the pooled features and targets already in hand
    figures["train_bce"] = float(F.binary_cross_entropy_with_logits(tagger.read_out(pooled), targets))
    if val is not None:
        val_features, val_captions = val
        figures["val_bce"] = bce(tagger, val_features, val_captions)
        figures["val_bce_prior_only"] = bce(tagger, val_features, val_captions, prior_only=True)
        if fit.min_val_gain > 0:
            tagger = keep_predicted_words(tagger, val_features, val_captions, fit.min_val_gain)
            figures["words_steered"] = len(tagger.words)
    elif fit.min_val_gain > 0:
        raise ImageWordsError("min_val_gain needs val images and captions to tell which words the image predicts")
    return tagger, figures


def _fit_read_out(tagger: ImageWordTagger, pooled: Tensor, targets: Tensor, fit: TaggerFit, l2: float) -> None:
    """Full-batch Adam on the read-out's mean cross-entropy plus `l2` times its squared weights, in place."""
    tagger.linear.requires_grad_(True)
    optimizer = torch.optim.Adam(tagger.linear.parameters(), lr=fit.lr)
    for _ in tqdm(range(fit.steps), desc=f"fitting image words (L2 {l2:g})", leave=False, mininterval=2):
        loss = F.binary_cross_entropy_with_logits(tagger.read_out(pooled), targets)
        optimizer.zero_grad(set_to_none=True)
        (loss + l2 * tagger.linear.weight.pow(2).sum()).backward()
        optimizer.step()
    tagger.linear.requires_grad_(False)


@torch.no_grad()
def keep_predicted_words(tagger: ImageWordTagger, image_features: Tensor, captions: Sequence[str], min_gain: float) -> ImageWordTagger:
    """The tagger cut to the words whose cross-entropy on these captions is at least `min_gain` below their prior's.

    The other words are ones the picture cannot predict (a user's hashtags, sign-offs,
    chance phrases): steering them only bends the user's text.
    """
    readout = per_word_bce(tagger, image_features, captions)
    baseline = per_word_bce(tagger, image_features, captions, prior_only=True)
    keep = ((baseline - readout) >= min_gain * baseline).nonzero().flatten().tolist()
    if not keep:
        raise ImageWordsError(f"no word's val cross-entropy is {min_gain:.0%} below its prior's: nothing to steer")
    kept = ImageWordTagger(
        tagger.image_dim, [tagger.words[j] for j in keep], [tagger.token_ids[j] for j in keep],
        tagger.log_prior[keep], tagger.pmi_cap, tagger.weight, tagger.bands, tagger.plausibility,
        [tagger.first_token_ids[j] for j in keep],
    )
    kept.feature_mean.copy_(tagger.feature_mean)
    kept.feature_std.copy_(tagger.feature_std)
    kept.linear.weight.copy_(tagger.linear.weight[keep])
    kept.linear.bias.copy_(tagger.linear.bias[keep])
    return kept


@torch.no_grad()
def per_word_bce(tagger: ImageWordTagger, image_features: Tensor, captions: Sequence[str], prior_only: bool = False) -> Tensor:
    """(W,) binary cross-entropy of the tagger (or of the word priors alone) for each word, over these captions."""
    targets = word_targets(tagger.words, captions)
    if prior_only:
        prior = tagger.log_prior.float().exp().clamp(max=1 - 1e-6).expand_as(targets)
        return F.binary_cross_entropy(prior, targets, reduction="none").mean(dim=0)
    return F.binary_cross_entropy_with_logits(tagger(image_features), targets, reduction="none").mean(dim=0)


def bce(tagger: ImageWordTagger, image_features: Tensor, captions: Sequence[str], prior_only: bool = False) -> float:
    """Mean binary cross-entropy over all words (see `per_word_bce`)."""
    return float(per_word_bce(tagger, image_features, captions, prior_only).mean())


def fit_checkpoint_tagger(
    records: Sequence[PostRecord],
    checkpoint: str | Path,
    fit: TaggerFit = TaggerFit(),
    *,
    cache_dir: str | Path = "runs/feature-cache",
    device: str = "auto",
) -> dict:
    """Fit the tagger on the train split's images and captions, save it into `checkpoint`; returns its fit figures."""
    model, train, val = checkpoint_splits(records, checkpoint, cache_dir, device)
    tagger, figures = fit_tagger(
        train.image_features[:],
        [s.text for s in train.samples],
        model.tokenizer,
        fit,
        val=(val.image_features[:], [s.text for s in val.samples]) if val.samples else None,
    )
    save_tagger(tagger, checkpoint, fit, figures)
    logger.info("image words: %d words fitted on %d train captions, saved in %s", len(tagger.words), len(train.samples), checkpoint)
    return figures

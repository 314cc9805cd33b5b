"""Decoding a frozen causal LM from prefix embeddings: batched beam search, greedy, and a naive reference.

`beam_search` runs all images and all their beams as one batch through the LM's KV
cache (`model.beam_cache`): the prefix (plus an optional per-image prompt, left-padded)
is encoded once, and each step feeds one token per live beam, each row continuing its
parent's cache row. Rows that hold no beam (scored -inf: the copies of an image's one
start beam, the second bank of an image with nothing required, the places of beams
that ended) never reach the LM, and images that finish drop out of the batch. In a
profile (offline preset, batch 16, beam 3, float32, CPU) the LM's matmuls took two
thirds of a decode and the copies of Hugging Face's dynamic cache a sixth;
`next_log_probs`, the top-k and this module's Python bookkeeping stayed under 3%.

`naive_beam_search` is the reference it is tested against: one image at a time, and
the whole sequence recomputed at every step (no cache, no padding). Both share the
per-image bookkeeping in `_ImageBeams`, so they differ only in how log-probabilities
are computed.

Every decoder reads its settings from `model.config.DecodingOptions` (beam width,
temperature, repetition control, length limit, n-best size, length penalty); the length
limit must be set (`UAPT.generate` sets the model's own when it is None).

Scores are length-normalized sums of log-probabilities of the generated tokens
(eos included), computed from logits divided by the temperature. The n-best list puts
captions that ended (eos) before beams cut at `max_new_tokens`, whatever their scores;
Hugging Face's beam search ranks both kinds together by score.

Every decoder applies the same repetition control to each row, from the tokens that
row has generated so far (`next_log_probs`): a repetition penalty on the logits of
tokens already generated (the CTRL rule, as Hugging Face's
`RepetitionPenaltyLogitsProcessor`), and a ban on any token that would repeat an
n-gram (`NoRepeatNGramLogitsProcessor`'s rule). Scores include both, so the batched
and naive searches still choose the same beams. Image word guidance (a per-image
logit bias, `TokenBias`, which may differ at the caption's first token) goes
through the same function, with an optional plausibility gate: the
bias only moves tokens that the decoding distribution (the LM's, after the repetition
penalty and the temperature) gives at least `TokenBias.plausibility` times the
probability of its most likely next token (the adaptive plausibility constraint of
contrastive decoding, Li et al. 2023), so a confident read-out cannot force a word
into a place where the LM would never put one. At temperature T the gate is α^T in
the LM's raw probabilities: α = 0.1 at the default 0.8 admits tokens within 0.158.

Both beam searches can also require a word: given `required_ids` (token ids per image),
each image keeps two banks of K beams, those that have not yet generated one of its
required tokens and those that have (constrained beam search with one disjunctive
constraint, Anderson et al. 2017; Hokamp and Liu 2017), and its n-best list puts the
finished captions with a required token first (`_ImageSearch`). Every image of such a
batch has 2K rows: one whose list is empty starts in the second bank, which is then
plain beam search with K idle rows beside it. A required token counts where it stands,
even when the next token continues the word (" frost" + "ing").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from model.beam_cache import BeamCache
from model.config import DecodingOptions
from model.errors import ModelError
from model.guidance.tagger_config import ImageWordsError, check_plausibility


class GenerationError(ModelError):
    """Decoder inputs that cannot work (the settings themselves are checked by `DecodingOptions`)."""


class TokenBias(NamedTuple):
    """Per-image logit biases (B, V): `first` for the caption's first token, `later` for every token after it.

    `plausibility` is the bias's gate (module docstring): it moves only tokens at least
    this likely relative to the top one, after temperature (0: every token). It comes
    with the bias because it is fitted with it (stored with the image-word tagger).

    They differ when image word guidance steers a word's form without a leading space
    at the caption's first word only (`model.guidance.tagger`, ``--bare-form first-word``):
    elsewhere that form follows "#" or ends a longer word. After a prompt, the first
    generated token continues the prompt, so the decoders give it `later`
    (`_caption_start_bias`).
    """

    first: Tensor
    later: Tensor
    plausibility: float = 0.0

    @classmethod
    def every_step(cls, bias: Tensor, plausibility: float = 0.0) -> TokenBias:
        return cls(bias, bias, plausibility)

    def at(self, step: int) -> Tensor:
        """The bias for generated token `step` (0: the first)."""
        return self.first if step == 0 else self.later


class Hypothesis(NamedTuple):
    token_ids: tuple[int, ...]  # generated tokens, without the final eos
    score: float
    finished: bool  # ended with eos; False: cut at max_new_tokens


def normalized_score(sum_logprob: float, length: int, length_penalty: float) -> float:
    return sum_logprob / max(length, 1) ** length_penalty


def _best_first(hypotheses: Iterable[Hypothesis]) -> list[Hypothesis]:
    return sorted(hypotheses, key=lambda h: h.score, reverse=True)


class _ImageBeams:
    """One image's finished hypotheses, and the beam-selection rule both decoders share."""

    def __init__(self, decoding: DecodingOptions, eos_id: int) -> None:
        self.decoding = decoding
        self.eos_id = eos_id
        self.finished: list[Hypothesis] = []

    def select(
        self, scores: Sequence[float], beams: Sequence[int], tokens: Sequence[int], live: Sequence[tuple[int, ...]]
    ) -> list[tuple[int, int, float]]:
        """From the top 2K candidates (best first), record finished ones; return K (beam, token, score) to go on."""
        width = self.decoding.num_beams
        chosen: list[tuple[int, int, float]] = []
        for rank, (score, beam, token) in enumerate(zip(scores, beams, tokens)):
            if score == -math.inf:
                break
            if token == self.eos_id:
                if rank < width:  # an eos below the top K would not have survived as a beam
                    length = len(live[beam]) + 1
                    self.finished.append(
                        Hypothesis(live[beam], normalized_score(score, length, self.decoding.length_penalty), True)
                    )
            else:
                chosen.append((beam, token, score))
                if len(chosen) == width:
                    break
        return chosen

    def is_done(self, best_live_score: float, length: int) -> bool:
        """Done when K hypotheses are finished and no live beam can still beat the worst of them."""
        width = self.decoding.num_beams
        if len(self.finished) < width:
            return False
        worst_kept = _best_first(self.finished)[width - 1]
        return normalized_score(best_live_score, length, self.decoding.length_penalty) <= worst_kept.score

    def finalize(self, live: Sequence[tuple[tuple[int, ...], float]], done: bool) -> list[Hypothesis]:
        """The n-best list: finished hypotheses first, best first; beams cut at max_new_tokens only fill the rest.

        A beam still going at the length limit is a caption cut mid-text (often chat text
        the LM ran on into after the caption's end), so it never outranks one that ended.
        """
        ranked = _best_first(self.finished) + ([] if done else self.cut(live))
        return ranked[: self.decoding.n_best]

    def cut(self, live: Sequence[tuple[tuple[int, ...], float]]) -> list[Hypothesis]:
        """Live beams as hypotheses cut at the length limit, best first (idle padding rows left out)."""
        penalty = self.decoding.length_penalty
        return _best_first(
            Hypothesis(tokens, normalized_score(score, len(tokens), penalty), False)
            for tokens, score in live
            if score > -math.inf
        )


Choice = tuple[int, int, float]  # (row the candidate extends, token, score)


class _ImageSearch:
    """One image's rows in a beam search: one bank of K beams, or two when a caption must hold a required token.

    With `required` (token ids, possibly none), rows 0..K-1 are the bank without a
    required token yet and rows K..2K-1 the bank with one; a beam moves to the second
    bank by generating a required token. Every step refills each bank to K rows,
    padding with idle rows scored -inf, so that every image keeps its `rows` (K or 2K).
    """

    def __init__(self, decoding: DecodingOptions, eos_id: int, required: Sequence[int] | None = None) -> None:
        if required is not None and eos_id in required:
            raise GenerationError("eos cannot be a required token: a caption would end by holding it")
        self.decoding = decoding
        self.eos_id = eos_id
        self.banks = [_ImageBeams(decoding, eos_id) for _ in range(1 if required is None else 2)]
        self.rows = decoding.num_beams * len(self.banks)
        self.start_row = decoding.num_beams if required is not None and not required else 0

    def select(self, tops: Sequence[tuple[list[float], list[int]]], live: Sequence[tuple[int, ...]], vocab: int) -> list[Choice]:
        """Each bank's pick from its top 2K candidates (`_top_candidates`): `self.rows` choices, bank by bank."""
        width = self.decoding.num_beams
        chosen: list[Choice] = []
        for bank, (scores, index) in zip(self.banks, tops):  # a bank's candidate scores and flat indices
            picked = bank.select(scores, [i // vocab for i in index], [i % vocab for i in index], live)
            chosen += picked + [(0, self.eos_id, -math.inf)] * (width - len(picked))
        return chosen

    def is_done(self, chosen: Sequence[Choice], length: int) -> bool:
        """Done when no row is live, or the last bank is done against the best live row of any bank."""
        best_live = max(score for _, _, score in chosen)
        return best_live == -math.inf or self.banks[-1].is_done(best_live, length)

    def finalize(self, live: Sequence[tuple[tuple[int, ...], float]], done: bool) -> list[Hypothesis]:
        """The n-best list; with a required token, ended captions holding one first, then other ended ones, then cut ones."""
        if len(self.banks) == 1:
            return self.banks[0].finalize(live, done)
        width = self.decoding.num_beams
        without, holding = self.banks
        ranked = _best_first(holding.finished) + _best_first(without.finished)
        if not done:
            ranked += holding.cut(live[width:]) + without.cut(live[:width])
        return ranked[: self.decoding.n_best]


def _top_candidates(scores: Tensor, log_probs: Tensor, width: int, required: Tensor | None) -> list[tuple[list[float], list[int]]]:
    """Each bank's top 2K candidates for every image, best first: a (scores, flat indices) pair of lists per bank.

    scores (n, R) and log_probs (n, R, V) are the images' rows; required (n, V) marks each
    image's required tokens, or is None for one bank. Flat index i extends the image's row
    i // V with token i % V. The second bank's candidates are the first bank's rows
    extended by a required token, then its own rows extended by any token.
    """
    n, rows, vocab = log_probs.shape
    candidates = scores[:, :, None] + log_probs  # (n, R, V)
    if required is None:
        banks = [candidates.reshape(n, rows * vocab)]
    else:
        without = candidates[:, :width]
        banks = [
            without.masked_fill(required[:, None, :], -math.inf).reshape(n, width * vocab),
            torch.cat([without.masked_fill(~required[:, None, :], -math.inf), candidates[:, width:]], dim=1).reshape(n, rows * vocab),
        ]
    tops = [bank.topk(2 * width, dim=1) for bank in banks]
    return [(top.values.tolist(), top.indices.tolist()) for top in tops]


def _image_searches(decoding: DecodingOptions, eos_id: int, count: int, required_ids: Sequence[Sequence[int]] | None) -> list[_ImageSearch]:
    """One `_ImageSearch` per image, all built before any decoding so that a bad required id fails at once."""
    return [_ImageSearch(decoding, eos_id, None if required_ids is None else required_ids[i]) for i in range(count)]


def _required_mask(required_ids: Sequence[Sequence[int]] | None, vocab: int, device: torch.device) -> Tensor | None:
    """(B, V) bool: each image's required tokens; None without `required_ids`."""
    if required_ids is None:
        return None
    mask = torch.zeros(len(required_ids), vocab, dtype=torch.bool, device=device)
    for row, ids in enumerate(required_ids):
        if ids:
            mask[row, torch.tensor(list(ids), dtype=torch.long, device=device)] = True
    return mask


def next_log_probs(
    logits: Tensor, history: Tensor, decoding: DecodingOptions, bias: Tensor | None = None, plausibility: float = 0.0
) -> Tensor:
    """Next-token log-probabilities (N, V) of rows whose generated tokens so far are `history` (N, t).

    Repetition penalty on the logits of generated tokens (positive ones divided, negative
    ones multiplied), then temperature, then the rows' `bias` (N, V) if any (image word
    guidance, `model.guidance.tagger`) on the tokens that pass the `plausibility` gate,
    log-softmax, and -inf for every token that would complete an n-gram the row has
    already generated.
    """
    logits = logits.float()
    if decoding.repetition_penalty != 1.0 and history.size(1):
        seen = logits.gather(1, history)
        seen = torch.where(seen > 0, seen / decoding.repetition_penalty, seen * decoding.repetition_penalty)
        logits = logits.scatter(1, history, seen)
    logits = logits / decoding.temperature
    if bias is not None:
        if plausibility > 0:
            # log p(t) - log p(top) is a difference of logits: no softmax needed for the gate
            floor = logits.max(dim=-1, keepdim=True).values + math.log(plausibility)
            bias = torch.where(logits >= floor, bias, 0.0)
        logits = logits + bias
    log_probs = torch.log_softmax(logits, dim=-1)
    n = decoding.no_repeat_ngram_size
    if n and history.size(1) >= n:
        grams = history.unfold(1, n, 1)  # (N, W, n): every n-gram generated so far
        tail = history[:, history.size(1) - (n - 1) :]  # (N, n-1): what the next token would extend
        rows, windows = (grams[:, :, : n - 1] == tail[:, None, :]).all(dim=-1).nonzero(as_tuple=True)
        log_probs[rows, grams[rows, windows, n - 1]] = -math.inf  # only the banned entries: no (N, V) mask
    return log_probs


def _caption_start_bias(token_bias: TokenBias | None, prompts: list[list[int]]) -> TokenBias | None:
    """`token_bias` with `later` also at the first token of each image that has a prompt."""
    if token_bias is None or not any(prompts):
        return token_bias
    prompted = torch.tensor([bool(prompt) for prompt in prompts], device=token_bias.first.device)
    return token_bias._replace(first=torch.where(prompted[:, None], token_bias.later, token_bias.first))


def _check_inputs(
    prefix: Tensor,
    decoding: DecodingOptions,
    prompt_ids: Sequence[Sequence[int]] | None,
    token_bias: TokenBias | None,
    required_ids: Sequence[Sequence[int]] | None = None,
) -> list[list[int]]:
    if decoding.max_new_tokens is None:
        raise GenerationError("max_new_tokens must be set to decode (UAPT.generate sets the model's max_caption_tokens)")
    if prefix.dim() != 3:
        raise GenerationError(f"prefix must be (batch, length, hidden), got shape {tuple(prefix.shape)}")
    if token_bias is not None:
        for name in ("first", "later"):
            bias = getattr(token_bias, name)
            if bias.dim() != 2 or bias.size(0) != prefix.size(0):
                raise GenerationError(
                    f"token_bias.{name} must be (batch, vocab) for a batch of {prefix.size(0)}, got {tuple(bias.shape)}"
                )
        try:
            check_plausibility(token_bias.plausibility, "token_bias.plausibility")
        except ImageWordsError as error:
            raise GenerationError(str(error)) from None
    if required_ids is not None:
        if len(required_ids) != prefix.size(0):
            raise GenerationError(f"required_ids has {len(required_ids)} entries for a batch of {prefix.size(0)}")
        if any(token < 0 for ids in required_ids for token in ids):
            raise GenerationError("required_ids must be token ids (>= 0)")
    if prompt_ids is None:
        return [[] for _ in range(prefix.size(0))]
    if len(prompt_ids) != prefix.size(0):
        raise GenerationError(f"prompt_ids has {len(prompt_ids)} entries for a batch of {prefix.size(0)}")
    return [list(ids) for ids in prompt_ids]


def _prefill(cache: BeamCache, prefix: Tensor, prompts: list[list[int]]) -> Tensor:
    """Encode [prefix; prompt] for every image, left-padded, into rows 0..B-1 of `cache`. Returns the last logits (B, V)."""
    embed = cache.lm.get_input_embeddings()
    batch, prefix_len, hidden = prefix.shape
    length = prefix_len + max(len(p) for p in prompts)
    embeds = prefix.new_zeros(batch, length, hidden)
    mask = torch.zeros(batch, length, dtype=torch.long, device=prefix.device)
    for row, prompt in enumerate(prompts):
        start = length - prefix_len - len(prompt)
        embeds[row, start : start + prefix_len] = prefix[row]
        if prompt:
            ids = torch.tensor(prompt, device=prefix.device)
            embeds[row, start + prefix_len :] = embed(ids).to(prefix.dtype)
        mask[row, start:] = 1
    return cache.prefill(embeds, mask)


def _new_cache(lm: nn.Module, prefix: Tensor, prompts: list[list[int]], rows: int, decoding: DecodingOptions) -> BeamCache:
    """A cache for `rows` rows, long enough for the prefill and every token fed after it."""
    return BeamCache(lm, rows, prefix.size(1) + max(len(p) for p in prompts) + decoding.max_new_tokens)


def _every_row(log_probs: Tensor, beams: Sequence[tuple[int, int]], active: Sequence[int], width: int) -> Tensor:
    """Log-probabilities (n, R, V) of every row of the active images, from those (N, V) of the live rows `beams`.

    beams[i] is live row i's (image, row); rows that hold no beam get -inf, as their
    candidates would score -inf anyway (their beam score is -inf).
    """
    at = {image: index for index, image in enumerate(active)}
    rows = torch.tensor([at[image] * width + row for image, row in beams], device=log_probs.device)
    every = log_probs.new_full((len(active) * width, log_probs.size(-1)), -math.inf).index_copy_(0, rows, log_probs)
    return every.view(len(active), width, -1)


@torch.no_grad()
def beam_search(
    lm: nn.Module,
    prefix: Tensor,
    eos_id: int,
    decoding: DecodingOptions,
    prompt_ids: Sequence[Sequence[int]] | None = None,
    token_bias: TokenBias | None = None,
    required_ids: Sequence[Sequence[int]] | None = None,
) -> list[list[Hypothesis]]:
    """Batched beam search over all images and beams at once, with the KV cache; only live rows go through the LM.

    prefix: (B, P, H); token_bias: each image's logit biases (`TokenBias`), or None;
    required_ids: each image's required tokens (module docstring), or None.
    """
    prompts = _check_inputs(prefix, decoding, prompt_ids, token_bias, required_ids)
    token_bias = _caption_start_bias(token_bias, prompts)
    gate = 0.0 if token_bias is None else token_bias.plausibility
    searches = _image_searches(decoding, eos_id, len(prompts), required_ids)
    width = searches[0].rows  # rows per image (R): K, or 2K with required tokens
    cache = _new_cache(lm, prefix, prompts, len(prompts) * width, decoding)
    logits = _prefill(cache, prefix, prompts)  # cache row i: image i's one start beam
    # the live rows, in cache order: (image, its row), and the tokens each has generated
    beams = [(image, search.start_row) for image, search in enumerate(searches)]
    history = torch.zeros(len(beams), 0, dtype=torch.long, device=prefix.device)  # (N, t)
    first_bias = None if token_bias is None else token_bias.at(0)
    log_probs = next_log_probs(logits, history, decoding, first_bias, gate)  # (N, V)
    vocab = log_probs.size(-1)
    required_all = _required_mask(required_ids, vocab, prefix.device)  # (B, V), or None
    required = required_all  # the active images' rows

    results: list[list[Hypothesis]] = [[] for _ in prompts]
    live: list[list[tuple[int, ...]]] = [[()] * width for _ in prompts]
    active = list(range(len(prompts)))  # images still decoding
    scores = torch.full((len(active), width), -math.inf, device=prefix.device)
    for image, search in enumerate(searches):
        scores[image, search.start_row] = 0.0  # one real beam per image at the start; copies would only duplicate it
    for step in range(decoding.max_new_tokens):
        all_rows = _every_row(log_probs, beams, active, width)  # (n, R, V)
        tops = _top_candidates(scores, all_rows, decoding.num_beams, required)
        cache_row = {beam: index for index, beam in enumerate(beams)}
        new_beams: list[tuple[int, int]] = []  # (image, row) of each new live row
        parents: list[int] = []  # the cache row each continues
        next_tokens: list[int] = []
        next_scores: list[float] = []
        still_active: list[int] = []
        for at, image in enumerate(active):
            chosen = searches[image].select([(bank_scores[at], index[at]) for bank_scores, index in tops], live[image], vocab)
            new_live = [(live[image][row] + (token,), score) for row, token, score in chosen]
            done = searches[image].is_done(chosen, step + 1)
            if done or step + 1 == decoding.max_new_tokens:
                results[image] = searches[image].finalize(new_live, done)
                continue
            live[image] = [tokens for tokens, _ in new_live]
            still_active.append(image)
            next_scores += [score for _, _, score in chosen]
            for row, (parent, token, score) in enumerate(chosen):
                if score > -math.inf:  # idle rows (-inf) get no cache row
                    new_beams.append((image, row))
                    parents.append(cache_row[image, parent])
                    next_tokens.append(token)
        if not still_active:
            break
        if len(still_active) < len(active):  # rebuilt only when images leave the batch
            required = None if required_all is None else required_all[torch.tensor(still_active, device=prefix.device)]
        active = still_active
        order = cache.reorder(parents)
        beams = [new_beams[i] for i in order]
        sources = torch.tensor([parents[i] for i in order], device=prefix.device)
        tokens = torch.tensor([next_tokens[i] for i in order], device=prefix.device)
        scores = torch.tensor(next_scores, device=prefix.device).view(len(active), width)
        history = torch.cat([history[sources], tokens[:, None]], dim=1)
        row_bias = None
        if token_bias is not None:
            row_bias = token_bias.later[torch.tensor([image for image, _ in beams], device=prefix.device)]
        log_probs = next_log_probs(cache.step(tokens), history, decoding, row_bias, gate)
    return results


@torch.no_grad()
def naive_beam_search(
    lm: nn.Module,
    prefix: Tensor,
    eos_id: int,
    decoding: DecodingOptions,
    prompt_ids: Sequence[Sequence[int]] | None = None,
    token_bias: TokenBias | None = None,
    required_ids: Sequence[Sequence[int]] | None = None,
) -> list[list[Hypothesis]]:
    """Reference beam search: one image at a time, the full sequence recomputed every step, no cache.

    (Only the last position goes through the LM head, as in the batched prefill.)
    """
    prompts = _check_inputs(prefix, decoding, prompt_ids, token_bias, required_ids)
    token_bias = _caption_start_bias(token_bias, prompts)
    gate = 0.0 if token_bias is None else token_bias.plausibility
    embed = lm.get_input_embeddings()
    results = []
    searches = _image_searches(decoding, eos_id, len(prompts), required_ids)
    for row, (prompt, search) in enumerate(zip(prompts, searches)):
        image_required = None if required_ids is None else required_ids[row]
        live = [((), 0.0 if r == search.start_row else -math.inf) for r in range(search.rows)]
        for step in range(decoding.max_new_tokens):
            sequences = []
            for tokens, _ in live:
                ids = torch.tensor(prompt + list(tokens), dtype=torch.long, device=prefix.device)
                sequences.append(torch.cat([prefix[row], embed(ids).to(prefix.dtype)]))
            logits = lm(inputs_embeds=torch.stack(sequences), use_cache=False, logits_to_keep=1).logits[:, -1]
            history = torch.tensor([tokens for tokens, _ in live], dtype=torch.long, device=prefix.device).view(len(live), step)
            row_bias = None if token_bias is None else token_bias.at(step)[row].expand(len(live), -1)
            log_probs = next_log_probs(logits, history, decoding, row_bias, gate)  # (rows, V)
            vocab = log_probs.size(-1)
            required = None if image_required is None else _required_mask([image_required], vocab, prefix.device)
            beam_scores = torch.tensor([score for _, score in live], device=prefix.device)
            tops = _top_candidates(beam_scores[None], log_probs[None], decoding.num_beams, required)
            chosen = search.select([(bank_scores[0], index[0]) for bank_scores, index in tops], [t for t, _ in live], vocab)
            live = [(live[beam][0] + (token,), score) for beam, token, score in chosen]
            done = search.is_done(chosen, step + 1)
            if done or step + 1 == decoding.max_new_tokens:
                results.append(search.finalize(live, done))
                break
    return results


@torch.no_grad()
def greedy_search(
    lm: nn.Module,
    prefix: Tensor,
    eos_id: int,
    decoding: DecodingOptions,
    prompt_ids: Sequence[Sequence[int]] | None = None,
    token_bias: TokenBias | None = None,
) -> list[list[Hypothesis]]:
    """Batched greedy decoding with the KV cache (beam width and n-best are ignored: one caption per image)."""
    prompts = _check_inputs(prefix, decoding, prompt_ids, token_bias)
    token_bias = _caption_start_bias(token_bias, prompts)
    gate = 0.0 if token_bias is None else token_bias.plausibility
    batch = len(prompts)
    cache = _new_cache(lm, prefix, prompts, batch, decoding)
    logits = _prefill(cache, prefix, prompts)
    tokens: list[list[int]] = [[] for _ in range(batch)]
    sums = [0.0] * batch
    finished = [False] * batch
    history = torch.zeros(batch, 0, dtype=torch.long, device=prefix.device)  # every token fed, per row
    for step in range(decoding.max_new_tokens):
        log_probs = next_log_probs(logits, history, decoding, None if token_bias is None else token_bias.at(step), gate)
        best_logp, best = log_probs.max(dim=-1)
        for row, (token, logp) in enumerate(zip(best.tolist(), best_logp.tolist())):
            if finished[row]:
                continue
            sums[row] += logp
            if token == eos_id:
                finished[row] = True
            else:
                tokens[row].append(token)
        if all(finished) or step + 1 == decoding.max_new_tokens:
            break
        # Finished rows keep decoding; their tokens are ignored.
        history = torch.cat([history, best[:, None]], dim=1)
        logits = cache.step(best)
    penalty = decoding.length_penalty
    return [
        [Hypothesis(tuple(ids), normalized_score(total, len(ids) + int(done), penalty), done)]
        for ids, total, done in zip(tokens, sums, finished)
    ]

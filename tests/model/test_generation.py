"""Decoding: batched cached beam search against the naive reference, greedy, and settings."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from model.config import DecodingError, DecodingOptions
from model.generation import (
    GenerationError,
    Hypothesis,
    TokenBias,
    _ImageBeams,
    _ImageSearch,
    beam_search,
    greedy_search,
    naive_beam_search,
)
from model_fixtures import SAMPLE_KEYWORDS, sample_images, tiny_model


class StoppingLM(nn.Module):
    """The tiny LM with a sharpened head and an eos logit that varies with the context.

    A random tiny GPT-2 practically never emits eos; this wrapper makes beams finish at
    different steps, so the equivalence tests cover finished hypotheses and early stops,
    not only max-length ones (the tests assert that they do).
    """

    def __init__(self, lm: nn.Module, eos_id: int) -> None:
        super().__init__()
        self.lm, self.eos_id = lm, eos_id
        self.batches: list[int] = []  # the rows of every call, in order

    def get_input_embeddings(self) -> nn.Module:
        return self.lm.get_input_embeddings()

    def forward(self, **kwargs):
        out = self.lm(**kwargs)
        self.batches.append(out.logits.size(0))
        logits = out.logits * 2.0  # (B, T, V)
        logits[..., self.eos_id] = logits.max(-1).values + 3 * torch.sin(logits[..., 1000])
        out.logits = logits
        return out


@pytest.fixture(scope="module")
def stopping_lm() -> StoppingLM:
    model = tiny_model()
    return StoppingLM(model.lm, model.eos_id)


def _prefix(model, count: int) -> torch.Tensor:
    images = model.encode_images(sample_images(count))
    context = model.encode_context([" ".join(k) for k in SAMPLE_KEYWORDS[:count]])
    return model.prefix_embeddings(images, context)


def _assert_same(batched, naive) -> None:
    assert len(batched) == len(naive)
    for fast, slow in zip(batched, naive):
        assert [h.token_ids for h in fast] == [h.token_ids for h in slow]
        assert [h.finished for h in fast] == [h.finished for h in slow]
        for a, b in zip(fast, slow):
            assert a.score == pytest.approx(b.score, abs=1e-4)


def _assert_ended_first_then_best_first(nbest) -> None:
    assert [h.finished for h in nbest] == sorted((h.finished for h in nbest), reverse=True)
    for finished in (True, False):
        scores = [h.score for h in nbest if h.finished is finished]
        assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("stopping", [False, True])
def test_batched_beam_search_equals_naive_with_mixed_prompt_lengths(stopping: bool, stopping_lm) -> None:
    model = tiny_model()
    lm = stopping_lm if stopping else model.lm
    prefix = _prefix(model, 5)
    tokenizer = model.tokenizer
    prompts = [
        [],
        tokenizer("a photo of", add_special_tokens=False).input_ids,
        tokenizer("my", add_special_tokens=False).input_ids,
        tokenizer("look at this wonderful view from the top", add_special_tokens=False).input_ids,
        [],
    ]
    assert len({len(p) for p in prompts}) == 4
    settings = DecodingOptions(num_beams=3, temperature=0.8, max_new_tokens=10)
    batched = beam_search(lm, prefix, model.eos_id, settings, prompts)
    naive = naive_beam_search(lm, prefix, model.eos_id, settings, prompts)
    _assert_same(batched, naive)
    assert all(len(image) == 3 for image in batched)
    for image in batched:
        _assert_ended_first_then_best_first(image)


def test_a_caption_that_ended_outranks_a_better_scored_one_cut_at_the_length_limit() -> None:
    """The LM often runs on past a caption's end into chat text; a beam cut there must not be the suggestion."""
    beams = _ImageBeams(DecodingOptions(num_beams=2), eos_id=0)
    # the live beam (7, 8) ends (eos, second best) or goes on with token 5 or 6; then the length limit
    going_on = beams.select([-0.3, -0.9, -1.0], [0, 0, 0], [5, 0, 6], [(7, 8)])
    assert going_on == [(0, 5, -0.3), (0, 6, -1.0)]
    nbest = beams.finalize([((7, 8, 5), -0.3), ((7, 8, 6), -1.0)], done=False)
    # by score alone the cut (7, 8, 5) would lead: -0.3 / 3 tokens beats the ended -0.9 / 3
    assert nbest == [Hypothesis((7, 8), pytest.approx(-0.3), True), Hypothesis((7, 8, 5), pytest.approx(-0.1), False)]


def test_early_stops_match_the_reference(stopping_lm) -> None:
    """Images finish at different steps (and leave the batch); results still equal the reference."""
    eos = stopping_lm.eos_id
    prefix = _prefix(tiny_model(), 5)
    settings = DecodingOptions(num_beams=4, temperature=1.3, max_new_tokens=12, num_return_sequences=2, length_penalty=0.7)
    batched = beam_search(stopping_lm, prefix, eos, settings)
    _assert_same(batched, naive_beam_search(stopping_lm, prefix, eos, settings))
    best_lengths = [len(image[0].token_ids) for image in batched]
    assert min(best_lengths) < settings.max_new_tokens and len(set(best_lengths)) > 1
    assert all(len(image) == 2 for image in batched)
    assert all(eos not in h.token_ids for image in batched for h in image)


def test_batch_composition_does_not_change_results(stopping_lm) -> None:
    prefix = _prefix(tiny_model(), 4)
    settings = DecodingOptions(max_new_tokens=8)
    together = beam_search(stopping_lm, prefix, stopping_lm.eos_id, settings)
    alone = [beam_search(stopping_lm, prefix[i : i + 1], stopping_lm.eos_id, settings)[0] for i in range(4)]
    _assert_same(together, alone)


def test_temperature_changes_scores() -> None:
    model = tiny_model()
    prefix = _prefix(model, 2)
    cold = beam_search(model.lm, prefix, model.eos_id, DecodingOptions(temperature=0.5, max_new_tokens=4))
    warm = beam_search(model.lm, prefix, model.eos_id, DecodingOptions(temperature=2.0, max_new_tokens=4))
    assert cold[0][0].score != pytest.approx(warm[0][0].score)


def test_greedy_matches_stepwise_argmax(stopping_lm) -> None:
    """Greedy (cached, batched) picks the argmax of a full recompute at every step."""
    prefix = _prefix(tiny_model(), 3)
    prompts = [[], [64, 3290], [257]]
    settings = DecodingOptions(num_beams=1, max_new_tokens=8)
    greedy = greedy_search(stopping_lm, prefix, stopping_lm.eos_id, settings, prompts)
    embed = stopping_lm.get_input_embeddings()
    for row, prompt in enumerate(prompts):
        tokens: list[int] = []
        for _ in range(settings.max_new_tokens):
            ids = torch.tensor(prompt + tokens, dtype=torch.long)
            sequence = torch.cat([prefix[row], embed(ids)])[None]
            token = int(stopping_lm(inputs_embeds=sequence).logits[0, -1].argmax())
            if token == stopping_lm.eos_id:
                break
            tokens.append(token)
        assert list(greedy[row][0].token_ids) == tokens
    assert len({len(image[0].token_ids) for image in greedy}) > 1  # rows stopped at different steps


def test_generate_returns_decoded_captions() -> None:
    model = tiny_model()
    images = model.encode_images(sample_images(2))
    context = model.encode_context(["beach", "dog"])
    captions = model.generate(images, context, DecodingOptions(num_beams=3, max_new_tokens=5, num_return_sequences=2))
    assert [len(c) for c in captions] == [2, 2]
    for caption in (c for image in captions for c in image):
        assert caption.text == model.tokenizer.decode(caption.token_ids).strip()
        assert isinstance(caption.score, float) and caption.score < 0
    greedy = model.generate(images, context, DecodingOptions(num_beams=1, max_new_tokens=5))
    assert [len(c) for c in greedy] == [1, 1]
    prompted = model.generate(images, context, DecodingOptions(max_new_tokens=5), prompts=["a photo of", "my"])
    prompt_ids = [model.tokenizer(p, add_special_tokens=False).input_ids for p in ["a photo of", "my"]]
    reference = naive_beam_search(
        model.lm, model.prefix_embeddings(images, context), model.eos_id, DecodingOptions(max_new_tokens=5), prompt_ids
    )
    assert [[c.token_ids for c in i] for i in prompted] == [[list(h.token_ids) for h in i] for i in reference]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_beams": 0}, "num_beams"),
        ({"temperature": 0.0}, "temperature"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"num_beams": 2, "num_return_sequences": 3}, "num_return_sequences"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(DecodingError, match=message):
        DecodingOptions(**kwargs)


def test_prompt_count_must_match_batch() -> None:
    model = tiny_model()
    with pytest.raises(GenerationError, match="prompt_ids"):
        beam_search(model.lm, _prefix(model, 2), model.eos_id, DecodingOptions(max_new_tokens=20), [[1]])


@pytest.mark.parametrize("decoder", [beam_search, naive_beam_search, greedy_search])
def test_a_decoder_needs_a_length_limit(decoder) -> None:
    """None means the model's limit, which only UAPT.generate knows."""
    model = tiny_model()
    with pytest.raises(GenerationError, match="max_new_tokens"):
        decoder(model.lm, _prefix(model, 2), model.eos_id, DecodingOptions())


def _has_repeated_ngram(tokens: tuple[int, ...], n: int) -> bool:
    grams = [tokens[i : i + n] for i in range(len(tokens) - n + 1)]
    return len(grams) != len(set(grams))


DECODERS = {"batched": beam_search, "naive": naive_beam_search, "greedy": greedy_search}


@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_every_decoder_blocks_repeated_ngrams(decoder: str) -> None:
    model = tiny_model()
    prefix = _prefix(model, 4)
    search = DECODERS[decoder]
    loose = DecodingOptions(num_beams=3, max_new_tokens=24, no_repeat_ngram_size=0, repetition_penalty=1.0)
    unblocked = [h.token_ids for image in search(model.lm, prefix, model.eos_id, loose) for h in image]
    # the random tiny LM loops without control, so this test can fail
    assert any(_has_repeated_ngram(tokens, 3) for tokens in unblocked)
    blocked = DecodingOptions(num_beams=3, max_new_tokens=24, no_repeat_ngram_size=3, repetition_penalty=1.0)
    for image in search(model.lm, prefix, model.eos_id, blocked):
        for hypothesis in image:
            assert not _has_repeated_ngram(hypothesis.token_ids, 3)


def test_repetition_penalty_lowers_the_score_of_seen_tokens() -> None:
    from model.generation import next_log_probs

    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0]])
    history = torch.tensor([[0, 1]])
    plain = next_log_probs(logits, history, DecodingOptions(temperature=1.0, repetition_penalty=1.0, no_repeat_ngram_size=0))
    penalized = next_log_probs(logits, history, DecodingOptions(temperature=1.0, repetition_penalty=2.0, no_repeat_ngram_size=0))
    expected = torch.log_softmax(torch.tensor([[1.0, -2.0, 0.5, 0.0]]), dim=-1)  # 2/2 and -1*2
    assert torch.allclose(penalized, expected)
    assert penalized[0, 0] < plain[0, 0] and penalized[0, 1] < plain[0, 1]


def test_ngram_ban_hits_only_the_token_that_would_repeat() -> None:
    from model.generation import next_log_probs

    history = torch.tensor([[5, 6, 7, 5, 6], [5, 6, 7, 1, 2]])
    out = next_log_probs(torch.zeros(2, 10), history, DecodingOptions(no_repeat_ngram_size=3, repetition_penalty=1.0))
    assert out[0, 7] == float("-inf") and torch.isfinite(out[0, [i for i in range(10) if i != 7]]).all()
    assert torch.isfinite(out[1]).all()  # (1, 2) was never followed by anything


@pytest.mark.parametrize("settings", [
    DecodingOptions(num_beams=3, max_new_tokens=12, no_repeat_ngram_size=2, repetition_penalty=1.5),
    DecodingOptions(num_beams=2, max_new_tokens=10, no_repeat_ngram_size=3, repetition_penalty=1.2),
])
def test_batched_equals_naive_with_repetition_control(settings: DecodingOptions, stopping_lm) -> None:
    model = tiny_model()
    prefix = _prefix(model, 4)
    batched = beam_search(stopping_lm, prefix, model.eos_id, settings)
    _assert_same(batched, naive_beam_search(stopping_lm, prefix, model.eos_id, settings))


def test_repetition_settings_are_validated() -> None:
    with pytest.raises(DecodingError, match="no_repeat_ngram_size"):
        DecodingOptions(no_repeat_ngram_size=-1)
    with pytest.raises(DecodingError, match="repetition_penalty"):
        DecodingOptions(repetition_penalty=0.5)


def _word_bias(model, count: int) -> torch.Tensor:
    """A per-image logit bias as image word guidance makes it: large on a few tokens, 0 elsewhere."""
    vocab = model.lm.get_input_embeddings().num_embeddings
    bias = torch.zeros(count, vocab)
    generator = torch.Generator().manual_seed(3)
    for row in range(count):
        tokens = torch.randint(0, vocab, (40,), generator=generator)
        bias[row, tokens] = 6 * torch.rand(40, generator=generator) - 2
    return bias


@pytest.mark.parametrize("first_differs", [False, True])
@pytest.mark.parametrize("plausibility", [0.0, 0.1])
def test_batched_equals_naive_with_a_token_bias(plausibility: float, first_differs: bool, stopping_lm) -> None:
    model = tiny_model()
    prefix = _prefix(model, 4)
    later = _word_bias(model, 4)
    settings = DecodingOptions(num_beams=3, max_new_tokens=10)
    plain = beam_search(stopping_lm, prefix, model.eos_id, settings)
    bias = TokenBias.every_step(later, plausibility)
    if first_differs:  # the first token's own bias pushes down the tokens that unguided captions open with
        first = later.clone()
        for row, image in enumerate(plain):
            first[row, [h.token_ids[0] for h in image if h.token_ids]] -= 10.0
        bias = TokenBias(first, later, plausibility)
    biased = beam_search(stopping_lm, prefix, model.eos_id, settings, token_bias=bias)
    _assert_same(biased, naive_beam_search(stopping_lm, prefix, model.eos_id, settings, token_bias=bias))
    assert [[h.token_ids for h in i] for i in biased] != [[h.token_ids for h in i] for i in plain]
    if first_differs:
        same_throughout = beam_search(
            stopping_lm, prefix, model.eos_id, settings, token_bias=TokenBias.every_step(later, plausibility)
        )
        assert [[h.token_ids for h in i] for i in biased] != [[h.token_ids for h in i] for i in same_throughout]


@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_every_decoder_applies_each_images_own_bias(decoder: str) -> None:
    model = tiny_model()
    prefix = _prefix(model, 2)
    vocab = model.lm.get_input_embeddings().num_embeddings
    bias = torch.zeros(2, vocab)
    bias[0, 1234] = bias[1, 4321] = 100.0  # each image's favoured token wins every step it is allowed
    settings = DecodingOptions(num_beams=2, max_new_tokens=3, no_repeat_ngram_size=0, repetition_penalty=1.0)
    first, second = DECODERS[decoder](model.lm, prefix, model.eos_id, settings, token_bias=TokenBias.every_step(bias))
    assert first[0].token_ids[0] == 1234 and second[0].token_ids[0] == 4321


@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_every_decoder_applies_the_first_token_bias_at_the_first_token_only(decoder: str) -> None:
    model = tiny_model()
    prefix = _prefix(model, 2)
    vocab = model.lm.get_input_embeddings().num_embeddings
    first, later = torch.zeros(2, vocab), torch.zeros(2, vocab)
    first[:, 1234] = 100.0  # wins the first token of both images
    later[:, 4321] = 100.0  # wins every token after it
    settings = DecodingOptions(num_beams=2, max_new_tokens=4, no_repeat_ngram_size=0, repetition_penalty=1.0)
    for image in DECODERS[decoder](model.lm, prefix, model.eos_id, settings, token_bias=TokenBias(first, later)):
        assert image[0].token_ids == (1234, 4321, 4321, 4321)
    # after a prompt the first generated token continues it: it takes the later bias
    bare, prompted = DECODERS[decoder](
        model.lm, prefix, model.eos_id, settings, [[], model.tokenizer(" a photo of").input_ids], TokenBias(first, later)
    )
    assert bare[0].token_ids == (1234, 4321, 4321, 4321) and prompted[0].token_ids == (4321, 4321, 4321, 4321)


def test_the_plausibility_gate_lets_the_bias_move_only_tokens_the_lm_finds_likely() -> None:
    from model.generation import next_log_probs

    logits = torch.tensor([[0.0, -1.0, -3.0, -10.0]])  # at temperature 1: p relative to the top is 1, e^-1, e^-3, e^-10
    bias = torch.tensor([[5.0, 5.0, 5.0, -5.0]])
    settings = DecodingOptions(temperature=1.0, repetition_penalty=1.0, no_repeat_ngram_size=0)
    gated = next_log_probs(logits, torch.zeros(1, 0, dtype=torch.long), settings, bias, plausibility=0.1)
    torch.testing.assert_close(gated, torch.log_softmax(torch.tensor([[5.0, 4.0, -3.0, -10.0]]), dim=-1))
    ungated = next_log_probs(logits, torch.zeros(1, 0, dtype=torch.long), DecodingOptions(temperature=1.0), bias)
    torch.testing.assert_close(ungated, torch.log_softmax(logits + bias, dim=-1))
    model = tiny_model()
    with pytest.raises(GenerationError, match="plausibility"):
        beam_search(
            model.lm, _prefix(model, 1), model.eos_id, DecodingOptions(max_new_tokens=2), token_bias=TokenBias.every_step(bias, 1.0)
        )


def test_token_bias_must_have_a_row_per_image() -> None:
    model = tiny_model()
    with pytest.raises(GenerationError, match="token_bias.later"):
        bias = TokenBias(torch.zeros(2, 10), torch.zeros(3, 10))
        beam_search(model.lm, _prefix(model, 2), model.eos_id, DecodingOptions(max_new_tokens=20), token_bias=bias)


def _required_tokens(plain) -> list[list[int]]:
    """Per image, tokens its unconstrained best caption lacks but its third caption has: the LM can write them."""
    return [sorted(set(image[-1].token_ids) - set(image[0].token_ids))[:3] for image in plain]


def test_batched_equals_naive_with_required_tokens(stopping_lm) -> None:
    model = tiny_model()
    prefix = _prefix(model, 4)
    prompts = [[], model.tokenizer("a photo of", add_special_tokens=False).input_ids, [], []]
    settings = DecodingOptions(num_beams=3, max_new_tokens=10)
    plain = beam_search(stopping_lm, prefix, model.eos_id, settings, prompts)
    required = _required_tokens(plain)
    required[3] = []  # an image with nothing required decodes as plain beam search beside the others
    assert all(required[:3])
    constrained = beam_search(stopping_lm, prefix, model.eos_id, settings, prompts, required_ids=required)
    _assert_same(constrained, naive_beam_search(stopping_lm, prefix, model.eos_id, settings, prompts, required_ids=required))
    for image, ids in zip(constrained[:3], required):
        assert set(image[0].token_ids) & set(ids)  # the best caption holds a required token
        assert image[0].finished
    _assert_same(constrained[3:], plain[3:])


def test_only_rows_holding_a_beam_go_through_the_lm(stopping_lm) -> None:
    """Idle rows are not fed: the copies of the start beam, the second bank of an image with nothing required,
    the places of beams that ended; and images that finish leave the batch."""
    model = tiny_model()
    prefix = _prefix(model, 4)
    prompts = [[], model.tokenizer("a photo of", add_special_tokens=False).input_ids, [], []]
    settings = DecodingOptions(num_beams=3, max_new_tokens=10)
    required = _required_tokens(beam_search(stopping_lm, prefix, model.eos_id, settings, prompts))
    required[3] = []
    assert all(required[:3])
    stopping_lm.batches.clear()
    constrained = beam_search(stopping_lm, prefix, model.eos_id, settings, prompts, required_ids=required)
    prefill, *steps = stopping_lm.batches
    _assert_same(constrained, naive_beam_search(stopping_lm, prefix, model.eos_id, settings, prompts, required_ids=required))
    assert prefill == 4  # one row per image: its start beam
    assert max(steps) <= 3 * 6 + 3 < 4 * 6  # the last image never has more than its one bank of 3
    assert steps[-1] < max(steps)  # rows of ended beams and of finished images have left


def test_nothing_required_is_plain_beam_search(stopping_lm) -> None:
    prefix = _prefix(tiny_model(), 3)
    settings = DecodingOptions(num_beams=3, max_new_tokens=8, num_return_sequences=2)
    plain = beam_search(stopping_lm, prefix, stopping_lm.eos_id, settings)
    _assert_same(beam_search(stopping_lm, prefix, stopping_lm.eos_id, settings, required_ids=[[], [], []]), plain)


def test_required_tokens_do_not_depend_on_the_batch(stopping_lm) -> None:
    prefix = _prefix(tiny_model(), 3)
    settings = DecodingOptions(max_new_tokens=8)
    required = _required_tokens(beam_search(stopping_lm, prefix, stopping_lm.eos_id, settings))
    together = beam_search(stopping_lm, prefix, stopping_lm.eos_id, settings, required_ids=required)
    alone = [
        beam_search(stopping_lm, prefix[i : i + 1], stopping_lm.eos_id, settings, required_ids=required[i : i + 1])[0]
        for i in range(3)
    ]
    _assert_same(together, alone)


def test_captions_holding_a_required_token_rank_first_then_ended_ones() -> None:
    search = _ImageSearch(DecodingOptions(num_beams=2), eos_id=0, required=[9])
    without, holding = search.banks
    without.finished.append(Hypothesis((5,), -0.1, True))
    holding.finished.append(Hypothesis((9,), -2.0, True))
    live = [((5, 6), -0.2), ((), -math.inf), ((9, 7), -0.3), ((), -math.inf)]  # idle rows are never returned
    ranked = search.finalize(live, done=False)
    assert [h.token_ids for h in ranked] == [(9,), (5,)]
    search = _ImageSearch(DecodingOptions(num_beams=3), eos_id=0, required=[9])
    search.banks[1].finished.append(Hypothesis((9,), -2.0, True))
    ranked = search.finalize([((5, 6), -0.2), ((), -math.inf), ((), -math.inf), ((9, 7), -0.6), ((), -math.inf), ((), -math.inf)], False)
    assert [(h.token_ids, h.finished) for h in ranked] == [((9,), True), ((9, 7), False), ((5, 6), False)]


@pytest.mark.parametrize("decoder", [beam_search, naive_beam_search])
def test_required_ids_must_have_an_entry_per_image_and_be_tokens_other_than_eos(decoder) -> None:
    model = tiny_model()
    prefix = _prefix(model, 2)
    with pytest.raises(GenerationError, match="2 entries|entries for a batch of 2"):
        decoder(model.lm, prefix, model.eos_id, DecodingOptions(max_new_tokens=20), required_ids=[[1]])
    with pytest.raises(GenerationError, match=">= 0"):
        decoder(model.lm, prefix, model.eos_id, DecodingOptions(max_new_tokens=20), required_ids=[[1], [-1]])
    with pytest.raises(GenerationError, match="eos"):
        decoder(model.lm, prefix, model.eos_id, DecodingOptions(max_new_tokens=20), required_ids=[[1], [model.eos_id]])

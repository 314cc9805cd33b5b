"""The beam cache: rows kept in their parent's slot, only moved rows copied, positions and masks that skip left padding."""

from __future__ import annotations

import pytest
import torch

from model.beam_cache import BeamCache, _BeamLayer, slot_order
from model_fixtures import tiny_model


@pytest.mark.parametrize(
    ("parents", "order"),
    [
        ([0, 1, 2], [0, 1, 2]),  # every beam continues its own parent: nothing moves
        ([0, 0, 1], [0, 2, 1]),  # row 1, the second child of slot 0, takes the slot left free
        ([1, 1, 1], [1, 0, 2]),  # one parent: its first child keeps its slot
        ([4, 0], [1, 0]),  # fewer rows: the row whose parent's slot is gone fills a free one
    ],
)
def test_slot_order_leaves_rows_in_their_parents_slot_where_it_can(parents: list[int], order: list[int]) -> None:
    assert slot_order(parents) == order


def _embeds(lm, rows: list[list[int]], prefix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's prefix then its tokens, left-padded to one length: (embeds (B, L, H), mask (B, L))."""
    embed = lm.get_input_embeddings()
    length = prefix.size(1) + max(map(len, rows))
    embeds = torch.zeros(len(rows), length, prefix.size(2))
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for row, tokens in enumerate(rows):
        sequence = torch.cat([prefix[row], embed(torch.tensor(tokens, dtype=torch.long))])
        embeds[row, length - sequence.size(0) :] = sequence
        mask[row, length - sequence.size(0) :] = 1
    return embeds, mask


def _recomputed(lm, prefix: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    """Next-token logits of one unpadded sequence, without any cache."""
    sequence = torch.cat([prefix, lm.get_input_embeddings()(torch.tensor(tokens, dtype=torch.long))])[None]
    return lm(inputs_embeds=sequence, use_cache=False).logits[0, -1]


@torch.no_grad()
def test_cached_steps_equal_a_full_recompute_with_left_padding_and_moved_rows() -> None:
    lm = tiny_model().lm
    generator = torch.Generator().manual_seed(0)
    prefix = torch.randn(3, 4, lm.config.n_embd, generator=generator)
    sequences = [[11], [12, 13, 14, 15], [16, 17]]  # three lengths: two rows left-padded
    cache = BeamCache(lm, slots=4, max_length=12)
    logits = cache.prefill(*_embeds(lm, sequences, prefix))
    prefixes = [0, 1, 2]  # the prefix each row continues
    for parents, tokens in [
        ([0, 1, 2], [20, 21, 22]),  # each row continues itself
        ([2, 2, 0, 1], [23, 24, 25, 26]),  # row 2 has two children, the batch grows
        ([3, 1], [27, 28]),  # the batch shrinks; the row from slot 3 moves down
    ]:
        order = cache.reorder(parents)
        sequences = [sequences[parents[row]] + [tokens[row]] for row in order]
        prefixes = [prefixes[parents[row]] for row in order]
        logits = cache.step(torch.tensor([tokens[row] for row in order]))
        for row, sequence in enumerate(sequences):
            torch.testing.assert_close(logits[row], _recomputed(lm, prefix[prefixes[row]], sequence), atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_reorder_copies_only_the_rows_that_change_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    lm = tiny_model().lm
    cache = BeamCache(lm, slots=3, max_length=8)
    cache.prefill(torch.randn(3, 2, lm.config.n_embd), torch.ones(3, 2, dtype=torch.long))
    moves: list[tuple[list[int], list[int]]] = []
    real_move = _BeamLayer.move

    def recorded(layer: _BeamLayer, targets: torch.Tensor, sources: torch.Tensor) -> None:
        moves.append((targets.tolist(), sources.tolist()))
        real_move(layer, targets, sources)

    monkeypatch.setattr(_BeamLayer, "move", recorded)
    assert cache.reorder([0, 1, 2]) == [0, 1, 2]
    assert moves == []  # nothing changed slot: nothing copied
    assert cache.reorder([0, 0, 1]) == [0, 2, 1]
    assert moves == [([2], [0])] * lm.config.n_layer  # only slot 2, from slot 0, in every layer
    assert cache.mask[2].equal(cache.mask[0])


def test_reorder_and_step_refuse_rows_the_batch_does_not_have() -> None:
    lm = tiny_model().lm
    cache = BeamCache(lm, slots=2, max_length=3)
    with torch.no_grad():
        cache.prefill(torch.randn(2, 2, lm.config.n_embd), torch.ones(2, 2, dtype=torch.long))
        with pytest.raises(ValueError, match="parents"):
            cache.reorder([0, 2])
        with pytest.raises(ValueError, match="1 tokens for a batch of 2"):
            cache.step(torch.tensor([5]))
        cache.step(torch.tensor([5, 6]))
        with pytest.raises(ValueError, match="full"):
            cache.step(torch.tensor([5, 6]))

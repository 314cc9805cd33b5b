"""The frozen LM run a token at a time over a batch of rows (beams), with a preallocated KV cache whose rows move in place.

Why not Hugging Face's dynamic cache: in a profile of `model.generation.beam_search`
(offline preset, SmolLM2-135M in float32, batch 16, beam 3, 20 tokens, two busy CPU
cores) its copies took 17% of the decode against 67% for the LM's matmuls: every layer
appends its new key and value with `torch.cat`, a copy of the whole cache (9%), and
`reorder_cache` copies every row of every layer again at every step (`index_select`, 8%).
Matmuls speed up with more cores and memory copies hardly do, so their share grows on a
bigger CPU. And every row went through the LM, also rows that hold no beam (an image's
idle rows: the copies of its one start beam at the first step, the second bank of an
image with nothing required, the places of beams that ended).

So `BeamCache`:

- preallocates each layer's keys and values, (slots, heads, max_length, head_dim),
  and the attention mask, (slots, max_length); a step writes one column in place;
- holds only the rows the caller feeds: the LM's batch is slots 0..rows-1, and a row
  that holds no beam is simply not given a slot;
- `reorder` gives each new row the state of the row it continues (its parent), leaving
  a row in its parent's slot where it can (`slot_order`): beams mostly continue their
  parent, so only the rows that change slot are copied, and only the written columns.

Position ids come from the mask (a row's count of real tokens), so left padding is
skipped as in `model.generation`'s prefill. The mask goes to the LM in 2D, as before, so
the LM builds the same attention mask as with the dynamic cache.

Row counts and lengths change from step to step, so the decode step has shapes that
CUDA graphs cannot replay; this module makes no attempt at `torch.compile`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from transformers.cache_utils import Cache, CacheLayerMixin


def slot_order(parents: Sequence[int]) -> list[int]:
    """Where to put new rows so that as many as possible stay in their parent's slot: slot k gets row order[k].

    parents[i] is the slot new row i continues. The first row to claim its parent's slot
    (a slot below the new row count) keeps it; the other rows fill the slots left free,
    in order.
    """
    count = len(parents)
    kept: dict[int, int] = {}  # slot -> the row that stays in it
    for row, parent in enumerate(parents):
        if parent < count and parent not in kept:
            kept[parent] = row
    staying = set(kept.values())
    moving = iter(row for row in range(count) if row not in staying)
    return [kept[slot] if slot in kept else next(moving) for slot in range(count)]


class _BeamLayer(CacheLayerMixin):
    """One attention layer's keys and values, (slots, heads, max_length, head_dim), allocated at the first write."""

    is_sliding = False

    def __init__(self, slots: int, max_length: int) -> None:
        super().__init__()
        self.slots, self.max_length = slots, max_length
        self.length = 0  # columns written

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        _, heads, _, key_dim = key_states.shape
        self.keys = key_states.new_empty(self.slots, heads, self.max_length, key_dim)
        self.values = value_states.new_empty(self.slots, heads, self.max_length, value_states.size(-1))
        self.is_initialized = True

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        """Write the new columns of the batch's rows (slots 0..N-1); return their keys and values so far."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        rows, end = key_states.size(0), self.length + key_states.size(2)
        self.keys[:rows, :, self.length : end] = key_states
        self.values[:rows, :, self.length : end] = value_states
        self.length = end
        return self.keys[:rows, :, :end], self.values[:rows, :, :end]

    def move(self, targets: Tensor, sources: Tensor) -> None:
        """Slot targets[i] takes the written columns of slot sources[i] (all read before any is written)."""
        self.keys[targets, :, : self.length] = self.keys[sources, :, : self.length]
        self.values[targets, :, : self.length] = self.values[sources, :, : self.length]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return self.max_length


class BeamCache(Cache):
    """A frozen causal LM's keys, values and attention mask for up to `slots` rows of at most `max_length` positions.

    `prefill` encodes the first positions of rows 0..B-1; then each `step` feeds one token
    per row, and `reorder` says between steps which row each new row continues.
    """

    def __init__(self, lm: nn.Module, slots: int, max_length: int) -> None:
        # one layer per attention layer of the LM, made at its first write (the LM need not say how many)
        super().__init__(layer_class_to_replicate=functools.partial(_BeamLayer, slots, max_length))
        self.lm = lm
        self.slots, self.max_length = slots, max_length
        self.rows = 0  # the LM's batch: slots 0..rows-1
        self.mask: Tensor | None = None  # (slots, max_length) bool: the positions each row attends to

    @property
    def length(self) -> int:
        return self.layers[0].length if self.layers else 0

    def prefill(self, embeds: Tensor, mask: Tensor) -> Tensor:
        """Encode `embeds` (B, L, H), padded where `mask` (B, L) is 0; return the logits (B, V) of each row's last position."""
        rows, length = mask.shape
        if rows > self.slots or length > self.max_length:
            raise ValueError(f"a prefill of {rows} rows x {length} positions does not fit {self.slots} x {self.max_length}")
        self.mask = torch.zeros(self.slots, self.max_length, dtype=torch.bool, device=mask.device)
        self.mask[:rows, :length] = mask.bool()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.lm(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, cache=self, use_cache=True, logits_to_keep=1
        )
        self.rows = rows
        return out.logits[:, -1]

    def step(self, tokens: Tensor) -> Tensor:
        """Feed one token per row (tokens (rows,)); return the next-token logits (rows, V)."""
        if tokens.size(0) != self.rows:
            raise ValueError(f"{tokens.size(0)} tokens for a batch of {self.rows} rows")
        if self.length == self.max_length:
            raise ValueError(f"the cache is full ({self.max_length} positions)")
        end = self.length + 1
        self.mask[: self.rows, self.length] = True
        mask = self.mask[: self.rows, :end]
        positions = mask.sum(-1, keepdim=True) - 1  # (rows, 1): the real tokens before this one
        out = self.lm(input_ids=tokens[:, None], attention_mask=mask, position_ids=positions, cache=self, use_cache=True)
        return out.logits[:, -1]

    def reorder(self, parents: Sequence[int]) -> list[int]:
        """New rows continue rows `parents` (a row may have several children, or none); return their order in the batch.

        New row order[k] takes slot k, the next step's row k. Only rows whose slot changes
        are copied (`slot_order` keeps as many as it can where they are).
        """
        if any(not 0 <= parent < self.rows for parent in parents):
            raise ValueError(f"parents must be rows of the batch (0..{self.rows - 1}), got {list(parents)}")
        order = slot_order(parents)
        moved = [slot for slot, row in enumerate(order) if parents[row] != slot]
        if moved:
            device = self.mask.device
            targets = torch.tensor(moved, device=device)
            sources = torch.tensor([parents[order[slot]] for slot in moved], device=device)
            for layer in self.layers:
                layer.move(targets, sources)
            self.mask[targets] = self.mask[sources]
        self.rows = len(parents)
        return order

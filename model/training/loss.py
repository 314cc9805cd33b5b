"""The caption loss of a batch of samples: what training minimises and the probes measure.

Kept apart from the training loop so that `model.evaluation.probes` and the dtype timing
score batches exactly as training does, without importing the loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model.training.features import Split


@dataclass(frozen=True)
class LossWeights:
    """Caption tokens that count `weight` times in the training loss: the image's words (docs/RESULTS.md).

    Most caption tokens are the user's style, which the user tokens predict; the few
    that only the image can predict would otherwise carry a small share of the gradient.
    """

    token_ids: torch.Tensor  # (K,)
    weight: float

    def of(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) weights: `weight` on the listed tokens, 1 elsewhere."""
        listed = torch.isin(input_ids, self.token_ids.to(input_ids.device))
        return torch.where(listed, self.weight, 1.0)


def lm_autocast(model, device: torch.device) -> torch.autocast:
    """Autocast to bfloat16 when the frozen LM was cast to it (the trained weights stay float32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=model.lm.dtype == torch.bfloat16)


def batch_loss(
    model,
    split: Split,
    index: torch.Tensor,
    device: torch.device,
    image_index: torch.Tensor | None = None,
    contexts: torch.Tensor | None = None,
    loss_weights: LossWeights | None = None,
) -> tuple[torch.Tensor, float]:
    """Mean caption-token NLL of the samples at `index`, and the sum of the weights it is the mean over.

    `image_index` pairs each caption with another sample's image (see
    `model.evaluation.probes.image_reliance`); `contexts` replaces the samples' own
    context features (see `model.training.trainer.cold_start_contexts`); `loss_weights`
    makes the mean a weighted one, and the returned sum then counts weights, not tokens.
    `model` may be the network or its DistributedDataParallel wrapper.
    """
    network = getattr(model, "module", model)
    input_ids, attention_mask = network.tokenize_captions([split.samples[i].text for i in index.tolist()])
    token_weights = None if loss_weights is None else loss_weights.of(input_ids)
    with lm_autocast(network, device):
        out = model(
            split.image_features[index if image_index is None else image_index].to(device),
            (split.context_features[index] if contexts is None else contexts).to(device),
            input_ids.to(device),
            attention_mask.to(device),
            None if token_weights is None else token_weights.to(device),
        )
    weight_sum = attention_mask.float() if token_weights is None else attention_mask.float() * token_weights.float()
    return out.loss, float(weight_sum.sum())

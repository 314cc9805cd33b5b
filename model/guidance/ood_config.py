"""How an OOD scorer (`model.guidance.ood`) is fitted; free of torch imports, so ``--help`` can show the defaults."""

from __future__ import annotations

from dataclasses import dataclass

from model.errors import ModelError
from model.guidance.abstention import check_min_confidence


class OODError(ModelError):
    """An OOD scorer that cannot be fitted or loaded; the message says why."""


@dataclass(frozen=True)
class OODFit:
    """How the scorer is fitted; chosen on the demo val split (docs/RESULTS.md, abstention)."""

    dims: int = 64  # PCA components kept of the mean-pooled features
    k: int = 10  # distance to the k-th nearest train image
    max_bank: int = 5000  # train images kept (an even sample when there are more), so the file stays small
    # the default max_ood_score: this quantile of the val images' scores, so about 1% of in-distribution images
    # are abstained for it; no OOD images are needed to choose it
    val_quantile: float = 0.99
    # the default min_confidence: show a caption when the calibrated confidence says it is more likely right than wrong
    min_confidence: float = 0.5

    def __post_init__(self) -> None:
        if self.dims < 1 or self.k < 1 or self.max_bank < self.k:
            raise OODError(f"dims and k must be >= 1 and max_bank >= k, got {self.dims}, {self.k}, {self.max_bank}")
        if not 0.5 <= self.val_quantile <= 1.0:
            raise OODError(f"val_quantile must be in [0.5, 1], got {self.val_quantile}")
        check_min_confidence(self.min_confidence)

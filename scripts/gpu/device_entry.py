"""`uapt data` and `uapt train` on a lent GPU machine, whose image lacks some of the service's packages.

Run there by `scripts/gpu/train_on_device.sh`; docs/GPU.md says why each part exists.
The machine cannot be sent the MiniLM weights (they do not fit the transfer limit beside
the LM), so its context encoder is replaced by one that refuses to run: every keyword
text must already be in the carried feature cache, which `scripts/gpu/stage.sh` filled
here with the real MiniLM. The worker's packages (Kafka, SQLAlchemy) are not needed:
only the data and training commands are registered.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import torch
from torch import nn

from model import encoders

MINILM_DIM = 384  # all-MiniLM-L6-v2, the offline preset's context encoder


class PreEncodedContextsOnly(nn.Module):
    """Stands in for the context encoder: the feature cache must answer every keyword text."""

    dim = MINILM_DIM

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)  # gives the module a device

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        raise RuntimeError(f"keyword texts missing from the carried feature cache (run stage.sh again): {list(texts)[:3]}")


def main(argv: Sequence[str] | None = None) -> int:
    encoders._sentence_transformer = lambda spec: PreEncodedContextsOnly()
    from model.data import cli as data_cli
    from model.evaluation import cli as evaluation_cli
    from model.training import cli as training_cli
    from model.training import fit_cli

    parser = argparse.ArgumentParser(prog="uapt (GPU machine)")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for commands in (data_cli, training_cli, evaluation_cli, fit_cli):
        commands.register(subparsers)
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return args.func(args) or 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The `uapt` command line: one parser, subcommands contributed by each package.

Each package owns its commands in its own `cli` module (``model.cli``, ``model.data.cli``,
``model.training.cli``, ``model.training.fit_cli``, ``model.evaluation.cli``, ``profiles.cli``,
``worker.commands``) through a ``register(subparsers)`` function, so this file only assembles them. Heavy imports (torch, kafka) happen
inside the command handlers, the one place lazy imports are allowed, which keeps
``uapt --help`` instant.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from cli import demo
from model import cli as model_cli
from model.data import cli as data_cli
from model.evaluation import cli as evaluation_cli
from model.training import cli as training_cli
from model.training import fit_cli
from profiles import cli as profiles_cli
from worker import commands as worker_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uapt",
        description=(
            "Personalized image captioning (UAPT: user-aware prefix-tuning) as a "
            "streaming service. Run 'uapt demo' for the whole pipeline on the "
            "embedded defaults, or 'uapt COMMAND --help' for one command."
        ),
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    worker_commands.register(subparsers)
    demo.register(subparsers)
    profiles_cli.register(subparsers)
    model_cli.register(subparsers)
    data_cli.register(subparsers)
    training_cli.register(subparsers)
    evaluation_cli.register(subparsers)
    fit_cli.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        code = 130
    raise SystemExit(code or 0)


if __name__ == "__main__":
    main()

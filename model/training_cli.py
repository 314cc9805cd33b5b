"""Subcommands of `uapt` that belong to this package (placeholder, filled in by its owner)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to the `uapt` parser."""

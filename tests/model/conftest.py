"""Shared fixtures for the training-side tests: small synthetic datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.data.synth import write_dataset


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 users x 10 posts; read-only for tests (copy it before changing it)."""
    return write_dataset(tmp_path_factory.mktemp("synth"), users=6, posts_per_user=10, seed=7)

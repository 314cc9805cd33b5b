"""scripts/gpu/large_folders.sh: the large folders leave a device call's payload and come back whole (docs/GPU.md)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu" / "large_folders.sh"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def _run(repo: Path, mode: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(repo / "scripts/gpu/large_folders.sh"), mode], cwd=repo, capture_output=True, text=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    _git(tmp_path, "init", "-q")
    for path in ("checkpoints/demo/weights.bin", "docs/RESULTS.md", "model/code.py"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(path)
    (tmp_path / "scripts/gpu").mkdir(parents=True)
    shutil.copy(SCRIPT, tmp_path / "scripts/gpu/large_folders.sh")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "start")
    return tmp_path


def test_untrack_hides_the_folders_and_retrack_restores_them(repo: Path) -> None:
    assert _run(repo, "untrack").returncode == 0
    carried = set(_git(repo, "ls-files", "--cached", "--others", "--exclude-standard").split())
    assert carried == {"model/code.py", "scripts/gpu/large_folders.sh"}  # what a device call would carry
    assert (repo / "checkpoints/demo/weights.bin").is_file()  # on disk all along
    second = _run(repo, "untrack")
    assert second.returncode == 1 and "already untracked" in second.stderr
    assert _run(repo, "retrack").returncode == 0
    assert _git(repo, "status", "--porcelain") == ""
    assert "checkpoints" not in (repo / ".git/info/exclude").read_text()


def test_retrack_reports_files_lost_meanwhile(repo: Path) -> None:
    assert _run(repo, "untrack").returncode == 0
    (repo / "docs/RESULTS.md").unlink()
    result = _run(repo, "retrack")
    assert result.returncode == 1 and "docs/RESULTS.md" in result.stderr


def test_retrack_refuses_after_a_commit_in_between(repo: Path) -> None:
    assert _run(repo, "untrack").returncode == 0
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "oops")  # records the folders as deleted
    result = _run(repo, "retrack")
    assert result.returncode == 1 and "HEAD moved" in result.stderr
    _git(repo, "reset", "-q", "--soft", "HEAD~1")  # the undo the message names
    assert _run(repo, "retrack").returncode == 0
    assert _git(repo, "status", "--porcelain") == ""


def test_untrack_refuses_staged_changes_and_retrack_needs_an_untrack(repo: Path) -> None:
    assert _run(repo, "retrack").returncode == 1
    (repo / "docs/NEW.md").write_text("new")
    _git(repo, "add", "docs/NEW.md")
    result = _run(repo, "untrack")
    assert result.returncode == 1 and "staged" in result.stderr
    assert "docs/NEW.md" in _git(repo, "diff", "--cached", "--name-only")  # still staged, untouched

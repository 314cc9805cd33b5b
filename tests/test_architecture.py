"""The package boundaries of the README's layout table, as import-linter contracts (pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300)


def test_import_contracts_are_kept() -> None:
    done = _lint_imports(ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_a_forbidden_import_breaks_its_contract(tmp_path: Path) -> None:
    """A copy of the tree with one forbidden import per kind of contract: each is caught."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    for package in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["root_packages"]:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    forbidden = {
        "model/guidance/storage.py": "import model.training.features",  # a decoding aid reaching into training
        "model/captioner.py": "import sqlalchemy",  # a module directly in model reaching for SQL
        "worker/loop.py": "import model.data.cli",  # a library module importing the command-line edge
    }
    for path, line in forbidden.items():
        with (tmp_path / path).open("a", encoding="utf-8") as module:
            module.write(f"\n{line}\n")
    done = _lint_imports(tmp_path)
    assert done.returncode != 0, done.stdout[-3000:]
    assert "model.guidance.storage is not allowed to import model.training.features" in done.stdout
    assert "model.captioner is not allowed to import sqlalchemy" in done.stdout
    assert "worker.loop -> model.data.cli" in done.stdout
    assert "3 kept, 2 broken" in done.stdout  # the first two break the same contract


def test_uapt_help_does_not_import_torch() -> None:
    code = "import sys, cli.main; cli.main.build_parser(); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_the_worker_image_copies_every_installed_package() -> None:
    """`pip install .` in the Dockerfile installs what pyproject lists: each of those folders must be copied in."""
    import re
    import tomllib

    root = Path(__file__).resolve().parents[1]
    listed = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in listed}
    copied = set(re.findall(r"^COPY (\w+) \./\1$", (root / "Dockerfile").read_text(), flags=re.MULTILINE))
    assert packages <= copied, f"Dockerfile does not COPY {sorted(packages - copied)}"

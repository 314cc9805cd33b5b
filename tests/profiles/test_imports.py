"""profiles/ stays free of torch, `uapt --help` does not pay for SQLAlchemy or scikit-learn,
and migrations/ depends on nothing of profiles/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import migrations


def loaded_after(statement: str) -> set[str]:
    probe = f"import sys; {statement}; print(' '.join(sys.modules))"
    return set(subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout.split())


def test_profiles_never_imports_torch() -> None:
    modules = loaded_after(
        "import profiles.store, profiles.importer, profiles.cli; "
        "from profiles.store import ProfileStore; from profiles import analyze; analyze('x')"
    )
    assert "torch" not in modules


def test_cli_registration_is_light() -> None:
    modules = loaded_after("import profiles.cli")
    assert not {"sqlalchemy", "sklearn", "alembic"} & modules


def test_migrations_never_import_profiles() -> None:
    """profiles/ drives migrations/ (it locates the scripts); the other way round would be a cycle."""
    root = Path(next(iter(migrations.__path__)))
    imported: set[str] = set()
    for source in root.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
    assert "profiles" not in imported

"""profiles/ stays free of torch, and `uapt --help` does not pay for SQLAlchemy or scikit-learn."""

from __future__ import annotations

import subprocess
import sys


def loaded_after(statement: str) -> set[str]:
    probe = f"import sys; {statement}; print(' '.join(sys.modules))"
    return set(subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout.split())


def test_profiles_never_imports_torch() -> None:
    modules = loaded_after(
        "import profiles.store, profiles.importer, profiles.cli; "
        "from profiles import ProfileStore, analyze; analyze('x')"
    )
    assert "torch" not in modules


def test_cli_registration_is_light() -> None:
    modules = loaded_after("import profiles.cli")
    assert not {"sqlalchemy", "sklearn", "alembic"} & modules

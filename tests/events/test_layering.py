"""app/events and app/rules are domain code: they must not reach into the HTTP layer, the
services or the storage adapters (nor FastAPI), so both an HTTP route and an SQS worker
can use them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"
FORBIDDEN = ("app.api", "app.services", "app.storage", "app.main", "app.dependencies", "fastapi")
DOMAIN_FILES = sorted((APP / "events").glob("*.py")) + [APP / "rules.py"]


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", DOMAIN_FILES, ids=lambda path: path.name)
def test_domain_modules_import_no_outer_layer(path: Path) -> None:
    bad = sorted(
        name
        for name in imported_modules(path)
        if any(name == outer or name.startswith(outer + ".") for outer in FORBIDDEN)
    )
    assert bad == []


def test_the_check_sees_domain_files() -> None:
    assert {path.name for path in DOMAIN_FILES} >= {
        "parse.py",
        "sns.py",
        "sequencer.py",
        "rules.py",
    }

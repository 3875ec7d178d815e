"""Layers look down only: every import inside app/ is read from the source and checked against
the layer order, so an upward import fails here before a reviewer has to find it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent / "app"

# Lowest first. A module may import its own layer and the layers below it, never one above.
LAYERS: list[tuple[str, ...]] = [
    # the domain: vocabulary and rules that know nothing of clouds, HTTP or settings
    (
        "app.errors",
        "app.names",
        "app.policy",
        "app.retry",
        "app.metrics",
        "app.logging_config",
        "app.events",
        "app.rules",
    ),
    ("app.config", "app.storage", "app.queues"),
    ("app.services",),
    ("app.wiring",),
    ("app.api", "app.dependencies", "app.main", "app.cli", "app.worker", "app.dev", "app"),
]


def _layer(module: str) -> int:
    best, rank = -1, len(LAYERS) - 1
    for number, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, rank = len(name), number
    return rank


def _module_name(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[str]:
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.append(module)
            found += [f"{module}.{alias.name}" for alias in node.names]
    return [name for name in found if name == "app" or name.startswith("app.")]


def upward_imports() -> list[str]:
    bad = []
    for path in sorted(APP.rglob("*.py")):
        module = _module_name(path)
        for imported in _imports(path):
            if imported == "app":
                continue
            if _layer(imported) > _layer(module):
                bad.append(f"{module} imports {imported}")
    return bad


def test_no_module_imports_a_layer_above_its_own() -> None:
    assert upward_imports() == []


def test_the_domain_knows_no_web_framework_or_cloud_sdk() -> None:
    """The domain layer (events, rules, naming, policies) is plain Python: the HTTP intake
    and the queue worker both parse with it."""
    found = []
    for path in sorted(APP.rglob("*.py")):
        if _layer(_module_name(path)) != 0:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            found += [
                f"{_module_name(path)} imports {name}"
                for name in names
                if name.split(".")[0] in {"fastapi", "starlette", "boto3", "botocore", "google"}
            ]
    assert found == []


@pytest.mark.parametrize(
    ("module", "imported", "upward"),
    [
        ("app.storage.gcs", "app.services.retry", True),
        ("app.config", "app.api.names", True),
        ("app.storage.s3", "app.retry", False),
        ("app.services.replicator", "app.storage.base", False),
        ("app.api.routes", "app.services.replicator", False),
    ],
)
def test_the_layer_order_catches_the_imports_it_forbids(
    module: str, imported: str, upward: bool
) -> None:
    assert (_layer(imported) > _layer(module)) is upward

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
        "app.events.parse",
        "app.events.sns",
        "app.events.sequencer",
        "app.rules",
    ),
    # adapters: one module or package per provider, each behind a small protocol
    ("app.config", "app.identity", "app.storage", "app.queues", "app.ledger"),
    # the engine, then what drives many keys or events through it
    ("app.replication",),
    ("app.events", "app.bulk"),
    ("app.wiring",),
    ("app.api", "app.dependencies", "app.main", "app.cli", "app.worker", "app.dev", "app"),
]
# Packages of one layer that must not import each other: the event path and bulk work both
# drive the engine, and neither knows the other exists.
STRANGERS = [("app.events", "app.bulk")]


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


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def imports_between_strangers() -> list[str]:
    bad = []
    for path in sorted(APP.rglob("*.py")):
        module = _module_name(path)
        for imported in _imports(path):
            for one, other in STRANGERS:
                for a, b in ((one, other), (other, one)):
                    if _within(module, a) and _within(imported, b) and _layer(module) > 0:
                        bad.append(f"{module} imports {imported}")
    return bad


def test_the_event_path_and_bulk_work_never_import_each_other() -> None:
    assert imports_between_strangers() == []


def test_the_engine_imports_neither_the_event_path_nor_bulk_work() -> None:
    """The engine sits below both: `_layer` puts app.events (but its pure parsers) and app.bulk
    above app.replication, so an import of either from the engine is an upward one."""
    assert _layer("app.events.converge") > _layer("app.replication.replicator")
    assert _layer("app.bulk.sync") > _layer("app.replication.batch")
    assert _layer("app.events.parse") < _layer("app.replication.replicator")


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
        ("app.storage.gcs", "app.replication.retry", True),
        ("app.config", "app.api.names", True),
        ("app.storage.s3", "app.retry", False),
        ("app.replication.replicator", "app.storage.base", False),
        ("app.api.routes", "app.replication.replicator", False),
        ("app.ledger.redis", "app.replication.identity", True),
        ("app.replication.batch", "app.events.converge", True),
        ("app.replication.batch", "app.bulk.sync", True),
        ("app.replication.replicator", "app.events.sequencer", False),
        ("app.events.converge", "app.replication.batch", False),
        ("app.bulk.check", "app.bulk.compare", False),
    ],
)
def test_the_layer_order_catches_the_imports_it_forbids(
    module: str, imported: str, upward: bool
) -> None:
    assert (_layer(imported) > _layer(module)) is upward

"""docs/api.md's route table lists every route the FastAPI application serves, and no other."""

from __future__ import annotations

import re
from collections.abc import Iterable

from starlette.routing import BaseRoute, Mount, Route

from app.main import create_app
from tests.docs import markdown

PAGE = markdown.DOCS / "api.md"
ROUTES_HEADING = "## Routes"
_IMPLICIT = {"HEAD", "OPTIONS"}  # answered for every GET; not rows of their own


def served(routes: Iterable[BaseRoute], prefix: str = "") -> set[tuple[str, str]]:
    """(method, path) of every route, with `{key:anypath}` written `{key}` as the page does.
    FastAPI may keep an included router whole instead of copying its routes: its routes are
    read through it. Mounted static files are not routes of the API."""
    found = set()
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            context_prefix = getattr(getattr(route, "include_context", None), "prefix", "")
            found |= served(included.routes, prefix + context_prefix)
        elif isinstance(route, Route) and not isinstance(route, Mount):
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", prefix + route.path)
            found |= {(method, path) for method in (route.methods or set()) - _IMPLICIT}
    return found


def documented(text: str) -> dict[tuple[str, str], int]:
    """(method, path) -> line, from the rows of the page's route table: one or more methods
    in the first cell, one or more paths in code spans in the second."""
    rows = {}
    for row in markdown.table_rows(markdown.section(text, ROUTES_HEADING)):
        for method in re.findall(r"[A-Z]+", row.cells[0]):
            for path in markdown.code_spans(row.cells[1]):
                rows[(method, path)] = row.line
    return rows


def test_the_walk_finds_every_route_of_the_schema() -> None:
    """`served` reads every route OpenAPI knows of (the routes outside the schema, such as
    /docs, are checked by the page's rows)."""
    app = create_app()
    in_schema = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    assert in_schema - served(app.routes) == set()


def test_every_route_has_a_row() -> None:
    rows = documented(PAGE.read_text())
    missing = sorted(served(create_app().routes) - set(rows))
    assert missing == [], "\n".join(
        f"{method} {path} is a route of the service but has no row in docs/api.md's "
        "Routes table: add `| METHOD | `path` | what it does | status codes |`"
        for method, path in missing
    )


def test_every_row_is_a_route() -> None:
    rows = documented(PAGE.read_text())
    stale = sorted(set(rows) - served(create_app().routes))
    assert stale == [], "\n".join(
        f"docs/api.md:{rows[route]}: {route[0]} {route[1]} is not a route of the service"
        for route in stale
    )


def test_a_route_missing_from_the_table_is_found() -> None:
    """The checks above can fail: the table without its jobs rows."""
    text = PAGE.read_text()
    without_jobs = "\n".join(line for line in text.splitlines() if "`/v1/jobs" not in line)
    missing = served(create_app().routes) - set(documented(without_jobs))
    assert {path for _, path in missing} == {"/v1/jobs", "/v1/jobs/{id}", "/v1/jobs/{id}/report"}

"""docs/configuration.md has a row for every setting the code reads, with the default the
code has: the fields of `Settings` (and their aliases), and every environment variable read
by name anywhere under app/. `.env.example` lists every setting."""

from __future__ import annotations

import ast
import enum
from pathlib import Path
from typing import Any

from pydantic import AliasChoices

from app.config import Settings
from tests.docs import markdown

PAGE = markdown.DOCS / "configuration.md"
APP = markdown.REPO / "app"
ENV_EXAMPLE = markdown.REPO / ".env.example"
REQUIRED = "required"


def setting_names() -> dict[str, list[str]]:
    """Settings field -> the environment names it is read from, its own name first."""
    names = {}
    for field_name, field in Settings.model_fields.items():
        aliases = []
        if isinstance(field.validation_alias, AliasChoices):
            aliases = [
                choice
                for choice in field.validation_alias.choices
                if isinstance(choice, str) and choice.isupper() and choice != field_name.upper()
            ]
        names[field_name] = [field_name.upper(), *aliases]
    return names


def documented(text: str) -> dict[str, markdown.Row]:
    """Variable -> the row that names it in its first cell."""
    rows = {}
    for row in markdown.table_rows(text):
        for name in markdown.code_spans(row.cells[0]):
            rows.setdefault(name.upper(), row)  # the first row naming it: its definition
    return rows


def shown_default(value: Any) -> str | None:
    """A default as the page writes it; None for unset."""
    if value is None or value == ():
        return None
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def documented_default(row: markdown.Row, name: str) -> str | None:
    """The default a row gives `name`: a code span per variable of the row, one for all, or
    "unset" / "required"."""
    names = markdown.code_spans(row.cells[0])
    values = markdown.code_spans(row.cells[1])
    if len(values) == len(names):
        return values[names.index(name)]
    if values:
        return values[0]
    return REQUIRED if row.cells[1].startswith(REQUIRED) else None


def missing_settings(text: str) -> list[str]:
    rows = documented(text)
    spans = set(markdown.code_spans(text))
    problems = []
    for field_name, (name, *aliases) in setting_names().items():
        if name not in rows:
            problems.append(
                f"{name} (Settings.{field_name} in app/config.py) has no row in "
                f"docs/configuration.md: add `| `{name}` | default | meaning |` to its "
                "Settings table"
            )
        problems += [
            f"{alias}, an alias of {name}, is not named in docs/configuration.md"
            for alias in aliases
            if alias not in spans
        ]
    return problems


def wrong_defaults(text: str) -> list[str]:
    rows = documented(text)
    problems = []
    for field_name, (name, *_) in setting_names().items():
        if name not in rows:
            continue  # missing_settings says so
        field = Settings.model_fields[field_name]
        expected = REQUIRED if field.is_required() else shown_default(field.default)
        found = documented_default(rows[name], name)
        if found != expected:
            problems.append(
                f"docs/configuration.md:{rows[name].line}: {name}'s default is "
                f"{expected or 'unset'} in app/config.py, the page says {found or 'unset'}"
            )
    return problems


def environment_reads(source: str) -> tuple[set[str], list[int]]:
    """The variables a module reads by name from os.environ or os.getenv, and the lines of
    reads whose name this cannot work out. A name held by a loop variable is resolved from
    the tuple the loop walks (a literal, or a module-level constant)."""
    tree = ast.parse(source)
    constants = {
        target.id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    loops = [node for node in ast.walk(tree) if isinstance(node, ast.For | ast.comprehension)]
    names: set[str] = set()
    unknown = []
    for node in ast.walk(tree):
        argument = _read_argument(node)
        if argument is None:
            continue
        if isinstance(argument, ast.Call) and isinstance(argument.func, ast.Attribute):
            argument = argument.func.value  # `name.upper()`: the page compares in upper case
        if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
            names.add(argument.value.upper())
            continue
        walked = [
            _strings(constants.get(loop.iter.id) if isinstance(loop.iter, ast.Name) else loop.iter)
            for loop in loops
            if isinstance(argument, ast.Name) and _binds(loop.target, argument.id)
        ]
        if any(walked):
            names.update(name.upper() for found in walked for name in found)
        else:
            unknown.append(node.lineno)
    return names, unknown


def _is_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def _read_argument(node: ast.AST) -> ast.expr | None:
    if isinstance(node, ast.Subscript) and _is_environ(node.value):
        return node.slice if isinstance(node.ctx, ast.Load) else None
    if isinstance(node, ast.Call) and node.args and isinstance(node.func, ast.Attribute):
        method = node.func
        if method.attr in ("get", "setdefault") and _is_environ(method.value):
            return node.args[0]
        if method.attr == "getenv":
            return node.args[0]
    return None


def _binds(target: ast.expr, name: str) -> bool:
    return any(isinstance(node, ast.Name) and node.id == name for node in ast.walk(target))


def _strings(node: ast.AST | None) -> list[str]:
    if node is None:
        return []
    return [
        found.value
        for found in ast.walk(node)
        if isinstance(found, ast.Constant) and isinstance(found.value, str)
    ]


def test_every_setting_has_a_row() -> None:
    problems = missing_settings(PAGE.read_text())
    assert problems == [], "\n".join(problems)


def test_every_row_gives_the_default_the_code_has() -> None:
    problems = wrong_defaults(PAGE.read_text())
    assert problems == [], "\n".join(problems)


def test_every_variable_the_code_reads_has_a_row() -> None:
    rows = documented(PAGE.read_text())
    problems = []
    for path in sorted(APP.rglob("*.py")):
        names, unknown = environment_reads(path.read_text())
        where = path.relative_to(markdown.REPO)
        problems += [
            f"{where} reads {name} from the environment, but docs/configuration.md has no row "
            "for it: add one to its table 'Other variables the code reads'"
            for name in sorted(names - set(rows))
        ]
        problems += [
            f"{where}:{line} reads an environment variable whose name this test cannot work "
            "out: read it by a literal name, or loop over a literal tuple of names"
            for line in unknown
        ]
    assert problems == [], "\n".join(problems)


def test_env_example_lists_every_setting() -> None:
    listed = {
        line.lstrip("# ").split("=")[0]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if "=" in line
    }
    missing = [names[0] for names in setting_names().values() if names[0] not in listed]
    assert missing == [], f".env.example has no line `# NAME=default` for {missing}"


def test_the_checks_find_a_missing_row_a_wrong_default_and_an_unread_name(
    tmp_path: Path,
) -> None:
    """The checks above can fail: a page that lost a row and changed a default, and code
    that reads names three ways."""
    page = PAGE.read_text()
    broken = page.replace("| `MAX_RUNNING_JOBS` | `4` |", "| `MAX_RUNNING_JOB` | `4` |")
    broken = broken.replace("| `BATCH_CONCURRENCY` | `16` |", "| `BATCH_CONCURRENCY` | `8` |")
    assert broken != page
    assert [problem.split(" ")[0] for problem in missing_settings(broken)] == ["MAX_RUNNING_JOBS"]
    assert [problem.split(": ")[1] for problem in wrong_defaults(broken)] == [
        "BATCH_CONCURRENCY's default is 16 in app/config.py, the page says 8"
    ]
    source = (
        "import os\n"
        "PROXIES = ('http_proxy', 'no_proxy')\n"
        "a = os.environ.get('ONE_LITERAL')\n"
        "b = any(os.environ.get(n.upper()) for n in PROXIES)\n"
        "for name, default in (('DEV_PORT', 1), ('DEV_OTHER', 2)):\n"
        "    os.environ.get(name, str(default))\n"
        "c = os.getenv(compute())\n"
    )
    assert environment_reads(source) == (
        {"ONE_LITERAL", "HTTP_PROXY", "NO_PROXY", "DEV_PORT", "DEV_OTHER"},
        [7],
    )

"""docs/sync-and-check.md's flags table says which flags `replicator sync` and `replicator
check` take, and the parsers take exactly those."""

from __future__ import annotations

import argparse

from app.cli import build_parser
from tests.docs import markdown

PAGE = markdown.DOCS / "sync-and-check.md"
COMMANDS = ("sync", "check")  # the table's second and third columns, in this order


def parsed_flags() -> dict[str, set[str]]:
    """Command -> the long options its parser takes (but --help)."""
    subcommands = next(
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    return {
        command: {
            option
            for action in subcommands.choices[command]._actions
            for option in action.option_strings
            if option.startswith("--") and option != "--help"
        }
        for command in COMMANDS
    }


def documented_flags(text: str) -> dict[str, set[str]]:
    """Command -> the flags the table marks `yes` in its column."""
    flags: dict[str, set[str]] = {command: set() for command in COMMANDS}
    for row in markdown.table_rows(text):
        named = [span.split()[0] for span in markdown.code_spans(row.cells[0])]
        if not named or not all(flag.startswith("--") for flag in named):
            continue
        for command, cell in zip(COMMANDS, row.cells[1:3], strict=True):
            if cell == "yes":
                flags[command].update(named)
    return flags


def differences(parsed: dict[str, set[str]], documented: dict[str, set[str]]) -> list[str]:
    problems = []
    for command in COMMANDS:
        problems += [
            f"replicator {command} takes {flag}, but docs/sync-and-check.md's flags table "
            f"does not say so: add a row, or `yes` in its {command} column"
            for flag in sorted(parsed[command] - documented[command])
        ]
        problems += [
            f"docs/sync-and-check.md's flags table gives replicator {command} {flag}, "
            "which its parser does not take"
            for flag in sorted(documented[command] - parsed[command])
        ]
    return problems


def test_the_flags_table_matches_the_parsers() -> None:
    problems = differences(parsed_flags(), documented_flags(PAGE.read_text()))
    assert problems == [], "\n".join(problems)


def test_a_flag_missing_from_the_table_is_found() -> None:
    """The check above can fail: the table without its --json row."""
    text = "\n".join(
        line for line in PAGE.read_text().splitlines() if not line.startswith("| `--json`")
    )
    assert differences(parsed_flags(), documented_flags(text)) == [
        "replicator sync takes --json, but docs/sync-and-check.md's flags table does not say "
        "so: add a row, or `yes` in its sync column",
        "replicator check takes --json, but docs/sync-and-check.md's flags table does not say "
        "so: add a row, or `yes` in its check column",
    ]

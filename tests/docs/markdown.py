"""The project's Markdown pages as the documentation tests read them: table rows, code spans,
links, and the anchors GitHub gives headings. Fenced code blocks are never read as prose."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


def pages() -> list[Path]:
    """Every page a reader follows links through: the front door, the contributor's guide,
    docs/ and the benchmark run logs."""
    return [
        REPO / "README.md",
        REPO / "CONTRIBUTING.md",
        *sorted(DOCS.glob("*.md")),
        REPO / "benchmarks" / "RESULTS.md",
    ]


def relative(path: Path, root: Path = REPO) -> str:
    return str(path.relative_to(root))


_FENCE = re.compile(r"^```.*?^```[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def prose(text: str) -> str:
    """The text with every fenced code block blanked out, its lines kept (so that line
    numbers still point into the file)."""
    return _FENCE.sub(lambda block: "\n" * block.group(0).count("\n"), text)


def code_spans(text: str) -> list[str]:
    return _CODE_SPAN.findall(text)


@dataclass(frozen=True)
class Row:
    line: int
    cells: list[str]


def table_rows(text: str) -> list[Row]:
    """The body rows of every table outside code blocks, split into cells (a `|` inside a
    code span is part of its cell); header separators are left out."""
    rows = []
    for number, line in enumerate(prose(text).splitlines(), start=1):
        line = line.strip()
        if not line.startswith("|"):
            continue
        cells = _cells(line)
        if all(set(cell) <= set("-: ") for cell in cells):
            continue
        rows.append(Row(number, cells))
    return rows


def _cells(line: str) -> list[str]:
    cells, current, in_code = [], "", False
    for char in line.strip().strip("|"):
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code:
            cells.append(current.strip())
            current = ""
        else:
            current += char
    cells.append(current.strip())
    return cells


def section(text: str, heading: str) -> str:
    """The text under `heading` (a line such as "## Routes") up to the next heading of the
    same or a higher level, or the end."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines()
    if heading not in lines:
        raise ValueError(f"the page has no line {heading!r}")
    start = lines.index(heading) + 1
    end = len(lines)
    for number in range(start, len(lines)):
        hashes = len(lines[number]) - len(lines[number].lstrip("#"))
        if 0 < hashes <= level and lines[number][hashes : hashes + 1] == " ":
            end = number
            break
    return "\n".join(lines[start:end])


def anchors(text: str) -> set[str]:
    """The anchors GitHub makes of a page's headings: lower case, punctuation dropped,
    spaces to hyphens, a repeated anchor numbered -1, -2, ..."""
    seen: dict[str, int] = {}
    found = set()
    for heading in _HEADING.findall(prose(text)):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(text: str) -> list[tuple[int, str]]:
    """(line, target) of every Markdown link and image outside code, in order."""
    outside = prose(text)
    outside = _CODE_SPAN.sub(lambda span: " " * len(span.group(0)), outside)
    return [
        (outside.count("\n", 0, match.start()) + 1, match.group(1))
        for match in _LINK.finditer(outside)
    ]


def broken_links(page: Path, root: Path = REPO) -> list[str]:
    """Each relative link of `page` whose file does not exist, or whose #anchor no heading
    of its target page makes, as one line naming the page (relative to `root`), the line and
    the link."""
    broken = []
    for line, target in links(page.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        destination = (page.parent / path_part).resolve() if path_part else page
        where = f"{relative(page, root)}:{line}: link to {target}"
        if not destination.exists():
            broken.append(f"{where}: no such file")
        elif (
            anchor
            and destination.suffix == ".md"
            and anchor not in anchors(destination.read_text())
        ):
            named = relative(destination, root)
            broken.append(f"{where}: no heading of {named} makes #{anchor}")
    return broken

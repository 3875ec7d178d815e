"""Every relative link in README.md, CONTRIBUTING.md, docs/ and benchmarks/RESULTS.md leads
somewhere, every repository path the pages name in backticks exists, and the README stays a
front door."""

from __future__ import annotations

import re
from pathlib import Path

from tests.docs import markdown

README_MOST_LINES = 300  # the front door; detail goes to a page under docs/

# A path in the repository, as the pages name them: `app/retry.py`, `tests/faults.py`,
# `deploy/kubernetes/`; and a module, as `app.storage.s3_listing`.
_PATH = re.compile(r"^(?:app|tests|deploy|benchmarks|assets|docs)/[\w./-]*$")
_MODULE = re.compile(r"^app(?:\.\w+)+$")


def test_every_relative_link_resolves() -> None:
    broken = [line for page in markdown.pages() for line in markdown.broken_links(page)]
    assert broken == [], "\n".join(broken)


def test_every_path_named_in_backticks_exists() -> None:
    missing = []
    for page in markdown.pages():
        for line, named in paths_named(page.read_text()):
            if not exists(named):
                missing.append(f"{markdown.relative(page)}:{line}: `{named}` does not exist")
    assert missing == [], "\n".join(missing)


def test_the_readme_stays_a_front_door() -> None:
    lines = len((markdown.REPO / "README.md").read_text().splitlines())
    assert lines <= README_MOST_LINES, (
        f"README.md has {lines} lines, more than {README_MOST_LINES}: it is the front door; "
        "move the detail to a page under docs/ (one page per topic) and link to it"
    )


def test_every_page_under_docs_is_linked_from_the_readme() -> None:
    readme = (markdown.REPO / "README.md").read_text()
    targets = {target.partition("#")[0] for _, target in markdown.links(readme)}
    unlinked = [
        markdown.relative(page)
        for page in sorted(markdown.DOCS.glob("*.md"))
        if markdown.relative(page) not in targets
    ]
    assert unlinked == [], f"README.md's Documentation list does not link to {unlinked}"


def paths_named(text: str) -> list[tuple[int, str]]:
    """(line, path) of every repository path or app module in a code span outside code
    blocks."""
    found = []
    for number, line in enumerate(markdown.prose(text).splitlines(), start=1):
        for span in markdown.code_spans(line):
            named = span.split(":")[0]  # `app.main:app` names the module app.main
            if _PATH.match(named) or _MODULE.match(named):
                found.append((number, named))
    return found


def exists(named: str) -> bool:
    if _MODULE.match(named):
        path = markdown.REPO / Path(*named.split("."))
        return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()
    return (markdown.REPO / named).exists()


def test_a_broken_link_a_missing_anchor_and_a_missing_path_are_found(tmp_path: Path) -> None:
    """The checks above can fail: a page with one good and three bad references."""
    (tmp_path / "other.md").write_text("# Other page\n\n## The part: one `thing`\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[good](other.md#the-part-one-thing) [gone](missing.md)\n"
        "[no anchor](other.md#elsewhere), [not here](#nowhere)\n"
        "```\n[inside a code block](ignored.md)\n```\n"
        "`app/retry.py` and `app/no_such_module.py` and `app.storage.s3_listing`\n"
    )
    assert markdown.broken_links(page, root=tmp_path) == [
        "page.md:3: link to missing.md: no such file",
        "page.md:4: link to other.md#elsewhere: no heading of other.md makes #elsewhere",
        "page.md:4: link to #nowhere: no heading of page.md makes #nowhere",
    ]
    named = paths_named(page.read_text())
    assert [(path, exists(path)) for _, path in named] == [
        ("app/retry.py", True),
        ("app/no_such_module.py", False),
        ("app.storage.s3_listing", True),
    ]

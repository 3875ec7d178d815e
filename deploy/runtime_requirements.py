"""Print the part of requirements.lock that a set of packages needs, hashes and all.

The lock is one file for the service and its dev group (`make lock`). uv writes, under every
entry, what requires it (`# via ...`): the service's own dependencies say
`cross-cloud-replicator (pyproject.toml)`, the dev group's `(pyproject.toml:dev)`. An entry is
needed when a root requires it or a needed entry does, so the closure over those lines is
the runtime set, computed from the lock alone: no resolver, no index, the same pins and
hashes. Entries are printed as the lock has them (markers and hashes included), in its order.

    python deploy/runtime_requirements.py requirements.lock            # the service's runtime
    python deploy/runtime_requirements.py requirements.lock hatchling  # a build tool's closure

The image installs the output with `pip install --require-hashes --no-deps`, then runs
`pip check`: an entry this missed fails the build instead of the service.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

PROJECT = "cross-cloud-replicator (pyproject.toml)"  # uv's mark for [project.dependencies]


@dataclass(frozen=True)
class Entry:
    name: str  # normalised (PEP 503)
    text: str  # the lines of the lock, pin, hashes and comments
    required_by: frozenset[str]  # normalised names, or PROJECT, or another group's mark


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse(lock: str) -> list[Entry]:
    blocks: list[list[str]] = []
    for line in lock.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
    return [_entry(block) for block in blocks]


def _entry(block: list[str]) -> Entry:
    name = re.split(r"[\s=<>!~;\[]", block[0], maxsplit=1)[0]
    parents = set()
    comments = [line.strip().removeprefix("#").strip() for line in block[1:]]
    comments = [c for c in comments if c and not c.startswith("--hash")]
    for comment in comments:
        parent = comment.removeprefix("via").strip()
        if parent:
            parents.add(parent if "(" in parent else normalise(parent.split("[")[0]))
    return Entry(normalise(name), "\n".join(block), frozenset(parents))


def closure(entries: list[Entry], roots: set[str]) -> list[Entry]:
    """The entries `roots` need: each a root, or required by a needed entry. A root is a
    package name, or PROJECT for the service's own dependencies."""
    needed = {normalise(r) if r != PROJECT else r for r in roots}
    while True:
        grown = needed | {e.name for e in entries if e.required_by & needed}
        if grown == needed:
            return [e for e in entries if e.name in needed]
        needed = grown


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    entries = parse(Path(argv[0]).read_text(encoding="utf-8"))
    roots = set(argv[1:]) or {PROJECT}
    unknown = {normalise(r) for r in roots if r != PROJECT} - {e.name for e in entries}
    if unknown:
        print(f"not in {argv[0]}: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    needed = closure(entries, roots)
    print(f"# {len(needed)} entries of {argv[0]} needed by {', '.join(sorted(roots))}")
    for entry in needed:
        print(entry.text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Which keys a bulk command looks at: `--include` and `--exclude` globs on the key below the
prefix. `*` and `?` stay within one path segment, `**` spans segments (`**/` also matches no
segment at all), `[...]` is a character class. Excludes win; no includes means every key."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


def compile_glob(pattern: str) -> re.Pattern[str]:
    """The regular expression that matches a whole key exactly when `pattern` does."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out), re.DOTALL)


@dataclass(frozen=True)
class KeyFilter:
    includes: tuple[re.Pattern[str], ...] = ()
    excludes: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def from_globs(cls, includes: Iterable[str] = (), excludes: Iterable[str] = ()) -> KeyFilter:
        return cls(
            tuple(compile_glob(p) for p in includes), tuple(compile_glob(p) for p in excludes)
        )

    def matches(self, key: str) -> bool:
        if any(p.fullmatch(key) for p in self.excludes):
            return False
        return not self.includes or any(p.fullmatch(key) for p in self.includes)

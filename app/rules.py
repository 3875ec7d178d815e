"""Replication rules: which S3 objects go where in GCS (`REPLICATION_RULES`).

The setting is a JSON list of rules, each naming a source and a destination:

    [{"source": "s3://logs-bucket/app/", "destination": "gs://archive/s3-logs/"},
     {"source": "s3://media", "destination": "gs://media-copy"}]

A key is routed by the rule of its bucket with the longest source prefix the key starts
with, and lands at the destination prefix followed by the rest of the key: with the first
rule, `app/2024/x.log` becomes `s3-logs/2024/x.log` in `archive`.

Prefixes are plain string prefixes, not folders: "app/" does not match the key "app", and
"app" matches "app/x" and "apple" alike. No two rules may share a source.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_FIELDS = frozenset({"source", "destination"})
_GCS_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]")


@dataclass(frozen=True)
class Rule:
    source_bucket: str
    source_prefix: str
    destination_bucket: str
    destination_prefix: str


def parse_rules(value: str | Sequence[Any]) -> tuple[Rule, ...]:
    """Rules from the setting's JSON text (or the list it decodes to).

    Raises ValueError naming the rule's index and what is wrong with it.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"replication rules are not JSON: {exc}") from None
    if not isinstance(value, list):
        raise ValueError("replication rules must be a JSON list of rules")
    rules = tuple(_parse_rule(index, entry) for index, entry in enumerate(value))
    seen: dict[tuple[str, str], int] = {}
    for index, rule in enumerate(rules):
        source = (rule.source_bucket, rule.source_prefix)
        if source in seen:
            raise ValueError(f"rule {index}: same source as rule {seen[source]}")
        seen[source] = index
    return rules


def route(rules: Sequence[Rule], bucket: str, key: str) -> tuple[str, str] | None:
    """(GCS bucket, object name) for the S3 object `bucket`/`key`, or None if no rule
    matches. None too when the name would be empty: the key equals the source prefix and
    the destination has no prefix (GCS has no object with an empty name)."""
    matches = [r for r in rules if r.source_bucket == bucket and key.startswith(r.source_prefix)]
    if not matches:
        return None
    rule = max(matches, key=lambda r: len(r.source_prefix))
    name = rule.destination_prefix + key[len(rule.source_prefix) :]
    return (rule.destination_bucket, name) if name else None


def _parse_rule(index: int, entry: Any) -> Rule:
    if not isinstance(entry, dict):
        raise ValueError(f"rule {index}: must be an object with source and destination")
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise ValueError(f"rule {index}: unknown field(s) {', '.join(unknown)}")
    missing = sorted(_FIELDS - set(entry))
    if missing:
        raise ValueError(f"rule {index}: missing {', '.join(missing)}")
    source_bucket, source_prefix = _split_url(index, "source", entry["source"], "s3")
    destination_bucket, destination_prefix = _split_url(
        index, "destination", entry["destination"], "gs"
    )
    if not _GCS_BUCKET.fullmatch(destination_bucket):
        raise ValueError(
            f"rule {index}: destination bucket {destination_bucket!r} is not a valid GCS "
            "bucket name (3-63 of a-z, 0-9, '.', '_', '-', starting and ending with a "
            "letter or digit)"
        )
    return Rule(source_bucket, source_prefix, destination_bucket, destination_prefix)


def _split_url(index: int, field: str, url: Any, scheme: str) -> tuple[str, str]:
    """'scheme://bucket[/prefix]' -> (bucket, prefix); the prefix is everything after the
    first '/', kept as it is (no URL decoding: '?' and '#' are ordinary key characters)."""
    if not isinstance(url, str):
        raise ValueError(f"rule {index}: {field} must be a string like {scheme}://bucket/prefix")
    given_scheme, separator, rest = url.partition("://")
    if not separator or given_scheme != scheme:
        raise ValueError(f"rule {index}: {field} {url!r} must start with {scheme}://")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"rule {index}: {field} {url!r} names no bucket")
    if any(character.isspace() for character in bucket):
        raise ValueError(f"rule {index}: {field} bucket {bucket!r} contains whitespace")
    return bucket, prefix

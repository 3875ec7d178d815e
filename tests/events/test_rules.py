from __future__ import annotations

import json

import pytest

from app.rules import Rule, parse_rules, route


def rules_from(*pairs: tuple[str, str]) -> tuple[Rule, ...]:
    return parse_rules(json.dumps([{"source": s, "destination": d} for s, d in pairs]))


def test_parses_buckets_and_prefixes() -> None:
    rules = rules_from(
        ("s3://logs/app/", "gs://archive/s3-logs/"),
        ("s3://media", "gs://media-copy"),
        ("s3://media/raw/", "gs://media-copy/"),
    )
    assert rules == (
        Rule("logs", "app/", "archive", "s3-logs/"),
        Rule("media", "", "media-copy", ""),
        Rule("media", "raw/", "media-copy", ""),
    )


def test_accepts_the_decoded_list() -> None:
    assert parse_rules([{"source": "s3://a1b", "destination": "gs://xyz"}]) == (
        Rule("a1b", "", "xyz", ""),
    )


def test_prefix_characters_are_kept_as_written() -> None:
    (rule,) = rules_from(("s3://src/a b+c%2F?#/", "gs://dst/x y/"))
    assert rule.source_prefix == "a b+c%2F?#/"
    assert rule.destination_prefix == "x y/"


def test_route_longest_prefix_wins_and_rest_of_key_follows() -> None:
    rules = rules_from(
        ("s3://src", "gs://all"),
        ("s3://src/logs/", "gs://logs/from-s3/"),
        ("s3://src/logs/debug/", "gs://debug"),
        ("s3://other/logs/", "gs://elsewhere/"),
    )
    assert route(rules, "src", "logs/2024/x.log") == ("logs", "from-s3/2024/x.log")
    assert route(rules, "src", "logs/debug/y") == ("debug", "y")
    assert route(rules, "src", "photos/p.jpg") == ("all", "photos/p.jpg")
    assert route(rules, "other", "logs/z") == ("elsewhere", "z")
    assert route(rules, "other", "log") is None
    assert route(rules, "unknown", "logs/z") is None


def test_prefixes_are_plain_string_prefixes() -> None:
    rules = rules_from(("s3://src/logs/", "gs://dst/l/"), ("s3://src/app", "gs://dst/a/"))
    assert route(rules, "src", "logs") is None  # "logs/" is not "logs"
    assert route(rules, "src", "apple") == ("dst", "a/le")  # "app" is a prefix of "apple"
    assert route(rules, "src", "app/x") == ("dst", "a//x")


def test_route_never_names_an_empty_object() -> None:
    rules = rules_from(("s3://src/logs/", "gs://dst"))
    assert route(rules, "src", "logs/") is None
    assert route(rules, "src", "logs/a") == ("dst", "a")


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("not json", "not JSON"),
        ('{"source": "s3://a"}', "JSON list"),
        ('["s3://a"]', "rule 0: must be an object"),
        ('[{"source": "s3://abc"}]', "rule 0: missing destination"),
        ('[{"source": "s3://abc", "destination": "gs://abc", "x": 1}]', "unknown field.*x"),
        ('[{"source": "gs://abc", "destination": "gs://abc"}]', "source .* must start with s3://"),
        ('[{"source": "abc", "destination": "gs://abc"}]', "must start with s3://"),
        ('[{"source": "s3://abc", "destination": "s3://abc"}]', "must start with gs://"),
        ('[{"source": "s3://", "destination": "gs://abc"}]', "source 's3://' names no bucket"),
        ('[{"source": "s3:///p", "destination": "gs://abc"}]', "names no bucket"),
        ('[{"source": 3, "destination": "gs://abc"}]', "source must be a string"),
        ('[{"source": "s3://a b", "destination": "gs://abc"}]', "whitespace"),
        ('[{"source": "s3://abc", "destination": "gs://ab"}]', "'ab' is not a valid GCS"),
        ('[{"source": "s3://abc", "destination": "gs://Abc"}]', "not a valid GCS"),
        ('[{"source": "s3://abc", "destination": "gs://-abc"}]', "not a valid GCS"),
        ('[{"source": "s3://abc", "destination": "gs://abc."}]', "not a valid GCS"),
        ('[{"source": "s3://abc", "destination": "gs://a%bc"}]', "not a valid GCS"),
        (json.dumps([{"source": "s3://abc", "destination": "gs://" + "a" * 64}]), "valid GCS"),
    ],
)
def test_invalid_rules_name_index_and_problem(rules: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_rules(rules)


def test_error_names_the_index_of_the_bad_rule() -> None:
    text = json.dumps(
        [
            {"source": "s3://ok", "destination": "gs://fine"},
            {"source": "s3://ok/p/", "destination": "gs://NOPE"},
        ]
    )
    with pytest.raises(ValueError, match=r"^rule 1: destination bucket 'NOPE'"):
        parse_rules(text)


def test_valid_gcs_bucket_names() -> None:
    for name in ("abc", "a" * 63, "my.bucket_name-1", "0ab"):
        assert rules_from(("s3://src", f"gs://{name}/p"))[0].destination_bucket == name


def test_two_rules_with_one_source_are_refused() -> None:
    with pytest.raises(ValueError, match="rule 2: same source as rule 0"):
        rules_from(("s3://a1/p/", "gs://xyz"), ("s3://a1", "gs://xyz"), ("s3://a1/p/", "gs://q12"))


def test_empty_list_is_no_rules() -> None:
    assert parse_rules("[]") == ()

"""`replicator sync` and `replicator check`, run as processes against the real emulators.

Each run starts in an empty directory with only the settings the test names; what the tests
assert is what a user would look at: the bytes and records at GCS, the lines, the exit status.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from app.dev import emulators
from app.replication import identity
from app.replication.composite import PARTS_PREFIX
from tests.conftest import Buckets
from tests.faults import Fault, FaultProxy


def summary(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The --json summary on stdout, without its duration (checked to be a number)."""
    parsed: dict[str, Any] = json.loads(result.stdout)
    assert isinstance(parsed.pop("duration_seconds"), int | float)
    return parsed


def sync_summary(**counts: int | bool) -> dict[str, int | bool]:
    """The summary of a sync that did `counts` and nothing else."""
    empty = {"copied": 0, "skipped": 0, "gone": 0, "deleted": 0, "failed": 0, "bytes": 0}
    return {**empty, "dry_run": False, "interrupted": False, **counts}


def dest_keys(buckets: Buckets) -> set[str]:
    return {blob.name for blob in buckets.gcs.list_blobs(buckets.dest)}


def s3_etag(buckets: Buckets, key: str) -> str:
    return str(buckets.s3.head_object(Bucket=buckets.source, Key=key)["ETag"]).strip('"')


def put_dest(buckets: Buckets, key: str, data: bytes, **metadata: str) -> None:
    blob = buckets.gcs.bucket(buckets.dest).blob(key)
    blob.metadata = metadata or None
    blob.upload_from_string(data)


def test_sync_copies_into_an_empty_destination_then_copies_nothing(
    run: Any, buckets: Buckets
) -> None:
    data = {
        key: buckets.put_random(key, size) for key, size in [("a", 10), ("b/c", 3000), ("d", 0)]
    }
    first = run("sync", f"s3://{buckets.source}", f"gs://{buckets.dest}", "--json")
    assert first.returncode == 0, first.stderr
    assert summary(first) == sync_summary(copied=3, bytes=3010)
    for key, content in data.items():
        assert buckets.destination_bytes(key) == content
        blob = buckets.gcs.bucket(buckets.dest).get_blob(key)
        assert blob.metadata[identity.SOURCE_ETAG] == s3_etag(buckets, key)

    second = run("sync", f"s3://{buckets.source}", f"gs://{buckets.dest}", "--json")
    assert second.returncode == 0, second.stderr
    assert summary(second) == sync_summary(skipped=3)


def test_a_changed_source_object_is_copied_again(run: Any, buckets: Buckets) -> None:
    buckets.put("same", b"unchanged")
    buckets.put("changed", b"first version")
    assert run("sync", f"s3://{buckets.source}", f"gs://{buckets.dest}").returncode == 0
    buckets.put("changed", b"second version, longer")
    result = run("sync", f"s3://{buckets.source}", f"gs://{buckets.dest}", "--json")
    assert result.returncode == 0, result.stderr
    assert summary(result) == sync_summary(copied=1, skipped=1, bytes=22)
    assert buckets.destination_bytes("changed") == b"second version, longer"


def test_keys_keep_their_path_below_the_prefixes(run: Any, buckets: Buckets) -> None:
    buckets.put("in/a", b"a")
    buckets.put("in/sub/b", b"b")
    buckets.put("inside", b"not below the prefix in/")
    buckets.put("other/c", b"c")
    result = run("sync", f"s3://{buckets.source}/in", f"gs://{buckets.dest}/out/")
    assert result.returncode == 0, result.stderr
    assert dest_keys(buckets) == {"out/a", "out/sub/b"}
    assert buckets.destination_bytes("out/sub/b") == b"b"


def test_include_and_exclude_globs(run: Any, buckets: Buckets) -> None:
    for key in ["a.txt", "d/b.txt", "d/e/c.txt", "d/x.bin", "d/skip/y.txt"]:
        buckets.put(key, key.encode())
    source = f"s3://{buckets.source}"
    across = run(
        "sync",
        source,
        f"gs://{buckets.dest}/one",
        "--include",
        "**/*.txt",
        "--exclude",
        "d/skip/**",
    )
    within = run(
        "sync", source, f"gs://{buckets.dest}/two", "--include", "d/*.txt", "--include", "*.bin"
    )
    assert across.returncode == 0, across.stderr
    assert within.returncode == 0, within.stderr
    assert dest_keys(buckets) == {"one/a.txt", "one/d/b.txt", "one/d/e/c.txt", "two/d/b.txt"}


def test_dry_run_changes_nothing_and_says_what_it_would_do(run: Any, buckets: Buckets) -> None:
    buckets.put("new", b"new")
    put_dest(buckets, "extra", b"extra")
    result = run("sync", f"s3://{buckets.source}", f"gs://{buckets.dest}", "--dry-run", "--delete")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["would copy new", "would delete extra"]
    assert dest_keys(buckets) == {"extra"}
    as_json = run(
        "sync", f"s3://{buckets.source}", f"gs://{buckets.dest}", "--dry-run", "--delete", "--json"
    )
    assert as_json.returncode == 0, as_json.stderr
    assert summary(as_json) == sync_summary(copied=1, deleted=1, bytes=3, dry_run=True)
    assert as_json.stderr.splitlines()[:2] == ["would copy new", "would delete extra"]
    assert result.stderr.splitlines()[-1].startswith(
        "would copy 1, skipped 0, gone 0, would delete 1, failed 0, 3 bytes in "
    )
    assert result.stderr.splitlines()[-1].endswith("s (dry run)")
    assert dest_keys(buckets) == {"extra"}


def test_delete_removes_extras_under_the_prefix_only(
    run: Any, buckets: Buckets, tmp_path: Path
) -> None:
    buckets.put("p/keep", b"keep")
    put_dest(buckets, "p/extra", b"extra")
    put_dest(buckets, "outside", b"not under the prefix")
    report = tmp_path / "report.jsonl"
    result = run(
        "sync",
        f"s3://{buckets.source}/p",
        f"gs://{buckets.dest}/p",
        "--delete",
        "--report",
        str(report),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert summary(result)["deleted"] == 1
    assert dest_keys(buckets) == {"p/keep", "outside"}
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert sorted((line["key"], line["action"]) for line in lines) == [
        ("extra", "deleted"),
        ("keep", "copied"),
    ]


def test_the_services_temporary_parts_are_neither_compared_nor_deleted(
    run: Any, buckets: Buckets
) -> None:
    """A part of a composite copy in flight (or left by a killed one, for the sweep) is not the
    user's: `sync --delete` keeps it, `check` does not call it extra."""
    buckets.put("a", b"a")
    part = f"{PARTS_PREFIX}0f3c/00000"
    put_dest(buckets, part, b"part bytes")
    synced = run("sync", f"s3://{buckets.source}", f"gs://{buckets.dest}", "--delete", "--json")
    assert synced.returncode == 0, synced.stderr
    assert summary(synced) == sync_summary(copied=1, bytes=1)
    assert dest_keys(buckets) == {"a", part}
    checked = run("check", f"s3://{buckets.source}", f"gs://{buckets.dest}")
    assert checked.returncode == 0, checked.stdout
    assert checked.stdout.splitlines() == ["= a"]


def test_more_deletes_than_max_delete_deletes_nothing_and_fails(run: Any, buckets: Buckets) -> None:
    buckets.put("keep", b"keep")
    put_dest(buckets, "extra-1", b"1")
    put_dest(buckets, "extra-2", b"2")
    result = run(
        "sync", f"s3://{buckets.source}", f"gs://{buckets.dest}", "--delete", "--max-delete", "1"
    )
    assert result.returncode == 1, result.stderr
    assert "--max-delete 1" in result.stderr
    assert dest_keys(buckets) == {"keep", "extra-1", "extra-2"}
    allowed = run(
        "sync", f"s3://{buckets.source}", f"gs://{buckets.dest}", "--delete", "--max-delete", "2"
    )
    assert allowed.returncode == 0, allowed.stderr
    assert dest_keys(buckets) == {"keep"}


def test_a_failed_copy_prevents_every_delete(
    run: Any, buckets: Buckets, s3_proxy: FaultProxy, tmp_path: Path
) -> None:
    buckets.put("good", b"good")
    buckets.put("bad", b"S3 answers 503 for this one")
    put_dest(buckets, "extra", b"extra")
    s3_proxy.add(Fault("GET", f"/{buckets.source}/bad", "status", status=503))
    report = tmp_path / "report.jsonl"
    result = run(
        "sync",
        f"s3://{buckets.source}",
        f"gs://{buckets.dest}",
        "--delete",
        "--report",
        str(report),
        s3_url=s3_proxy.url,
        MAX_RETRIES="0",
    )
    assert result.returncode == 1, result.stderr
    assert "failed: bad:" in result.stderr
    assert dest_keys(buckets) == {"good", "extra"}
    actions = {
        json.loads(line)["key"]: json.loads(line)["action"]
        for line in report.read_text().splitlines()
    }
    assert actions == {"good": "copied", "bad": "failed"}


def test_awkward_keys(run: Any, buckets: Buckets) -> None:
    keys = ["with space.txt", "plus+sign", "ünïcødé/ключ", "double//slash", "100%"]
    for key in keys:
        buckets.put(key, key.encode())
    result = run("sync", f"s3://{buckets.source}", f"gs://{buckets.dest}")
    assert result.returncode == 0, result.stderr
    for key in keys:
        assert buckets.destination_bytes(key) == key.encode()
    check = run("check", f"s3://{buckets.source}", f"gs://{buckets.dest}")
    assert check.returncode == 0, check.stdout + check.stderr
    assert sorted(check.stdout.splitlines()) == sorted(f"= {key}" for key in keys)


@pytest.mark.parametrize(
    "source", ["gs://somewhere", "s3://", "s3://no-such-bucket-for-sync-tests"]
)
@pytest.mark.parametrize("command", ["sync", "check"])
def test_a_bad_source_exits_2_with_one_line(
    run: Any, buckets: Buckets, command: str, source: str
) -> None:
    result = run(command, source, f"gs://{buckets.dest}")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"replicator {command}: ")


@pytest.mark.parametrize("command", ["sync", "check"])
@pytest.mark.parametrize("side", ["S3_ENDPOINT_URL", "STORAGE_EMULATOR_HOST"])
def test_a_cloud_that_does_not_answer_is_one_line_naming_its_setting(
    run: Any, buckets: Buckets, command: str, side: str
) -> None:
    closed = f"http://{emulators.HOST}:{emulators.free_port()}"  # nothing listens there
    buckets.put("waiting.txt", b"never copied")

    result = run(command, f"s3://{buckets.source}", f"gs://{buckets.dest}", **{side: closed})

    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"replicator {command}: {side}: cannot reach "), line
    assert closed in line
    assert result.stdout == ""
    assert dest_keys(buckets) == set()


def test_a_destination_bucket_that_does_not_exist_is_one_line(run: Any, buckets: Buckets) -> None:
    result = run("sync", f"s3://{buckets.source}", "gs://no-such-bucket-for-sync-tests")

    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "replicator sync: gs://no-such-bucket-for-sync-tests does not exist"
    ]


def test_a_bad_setting_exits_2_with_the_services_line(run: Any, buckets: Buckets) -> None:
    result = run("sync", f"s3://{buckets.source}", f"gs://{buckets.dest}", MAX_RETRIES="many")
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert "MAX_RETRIES" in line


def test_check_marks_each_kind_of_key(run: Any, buckets: Buckets, tmp_path: Path) -> None:
    folder = "f" * 100  # a destination prefix that makes a 950-byte key too long for GCS
    long_key = "k" * 950
    for key in ["same", "changed", "replaced", long_key]:
        buckets.put(key, key.encode())
    synced = run("sync", f"s3://{buckets.source}", f"gs://{buckets.dest}/{folder}")
    assert synced.returncode == 1  # the long key cannot be written
    assert f"failed: {long_key}:" in synced.stderr
    buckets.put("missing", b"only at the source")
    buckets.put("changed", b"changed at the source")
    put_dest(buckets, f"{folder}/replaced", b"REPLACED", owner="someone else")
    put_dest(buckets, f"{folder}/extra", b"only at the destination")
    combined = tmp_path / "combined.txt"
    result = run(
        "check",
        f"s3://{buckets.source}",
        f"gs://{buckets.dest}/{folder}",
        "--combined",
        str(combined),
    )
    assert result.returncode == 1, result.stderr
    expected = ["* changed", "+ extra", f"! {long_key}", "- missing", "* replaced", "= same"]
    assert result.stdout.splitlines() == expected
    assert combined.read_text().splitlines() == expected
    assert f"! {long_key}: " in result.stderr
    as_json = run("check", f"s3://{buckets.source}", f"gs://{buckets.dest}/{folder}", "--json")
    assert as_json.returncode == 1
    assert summary(as_json) == {
        "identical": 1,
        "missing": 1,
        "extra": 1,
        "different": 2,
        "errors": 1,
        "interrupted": False,
    }


def test_check_exits_0_only_when_nothing_differs(run: Any, buckets: Buckets) -> None:
    buckets.put("a", b"a")
    buckets.put("b/c", b"c")
    assert run("sync", f"s3://{buckets.source}", f"gs://{buckets.dest}").returncode == 0
    same = run("check", f"s3://{buckets.source}", f"gs://{buckets.dest}")
    assert same.returncode == 0, same.stderr
    assert same.stdout.splitlines() == ["= a", "= b/c"]
    assert "2 identical" in same.stderr
    put_dest(buckets, "b/d", b"extra")
    assert run("check", f"s3://{buckets.source}", f"gs://{buckets.dest}").returncode == 1
    excluded = run("check", f"s3://{buckets.source}", f"gs://{buckets.dest}", "--exclude", "b/d")
    assert excluded.returncode == 0, excluded.stdout


@pytest.mark.parametrize(("command", "option"), [("sync", "--report"), ("check", "--combined")])
def test_an_unwritable_output_file_exits_2_with_one_line(
    run: Any, buckets: Buckets, tmp_path: Path, command: str, option: str
) -> None:
    buckets.put("a", b"a")
    nowhere = str(tmp_path / "no-such-folder" / "out.txt")
    result = run(command, f"s3://{buckets.source}", f"gs://{buckets.dest}", option, nowhere)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"replicator {command}: {option}: ")
    assert dest_keys(buckets) == set()

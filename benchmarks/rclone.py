"""rclone, the peer a user would pick instead, run against the same emulators.

`AWS_CA_BUNDLE` is removed from its environment: it breaks rclone's S3 client.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = "rclone is not installed; `apt-get install rclone` adds it to the comparison"

_CONFIG = """\
[s3]
type = s3
provider = Other
access_key_id = test
secret_access_key = test
endpoint = {s3_url}
force_path_style = true

[gcs]
type = google cloud storage
anonymous = true
endpoint = {gcs_url}/storage/v1/
bucket_policy_only = true
"""


class RcloneFailed(RuntimeError):
    pass


@dataclass
class Rclone:
    binary: str
    config: Path

    def command(self, verb: str, source: str, destination: str, *flags: str) -> list[str]:
        """`rclone VERB [flags] s3:SOURCE gcs:DESTINATION` with this config."""
        command = [self.binary, "--config", str(self.config), verb, *flags]
        return [*command, f"s3:{source}", f"gcs:{destination}"]

    def copy(self, source: str, destination: str, *flags: str) -> None:
        """`rclone copy [flags] s3:SOURCE gcs:DESTINATION`; RcloneFailed on a non-zero exit."""
        command = self.command("copy", source, destination, *flags)
        done = subprocess.run(command, env=env(), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            last = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
            raise RcloneFailed(f"rclone exited with {done.returncode}: {last[0]}")


def env() -> dict[str, str]:
    """rclone's environment: this process's, without AWS_CA_BUNDLE."""
    return {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}


def find(workdir: Path, s3_url: str, gcs_url: str) -> Rclone | None:
    """rclone with a config for these emulators, or None when it is not installed."""
    binary = shutil.which("rclone")
    if binary is None:
        return None
    config = workdir / "rclone.conf"
    config.write_text(_CONFIG.format(s3_url=s3_url, gcs_url=gcs_url))
    return Rclone(binary, config)


def version() -> str | None:
    binary = shutil.which("rclone")
    if binary is None:
        return None
    done = subprocess.run([binary, "version"], capture_output=True, text=True, check=False)
    return done.stdout.splitlines()[0] if done.stdout else None

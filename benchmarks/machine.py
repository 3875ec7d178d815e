"""What the figures were measured on: figures from another machine are not comparable."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
from pathlib import Path

from app.config import Settings
from benchmarks import rclone
from benchmarks.stack import REPO

_PACKAGES = ("fastapi", "uvicorn", "boto3", "google-cloud-storage", "moto")
_SECRETS = ("KEY", "SECRET", "CREDENTIALS")


def _system_rclone() -> str:
    """The version of an rclone on the system's PATH (Debian's), or "not installed"; never the
    bundled one (`rclone.version(None)` would answer with that)."""
    binary = shutil.which("rclone", path=os.defpath)
    return (rclone.version(binary) if binary else None) or "not installed"


def describe() -> dict[str, object]:
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": _cpu_model(),
        "memory_gib": round(_mem_total_kib() / 1024 / 1024, 1),
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "os": platform.platform(),
        "python": platform.python_version(),
        "rclone": rclone.version() or "not installed",
        "rclone_debian": _system_rclone(),
        "packages": {name: _version(name) for name in _PACKAGES},
        "commit": _commit(),
        "service_settings": service_settings(),
    }


def service_settings() -> dict[str, str]:
    """Service settings the environment overrides (the service process inherits them)."""
    return {
        name: value
        for name, value in os.environ.items()
        if name.lower() in Settings.model_fields and not any(s in name for s in _SECRETS)
    }


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 0


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return f"{commit} (uncommitted changes)" if git("status", "--porcelain", "app") else commit

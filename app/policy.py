"""The choices a user makes about what the service does to the destination."""

from __future__ import annotations

import enum


class Overwrite(enum.StrEnum):
    """When an existing destination object is replaced (Storage Transfer's `overwriteWhen`)."""

    DIFFERENT = "different"  # replace when it records another source version, or none
    NEVER = "never"  # keep whatever is there
    ALWAYS = "always"  # copy again every time

"""The choices a user makes about what the service does to the destination."""

from __future__ import annotations

import enum


class Overwrite(enum.StrEnum):
    """When an existing destination object is replaced (Storage Transfer's `overwriteWhen`)."""

    DIFFERENT = "different"  # replace when it records another source version, or none
    NEVER = "never"  # keep whatever is there
    ALWAYS = "always"  # copy again every time


class DeletePolicy(enum.StrEnum):
    """What a delete at the source does to the destination (`DELETE_POLICY`)."""

    IGNORE = "ignore"  # keep the copy
    PROPAGATE = "propagate"  # remove the copy the service wrote, once the source has no object

"""The destination objects the API shows and removes, each call retried by the policy."""

from __future__ import annotations

from app import errors
from app.retry import RetryPolicy
from app.storage.base import Destination, ObjectInfo


class DestinationObjects:
    def __init__(self, destination: Destination, retry: RetryPolicy) -> None:
        self._destination = destination
        self._retry = retry

    def describe(self, bucket: str, key: str) -> ObjectInfo:
        """ObjectNotFound when gs://bucket/key does not exist."""
        info = self._retry.call(self._destination.head, bucket, key)
        if info is None:
            raise errors.ObjectNotFound(f"gs://{bucket}/{key} does not exist")
        return info

    def delete(self, bucket: str, key: str) -> None:
        """ObjectNotFound when there is nothing to delete."""
        self._retry.call(self._destination.delete, bucket, key)

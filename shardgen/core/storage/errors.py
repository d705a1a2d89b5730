"""Errors of the storage layer; each message names the URL (and the byte offset, for reads)."""

from __future__ import annotations


class StorageError(IOError):
    """A store operation failed (the message names the store URL / object)."""


class RemoteReadError(StorageError):
    """Reading a remote object failed; ``url`` and ``offset`` say where."""

    def __init__(self, message: str, url: str | None = None, offset: int | None = None):
        super().__init__(message)
        self.url = url
        self.offset = offset


class RemoteNotFoundError(RemoteReadError, FileNotFoundError):
    """The remote object does not exist (HTTP 404/410, S3 NoSuchKey)."""


class CacheVerificationError(StorageError):
    """A downloaded shard did not match its expected sha256 or size."""

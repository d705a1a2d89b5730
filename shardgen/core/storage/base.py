"""What every storage backend offers: read side (:class:`Store`) and, where writable, write side.

Names are relative to the store's root (a directory, an ``http(s)://`` prefix or an ``s3://``
bucket/prefix) and ``/``-separated. Reads: :meth:`Store.open_range` (a stream of bytes
``[start, end)``), :meth:`Store.read_bytes` (a small object whole), :meth:`Store.size`.
Writes (:class:`WritableStore`; HTTP is read-only): ``put_file`` / ``put_bytes`` (each object is
published atomically: a reader sees the old object or the whole new one), ``list``, ``delete``.

A data set (many shards + one manifest) is not atomic by itself. The contract: **the builder
uploads every shard first and the manifest last**; readers discover shards only through the
manifest, so a reader that sees a manifest can rely on every shard it names being complete.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import BinaryIO

from .options import TransportOptions
from .url import clean_name


class Store(ABC):
    """A readable location. ``options`` says how remote objects are read (timeouts, retries)."""

    writable = False

    def __init__(self, options: TransportOptions | None = None) -> None:
        self.options = options or TransportOptions()

    @abstractmethod
    def url(self, name: str) -> str:
        """The object's address (a local path or a URL) — what a reader is given."""

    @abstractmethod
    def open_range(self, name: str, start: int = 0, end: int | None = None, *, sparse: bool = False) -> BinaryIO:
        """A stream of the object's bytes ``[start, end)`` (``end=None``: to its end); ``tell()`` is absolute.

        ``sparse``: the reader will skip most of the range (local files are then unbuffered)."""

    @abstractmethod
    def size(self, name: str) -> int | None:
        """Size in bytes if the object exists, else None."""

    def read_bytes(self, name: str) -> bytes:
        """The whole object (manifests and other small files)."""
        with self.open_range(name) as f:
            return f.read()

    @staticmethod
    def clean(name: str) -> str:
        return clean_name(name)


class WritableStore(Store):
    """A location the builder can publish into."""

    writable = True

    @abstractmethod
    def put_file(self, local_path: str | os.PathLike, relative_name: str) -> None:
        """Publish a local file under ``relative_name`` (atomically for readers)."""

    @abstractmethod
    def put_bytes(self, data: bytes, relative_name: str) -> None:
        """Publish ``data`` under ``relative_name`` (atomically for readers)."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Sorted relative names starting with ``prefix`` (unfinished writes excluded)."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove an object; missing objects are ignored."""

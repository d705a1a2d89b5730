"""From an address to a store: the one place a backend is chosen for a URL.

:func:`open_store` opens a directory or prefix (the builder's output, a split to read);
:func:`locate` splits an object's address into its store and name, so :func:`open_range`,
:func:`read_bytes` and :func:`object_size` work on any object URL the same way.
"""

from __future__ import annotations

import os
from typing import BinaryIO

from .base import Store, WritableStore
from .http import HttpStore
from .local import LocalStore
from .options import TransportOptions
from .s3 import S3Store
from .s3config import S3Options
from .url import HTTP, LOCAL, parse_location

Options = TransportOptions | S3Options | dict | None


def open_store(url_or_path: str | os.PathLike, options: Options = None, *, create: bool = True) -> Store:
    """``s3://bucket/prefix`` → :class:`S3Store`; ``http(s)://prefix`` → :class:`HttpStore` (read-only);
    ``file:///dir`` or a path → :class:`LocalStore` (created when ``create``)."""
    opts = TransportOptions.coerce(options)
    loc = parse_location(url_or_path)
    if loc.kind == LOCAL:
        return LocalStore(loc.path, opts, create=create)
    if loc.kind == HTTP:
        return HttpStore(loc.path, opts)
    return S3Store(loc.path, opts)


def open_writable(url_or_path: str | os.PathLike, options: Options = None) -> WritableStore:
    """A store the builder can publish into (a local directory or ``s3://``; HTTP is read-only)."""
    store = open_store(url_or_path, options)
    if not isinstance(store, WritableStore):
        raise ValueError(f"{url_or_path}: cannot write there (http(s):// is read-only; use a directory or s3://bucket/prefix)")
    return store


def locate(url: str | os.PathLike, options: Options = None) -> tuple[Store, str]:
    """An object's address → (its store, its name there). Nothing is created or requested."""
    loc = parse_location(url)
    if loc.kind == LOCAL:
        head, name = os.path.split(loc.path)
        return LocalStore(head or ".", TransportOptions.coerce(options), create=False), name
    head, _, name = loc.path.rpartition("/")
    return open_store(head, options), name


def open_range(url: str | os.PathLike, options: Options = None, *, start: int = 0, end: int | None = None,
               sparse: bool = False) -> BinaryIO:
    """A stream of bytes ``[start, end)`` of any object (local, ``file://``, ``http(s)://``, ``s3://``).

    Remote objects stream through Range requests with bounded memory, resumed from the byte
    reached when a connection drops (:class:`~.stream.ResumableReader`: ``.reconnects``,
    ``.requests``, ``.size``); local files are seeked to ``start``. Use as a context manager.
    """
    store, name = locate(url, options)
    return store.open_range(name, start, end, sparse=sparse)


def read_bytes(url: str | os.PathLike, options: Options = None) -> bytes:
    """A whole object (manifests and other small files), with the same retries."""
    store, name = locate(url, options)
    return store.read_bytes(name)


def object_size(url: str | os.PathLike, options: Options = None) -> int | None:
    """An object's size in bytes, or None when it does not exist (a HEAD request for remote objects)."""
    store, name = locate(url, options)
    return store.size(name)

"""One parser for every address avshards reads or writes: a local path, ``file://``, ``http(s)://``, ``s3://``.

Everything that opens, lists or joins locations goes through :func:`parse_location`, so a new
scheme is added here and in :mod:`.locate` and nowhere else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

LOCAL, HTTP, S3 = "local", "http", "s3"
_REMOTE = {"http": HTTP, "https": HTTP, "s3": S3}


@dataclass(frozen=True)
class Location:
    """A parsed address. ``path`` is the local path (``file://`` unwrapped) or the URL as given."""

    kind: str  # LOCAL | HTTP | S3
    path: str
    bucket: str = ""  # s3 only
    key: str = ""  # s3 only: the key or prefix, without a leading '/'

    @property
    def remote(self) -> bool:
        return self.kind != LOCAL


def parse_location(url: str | os.PathLike) -> Location:
    """``/a/b``, ``file:///a/b``, ``http(s)://host/a``, ``s3://bucket/key`` → :class:`Location`.

    A ``file://`` URL naming another host, an ``s3://`` URL without a bucket and any other
    scheme are refused with a ValueError naming the address.
    """
    s = os.fspath(url)
    if "://" not in s:
        return Location(LOCAL, s)
    scheme = s.split("://", 1)[0].lower()
    if scheme == "file":
        u = urlparse(s)
        if u.netloc not in ("", "localhost"):
            raise ValueError(f"file:// URL with a remote host is not supported: {s!r}")
        return Location(LOCAL, unquote(u.path))
    if scheme == "s3":
        u = urlparse(s)
        if not u.netloc:
            raise ValueError(f"not an s3://bucket/key URL: {s!r}")
        return Location(S3, s, u.netloc, u.path.lstrip("/"))
    if scheme in _REMOTE:
        return Location(HTTP, s)
    raise ValueError(f"unsupported URL {s!r} (use a local path, file://, http(s):// or s3://bucket/prefix)")


def is_remote(url: str | os.PathLike) -> bool:
    """True for ``http(s)://`` and ``s3://`` addresses (read through range requests)."""
    s = os.fspath(url)
    return "://" in s and s.split("://", 1)[0].lower() in _REMOTE


def join(base: str | os.PathLike, name: str) -> str:
    """``name`` inside the directory or prefix ``base``."""
    b = os.fspath(base)
    return f"{b.rstrip('/')}/{name}" if is_remote(b) else str(Path(b) / name)


def parent(url: str | os.PathLike) -> str:
    """The directory or prefix holding ``url``."""
    s = os.fspath(url)
    return s.rsplit("/", 1)[0] if is_remote(s) else str(Path(s).parent)


def clean_name(name: str) -> str:
    """A store-relative object name: forward slashes, never absolute, no ``..`` (raises ValueError)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"invalid object name {name!r}")
    n = name.replace(os.sep, "/")
    if n.startswith("/"):
        raise ValueError(f"object name must be relative: {name!r}")
    parts = [p for p in n.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise ValueError(f"invalid object name {name!r}")
    return "/".join(parts)

"""Streaming, resumable reads of shards from HTTP(S), S3 or local files.

* :func:`open_shard` returns a readable, non-seekable-by-default raw stream
  (:class:`ResumableReader`, an :class:`io.RawIOBase`) for ``http://``,
  ``https://`` and ``s3://`` URLs, or a plain ``open(path, 'rb')`` for local
  paths and ``file://`` URLs.  Memory is bounded: the body is streamed in
  ``chunk_size`` pieces, never downloaded whole.

  If the connection drops or times out mid-body (connection reset, urllib3
  ``ProtocolError`` / ``IncompleteRead``, read timeout, body shorter than its
  ``Content-Length``), the reader reopens the object with
  ``Range: bytes=<pos>-`` (S3: ``GetObject(Range=...)``) from the byte it had
  reached, so no bytes are duplicated or lost and nothing restarts from zero.
  ``retries`` bounds the number of *consecutive* failed attempts without
  progress (any byte received resets the count), with exponential backoff
  ``backoff * 2**(n-1)`` (capped at ``max_backoff``, small jitter).  When they
  are exhausted :class:`RemoteReadError` names the URL and byte offset.
  If the object's ETag or size changes between two requests the read fails
  rather than splice two versions together.

* :func:`read_bytes` reads a small object (a manifest) whole with the same
  retry logic.

* :class:`ShardCache` keeps whole shards in a local directory (LRU by access
  time, total size bounded), verifying sha256 / size when given.

HTTP uses ``urllib3`` (already a dependency of requests and botocore); S3 uses
boto3 through :class:`shardgen.storage.S3Options` (imported lazily).
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import io
import os
import random
import re
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import BinaryIO, Callable
from urllib.parse import unquote, urlparse

__all__ = [
    "open_shard",
    "read_bytes",
    "ResumableReader",
    "RemoteReadError",
    "RemoteNotFoundError",
    "ShardCache",
    "CacheVerificationError",
    "is_remote",
]

DEFAULT_HTTP_TIMEOUT = (10.0, 30.0)  # connect, read (seconds)


class RemoteReadError(IOError):
    """Reading a remote object failed; ``url`` and ``offset`` say where."""

    def __init__(self, message: str, url: str | None = None, offset: int | None = None):
        super().__init__(message)
        self.url = url
        self.offset = offset


class RemoteNotFoundError(RemoteReadError, FileNotFoundError):
    """The remote object does not exist (HTTP 404/410, S3 NoSuchKey)."""


class _Transient(Exception):
    """Internal: a retryable condition detected by us (5xx, short body ...)."""


class _Fatal(Exception):
    """Internal: not retryable (4xx, object changed ...)."""

    def __init__(self, message: str, not_found: bool = False):
        super().__init__(message)
        self.not_found = not_found


class _EOF(Exception):
    """Internal: the requested start is at/after the end of the object (416)."""

    def __init__(self, total: int | None = None):
        super().__init__(total)
        self.total = total


_transient_types: tuple | None = None


def _transient_exceptions() -> tuple:
    global _transient_types
    if _transient_types is None:
        types: list[type] = [
            _Transient, ConnectionError, TimeoutError, socket.timeout,
            http.client.IncompleteRead, http.client.RemoteDisconnected,
            http.client.BadStatusLine,
        ]
        try:
            import urllib3.exceptions as ue

            types += [ue.ProtocolError, ue.TimeoutError, ue.IncompleteRead, ue.MaxRetryError,
                      ue.NewConnectionError, ue.SSLError]
        except ImportError:  # pragma: no cover
            pass
        try:
            import botocore.exceptions as be

            types += [be.ConnectionError, be.HTTPClientError, be.IncompleteReadError]
            for name in ("ResponseStreamingError", "ReadTimeoutError", "ConnectTimeoutError",
                         "EndpointConnectionError", "ConnectionClosedError"):
                t = getattr(be, name, None)
                if t is not None:
                    types.append(t)
        except ImportError:
            pass
        _transient_types = tuple(types)
    return _transient_types


def _parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """'bytes 10-99/100' -> (10, 99, 100); total '*' -> None."""
    if not value:
        return None
    m = re.match(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", value)
    if not m:
        return None
    total = None if m.group(3) == "*" else int(m.group(3))
    return int(m.group(1)), int(m.group(2)), total


def _range_header(pos: int, end: int | None) -> str:
    return f"bytes={pos}-" if end is None else f"bytes={pos}-{end - 1}"


class _Opened:
    """What an opener returns: a body with ``read(n)``/``close()``."""

    __slots__ = ("body", "start", "total", "etag", "release", "length", "skipped")

    def __init__(self, body, start: int, total: int | None, etag: str | None,
                 length: int | None = None, release: Callable[[bool], None] | None = None):
        self.body = body
        self.start = start  # absolute offset of the first byte of the body
        self.total = total  # object size if known
        self.etag = etag
        self.length = length  # body length if known
        self.release = release  # release(ok): ok=True -> reusable connection
        self.skipped = 0  # bytes discarded because the server ignored Range


class ResumableReader(io.RawIOBase):
    """Raw stream over a remote object that resumes with ranged requests.

    ``reconnects`` counts re-opens after failures, ``requests`` every request
    issued, ``bytes_skipped`` bytes discarded when a server ignored a Range.
    ``read(n)`` returns exactly ``n`` bytes unless at end of object.
    """

    def __init__(self, url: str, opener: Callable[[int, int | None], _Opened], *,
                 retries: int = 5, backoff: float = 0.5, max_backoff: float = 30.0,
                 chunk_size: int = 1 << 20, seekable: bool = True, start: int = 0,
                 end: int | None = None):
        super().__init__()
        self.url = url
        self._opener = opener
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.chunk_size = int(chunk_size)
        self._seekable = seekable
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"invalid byte window start={start} end={end}")
        self._pos = int(start)
        self._end = None if end is None else int(end)  # exclusive; None = object end
        self._size: int | None = None
        self._etag: str | None = None
        self._cur: _Opened | None = None
        self._cur_end: int | None = None
        self._eof_at: int | None = None  # a 416 said there is nothing from here on
        self.reconnects = 0
        self.requests = 0
        self.bytes_skipped = 0
        self.errors: list[str] = []  # the last few transient errors, for diagnostics

    # -- io.RawIOBase -------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._seekable

    def tell(self) -> int:
        return self._pos

    @property
    def size(self) -> int | None:
        """Object size once known (after the first response)."""
        return self._size

    @property
    def position(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self.closed:
            raise ValueError("seek on closed file")
        if not self._seekable:
            raise io.UnsupportedOperation("seek")
        if whence == io.SEEK_SET:
            new = offset
        elif whence == io.SEEK_CUR:
            new = self._pos + offset
        elif whence == io.SEEK_END:
            if self._size is None:
                self._with_retries(self._probe)
            if self._size is None:
                raise io.UnsupportedOperation(f"size of {self.url} unknown")
            new = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if new < 0:
            raise ValueError("negative seek position")
        if new != self._pos:
            self._drop(ok=False)
            self._pos = new
            self._eof_at = None
        return self._pos

    def close(self) -> None:
        if not self.closed:
            self._drop(ok=False)
        super().close()

    def readinto(self, b) -> int:
        if self.closed:
            raise ValueError("read from closed file")
        mv = memoryview(b).cast("B")
        if len(mv) == 0:
            return 0
        return self._with_retries(lambda: self._read_some(mv))

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        buf = bytearray(size)
        mv = memoryview(buf)
        got = 0
        while got < size:
            n = self.readinto(mv[got:])
            if not n:
                break
            got += n
        del mv
        if got < size:
            del buf[got:]
        return bytes(buf)

    def readall(self) -> bytes:
        parts = []
        while True:
            chunk = self.read(self.chunk_size)
            if not chunk:
                break
            parts.append(chunk)
        return b"".join(parts)

    # -- internals ------------------------------------------------------------
    def _limit(self) -> int | None:
        if self._end is None:
            return self._size
        return self._end if self._size is None else min(self._end, self._size)

    def _at_eof(self) -> bool:
        if self._eof_at is not None and self._pos >= self._eof_at:
            return True
        lim = self._limit()
        return lim is not None and self._pos >= lim

    def _drop(self, ok: bool) -> None:
        cur, self._cur = self._cur, None
        if cur is not None:
            self._release(cur, ok)

    def _open(self) -> None:
        self.requests += 1
        try:
            op = self._opener(self._pos, self._end)
        except _EOF as e:
            if e.total is not None and self._size is None:
                self._size = e.total
            self._eof_at = self._pos
            return
        if op.start != self._pos:
            self._release(op)
            raise _Fatal(f"server returned bytes from {op.start}, asked for {self._pos}")
        if self._etag and op.etag and op.etag != self._etag:
            self._release(op)
            raise _Fatal(f"object changed while reading (ETag {self._etag} -> {op.etag})")
        if self._size is not None and op.total is not None and op.total != self._size:
            self._release(op)
            raise _Fatal(f"object changed while reading (size {self._size} -> {op.total})")
        self._etag = self._etag or op.etag
        self.bytes_skipped += op.skipped
        if op.total is not None:
            self._size = op.total
        self._cur = op
        self._cur_end = op.start + op.length if op.length is not None else self._size

    @staticmethod
    def _release(op: _Opened, ok: bool = False) -> None:
        """Give a response back: to the pool when fully read (``ok``), else close its connection."""
        try:
            if op.release is not None:
                op.release(ok)
            else:
                op.body.close()
        except Exception:
            pass

    def _read_some(self, mv: memoryview) -> int:
        if self._at_eof():
            self._drop(ok=True)
            return 0
        if self._cur is None:
            self._open()
            if self._cur is None or self._at_eof():
                self._drop(ok=True)
                return 0
        want = min(len(mv), self.chunk_size)
        lim = self._limit()
        if lim is not None:
            want = min(want, lim - self._pos)
        data = self._cur.body.read(want)
        if not data:
            end = self._cur_end
            if end is not None and self._pos < end:
                raise _Transient(f"connection closed early: body ended at byte {self._pos} of {end}")
            self._drop(ok=True)
            if self._size is None and self._end is None:
                self._size = self._pos
            return 0
        n = len(data)
        if n > len(mv):  # a body that ignored amt; never expected
            raise _Fatal(f"read returned {n} bytes for a {len(mv)}-byte buffer")
        mv[:n] = data
        self._pos += n
        if self._cur_end is not None and self._pos >= self._cur_end:
            self._drop(ok=True)
        elif self._at_eof():
            self._drop(ok=False)  # window end inside a longer body
        return n

    def _probe(self) -> None:
        """Open (if not yet open) to learn the object's size."""
        if self._cur is None and not self._at_eof():
            self._open()

    def _with_retries(self, fn):
        transient = _transient_exceptions()
        failures = 0
        while True:
            try:
                return fn()
            except _Fatal as e:
                self._drop(ok=False)
                cls = RemoteNotFoundError if e.not_found else RemoteReadError
                raise cls(f"{self.url}: {e} (at byte offset {self._pos}"
                          f"{'' if self._size is None else f' of {self._size}'})",
                          url=self.url, offset=self._pos) from None
            except transient as e:
                self._drop(ok=False)
                failures += 1
                self.errors = (self.errors + [f"@{self._pos}: {type(e).__name__}: {e}"])[-5:]
                if failures > self.retries:
                    raise RemoteReadError(
                        f"{self.url}: giving up after {failures} failed attempts "
                        f"({self.retries} retries) at byte offset {self._pos}"
                        f"{'' if self._size is None else f' of {self._size}'}: "
                        f"{type(e).__name__}: {e}",
                        url=self.url, offset=self._pos) from e
                self.reconnects += 1
                delay = min(self.max_backoff, self.backoff * (2 ** (failures - 1)))
                if delay > 0:
                    time.sleep(delay * (1.0 + 0.25 * random.random()))


# --------------------------------------------------------------------------
# HTTP (urllib3)
# --------------------------------------------------------------------------

_pools: dict[int, object] = {}
_pools_lock = threading.Lock()


def _pool_manager():
    """One urllib3 PoolManager per process (fork-safe)."""
    import urllib3

    pid = os.getpid()
    with _pools_lock:
        pm = _pools.get(pid)
        if pm is None:
            pm = urllib3.PoolManager(num_pools=32, maxsize=16, block=False)
            _pools.clear()
            _pools[pid] = pm
        return pm


def _http_opener(url: str, timeout, chunk_size: int):
    import urllib3

    if isinstance(timeout, (tuple, list)):
        t = urllib3.Timeout(connect=timeout[0], read=timeout[1])
    else:
        t = urllib3.Timeout(connect=timeout, read=timeout)
    retry = urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=5,
                          raise_on_redirect=True, raise_on_status=False)
    pm = _pool_manager()
    state = {"etag": None}

    def opener(pos: int, end: int | None) -> _Opened:
        headers = {"Accept-Encoding": "identity", "User-Agent": "avshards-loader"}
        if pos > 0 or end is not None:
            headers["Range"] = _range_header(pos, end)
        resp = pm.request("GET", url, headers=headers, preload_content=False,
                          decode_content=False, retries=retry, timeout=t)

        def release(ok: bool, resp=resp) -> None:
            # reuse the connection only when the body was read to its end
            if ok and getattr(resp, "length_remaining", None) == 0:
                resp.release_conn()
            else:
                resp.close()
                resp.release_conn()

        status = resp.status
        etag = resp.headers.get("ETag")
        clen = resp.headers.get("Content-Length")
        length = int(clen) if clen and clen.isdigit() else None
        if status == 206:
            cr = _parse_content_range(resp.headers.get("Content-Range"))
            if cr is None:
                release(False)
                raise _Fatal(f"206 response without a valid Content-Range "
                             f"({resp.headers.get('Content-Range')!r})")
            start, end, total = cr
            return _Opened(resp, start, total, etag, length=end - start + 1, release=release)
        if status == 200:
            total = length
            if pos > 0:
                # The server ignored the Range header: skip what we already have.
                if state["etag"] and etag and etag != state["etag"]:
                    release(False)
                    raise _Fatal(f"object changed while reading (ETag {state['etag']} -> {etag})")
                skip = pos
                while skip > 0:
                    d = resp.read(min(skip, chunk_size), decode_content=False)
                    if not d:
                        release(False)
                        raise _Transient("body ended while skipping to the resume offset")
                    skip -= len(d)
                opened = _Opened(resp, pos, total, etag,
                                 length=None if length is None else length - pos, release=release)
                opened.skipped = pos
                return opened
            state["etag"] = etag
            return _Opened(resp, 0, total, etag, length=length, release=release)
        if status == 416:
            release(False)  # body unread: do not return the connection to the pool
            m = re.match(r"\s*bytes\s+\*/(\d+)", resp.headers.get("Content-Range") or "")
            raise _EOF(int(m.group(1)) if m else None)
        body = b""
        try:
            body = resp.read(2048, decode_content=False)
        except Exception:
            pass
        release(False)
        msg = f"HTTP {status} {resp.reason or ''}".strip()
        snippet = body[:200].decode("utf-8", "replace").strip()
        if snippet:
            msg += f": {snippet}"
        if status in (408, 425, 429) or status >= 500:
            raise _Transient(msg)
        raise _Fatal(msg, not_found=status in (404, 410))

    return opener


# --------------------------------------------------------------------------
# S3 (boto3)
# --------------------------------------------------------------------------

def _s3_opener(url: str, s3_options, timeout):
    from shardgen.storage import S3Options, parse_s3_url, shared_client

    bucket, key = parse_s3_url(url)
    opts = s3_options or S3Options.from_env()
    if timeout is not None:
        c, r = (timeout if isinstance(timeout, (tuple, list)) else (timeout, timeout))
        opts = opts.replace(connect_timeout=float(c), read_timeout=float(r))
    client = shared_client(opts)
    from botocore.exceptions import ClientError

    def opener(pos: int, end: int | None) -> _Opened:
        kw = {"Bucket": bucket, "Key": key}
        if pos > 0 or end is not None:
            kw["Range"] = _range_header(pos, end)
        try:
            r = client.get_object(**kw)
        except ClientError as e:
            err = e.response.get("Error", {}) or {}
            code = str(err.get("Code", ""))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if status == 416 or code == "InvalidRange":
                size = err.get("ActualObjectSize")
                raise _EOF(int(size) if size and str(size).isdigit() else None) from None
            if status in (404,) or code in ("NoSuchKey", "NoSuchBucket", "NotFound"):
                raise _Fatal(f"S3 {code or status}: {err.get('Message', 'not found')}",
                             not_found=True) from None
            if status >= 500 or status in (408, 429) or code in (
                    "SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable",
                    "Throttling", "ThrottlingException", "RequestTimeTooSkewed"):
                raise _Transient(f"S3 {code or status}: {err.get('Message', '')}") from None
            raise _Fatal(f"S3 {code or status}: {err.get('Message', '')}") from None
        body = r["Body"]
        etag = r.get("ETag")
        length = r.get("ContentLength")
        cr = _parse_content_range(r.get("ContentRange"))
        if cr is not None:
            start, end, total = cr
            length = end - start + 1
        elif pos > 0:
            # Range ignored: skip to pos
            skip = pos
            while skip > 0:
                d = body.read(min(skip, 1 << 20))
                if not d:
                    body.close()
                    raise _Transient("body ended while skipping to the resume offset")
                skip -= len(d)
            start, total = pos, (None if length is None else int(length))
            length = None if length is None else int(length) - pos
        else:
            start, total = 0, (None if length is None else int(length))

        def release(ok: bool, body=body) -> None:
            body.close()

        opened = _Opened(body, start, total, etag, length=length, release=release)
        if cr is None and pos > 0:
            opened.skipped = pos
        return opened

    return opener


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------

def is_remote(url: str) -> bool:
    return isinstance(url, str) and url.split("://", 1)[0].lower() in ("http", "https", "s3")


def _local_path(url: str) -> str:
    if url.startswith("file://"):
        u = urlparse(url)
        if u.netloc not in ("", "localhost"):
            raise ValueError(f"file:// URL with a remote host is not supported: {url!r}")
        return unquote(u.path)
    return url


def open_shard(url: str | os.PathLike, *, timeout=None, retries: int = 5, backoff: float = 0.5,
               s3_options=None, chunk_size: int = 1 << 20, max_backoff: float = 30.0,
               start: int = 0, end: int | None = None):
    """Open a shard for streaming reads.

    ``url``: ``http(s)://...``, ``s3://bucket/key``, ``file:///path`` or a path.
    ``timeout``: seconds, or ``(connect, read)``; ``None`` -> HTTP
    ``DEFAULT_HTTP_TIMEOUT``, S3 the ``S3Options`` timeouts.  ``retries``:
    consecutive failed attempts allowed without progress.  ``backoff``: first
    retry delay (doubles each consecutive failure, capped at ``max_backoff``).
    ``start``/``end``: read only bytes ``[start, end)`` (``end=None``: to the
    end of the object); remote requests then carry ``Range: bytes=start-end-1``
    and positions (``tell()``) stay absolute.  Local files are seeked to
    ``start`` (``end`` is not enforced for them: read ``end - start`` bytes).

    Returns a :class:`ResumableReader` for remote URLs (``.reconnects``,
    ``.requests``, ``.size``, ``.tell()``) or a regular binary file for local
    paths.  Use as a context manager.
    """
    s = os.fspath(url)
    scheme = s.split("://", 1)[0].lower() if "://" in s else ""
    if scheme in ("http", "https"):
        opener = _http_opener(s, DEFAULT_HTTP_TIMEOUT if timeout is None else timeout, chunk_size)
    elif scheme == "s3":
        opener = _s3_opener(s, s3_options, timeout)
    elif scheme in ("", "file"):
        f = open(_local_path(s), "rb")
        if start:
            f.seek(start)
        return f
    else:
        raise ValueError(f"unsupported shard URL scheme {scheme!r}: {s!r}")
    return ResumableReader(s, opener, retries=retries, backoff=backoff, max_backoff=max_backoff,
                           chunk_size=chunk_size, start=start, end=end)


def read_bytes(url: str | os.PathLike, **kwargs) -> bytes:
    """Whole object (manifests and other small files), with the same retries."""
    with open_shard(url, **kwargs) as f:
        return f.read()


# --------------------------------------------------------------------------
# local cache
# --------------------------------------------------------------------------

class CacheVerificationError(IOError):
    """A downloaded shard did not match its expected sha256 or size."""


class ShardCache:
    """Whole-shard cache in a local directory, LRU by access time.

    ``open(url, expected_sha256=None, expected_size=None)`` returns a local
    binary file.  A miss downloads through :func:`open_shard` into a temp file
    in the cache directory, hashing on the way, and renames it into place
    only if sha256 / size match (on mismatch nothing is kept and
    :class:`CacheVerificationError` is raised).  The content's sha256 is kept
    in a ``.sha256`` side file (with the size) so later hits are checked
    against ``expected_sha256`` without re-hashing; a cached file whose size
    no longer matches is re-hashed, and ``verify_on_hit=True`` re-hashes on
    every hit that has an ``expected_sha256`` (catches same-size corruption).  After each insert, least
    recently used files are removed until the total is ``<= max_bytes``; a
    file larger than ``max_bytes`` on its own is returned but not kept.
    Safe to share between processes (temp files, atomic renames, an flock
    around eviction).
    """

    SIDE = ".sha256"
    TMP = ".tmp-"

    def __init__(self, directory: str | os.PathLike, max_bytes: int, *,
                 verify_on_hit: bool = False, **open_kwargs):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self.verify_on_hit = verify_on_hit
        self.open_kwargs = open_kwargs  # passed to open_shard
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.downloaded_bytes = 0

    def path_for(self, url: str) -> Path:
        h = hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]
        base = re.sub(r"[^A-Za-z0-9._-]", "_", url.rstrip("/").rsplit("/", 1)[-1])[-80:]
        return self.dir / f"{h}-{base}" if base else self.dir / h

    def __contains__(self, url: str) -> bool:
        return self.path_for(url).exists()

    def entries(self) -> list[tuple[Path, os.stat_result]]:
        out = []
        with os.scandir(self.dir) as it:
            for e in it:
                n = e.name
                if n.startswith(".") or n.endswith(self.SIDE) or not e.is_file(follow_symlinks=False):
                    continue
                try:
                    out.append((Path(e.path), e.stat(follow_symlinks=False)))
                except FileNotFoundError:
                    continue
        return out

    def total_bytes(self) -> int:
        return sum(st.st_size for _, st in self.entries())

    @staticmethod
    def _touch(path: Path) -> None:
        st = path.stat()
        os.utime(path, ns=(time.time_ns(), st.st_mtime_ns))

    def _side(self, path: Path) -> Path:
        return path.with_name(path.name + self.SIDE)

    def _remove(self, path: Path) -> None:
        for p in (path, self._side(path)):
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    def _recorded_sha(self, path: Path, size: int, rehash: bool = False) -> str:
        """sha256 of a cached file: from its side file when that records the
        same size (unless ``rehash``), else computed and recorded."""
        if not rehash:
            try:
                parts = self._side(path).read_text().split()
                if len(parts) == 2 and len(parts[0]) == 64 and int(parts[1]) == size:
                    return parts[0]
            except (OSError, ValueError):
                pass
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        v = h.hexdigest()
        self._write_side(path, v, size)
        return v

    def _write_side(self, path: Path, digest: str, size: int) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=self.TMP)
        with os.fdopen(fd, "w") as f:
            f.write(f"{digest} {size}\n")
        os.replace(tmp, self._side(path))

    def evict(self, *, need: int = 0, keep: Path | None = None) -> None:
        """Remove least recently used files until total + need <= max_bytes."""
        lock = os.open(self.dir / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = self.entries()
            total = sum(st.st_size for _, st in entries)
            entries.sort(key=lambda e: e[1].st_atime_ns)
            for path, st in entries:
                if total + need <= self.max_bytes:
                    break
                if keep is not None and path == keep:
                    continue
                self._remove(path)
                total -= st.st_size
                self.evictions += 1
            # orphan side files
            for e in os.scandir(self.dir):
                if e.name.endswith(self.SIDE) and not e.name.startswith("."):
                    if not os.path.exists(e.path[: -len(self.SIDE)]):
                        try:
                            os.unlink(e.path)
                        except FileNotFoundError:
                            pass
        finally:
            os.close(lock)

    def open(self, url: str, expected_sha256: str | None = None,
             expected_size: int | None = None) -> BinaryIO:
        path = self.path_for(url)
        exp = expected_sha256.lower() if expected_sha256 else None
        try:
            st = path.stat()
        except FileNotFoundError:
            st = None
        if st is not None:
            ok = expected_size is None or st.st_size == expected_size
            if ok and exp is not None:
                ok = self._recorded_sha(path, st.st_size, rehash=self.verify_on_hit) == exp
            if ok:
                try:
                    f = open(path, "rb")
                    self._touch(path)
                    self.hits += 1
                    return f
                except FileNotFoundError:  # evicted by another process meanwhile
                    pass
            else:
                self._remove(path)
        return self._download(url, path, exp, expected_size)

    def fetch(self, url: str, expected_sha256: str | None = None,
              expected_size: int | None = None) -> Path:
        """Like :meth:`open` but returns the cached path (may be evicted later)."""
        with self.open(url, expected_sha256, expected_size):
            pass
        return self.path_for(url)

    def _download(self, url: str, path: Path, exp: str | None, expected_size: int | None) -> BinaryIO:
        self.misses += 1
        if expected_size:
            self.evict(need=expected_size)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=self.TMP)
        h = hashlib.sha256()
        n = 0
        try:
            with os.fdopen(fd, "wb") as dst, open_shard(url, **self.open_kwargs) as src:
                chunk = int(self.open_kwargs.get("chunk_size", 1 << 20))
                while True:
                    data = src.read(chunk)
                    if not data:
                        break
                    h.update(data)
                    dst.write(data)
                    n += len(data)
            digest = h.hexdigest()
            if expected_size is not None and n != expected_size:
                raise CacheVerificationError(
                    f"size mismatch for {url}: expected {expected_size} bytes, got {n}; "
                    f"download discarded")
            if exp is not None and digest != exp:
                raise CacheVerificationError(
                    f"sha256 mismatch for {url}: expected {exp}, got {digest}; download discarded")
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        self.downloaded_bytes += n
        self._write_side(path, digest, n)
        f = open(path, "rb")
        self._touch(path)
        self.evict(keep=path)
        if n > self.max_bytes:
            self._remove(path)  # too large to keep: the open handle stays readable
        return f

"""A remote object as a resumable byte stream: the retry core every HTTP and S3 read goes through.

:class:`ResumableReader` is an :class:`io.RawIOBase` over an *opener* — a backend's function
``opener(pos, end) -> Opened`` that issues one ranged request. Memory is bounded: the body is
read in ``chunk_size`` pieces, never downloaded whole.

If the connection drops or times out mid-body (connection reset, ``IncompleteRead``, read
timeout, a body shorter than its ``Content-Length``), the reader reopens the object from the byte
it had reached (``Range: bytes=<pos>-``), so no bytes are duplicated or lost and nothing restarts
from zero. The :class:`~.options.RetryPolicy` bounds the number of *consecutive* failed attempts
without progress (any byte received resets the count); when they are exhausted
:class:`~.errors.RemoteReadError` names the URL and byte offset. If the object's ETag or size
changes between two requests the read fails rather than splice two versions together.

Backends signal through three exceptions: :class:`Transient` (retry), :class:`Fatal` (give up;
``not_found`` for a missing object) and :class:`PastEnd` (a range starting at the object's end).
"""

from __future__ import annotations

import http.client
import io
import os
import re
import socket
from typing import Callable

import urllib3.exceptions

from .errors import RemoteNotFoundError, RemoteReadError
from .options import RetryPolicy


class Transient(Exception):
    """A retryable condition a backend detected (5xx, throttling, a short body ...)."""


class Fatal(Exception):
    """Not retryable (4xx, object changed ...); ``not_found`` for a missing object."""

    def __init__(self, message: str, not_found: bool = False):
        super().__init__(message)
        self.not_found = not_found


class PastEnd(Exception):
    """The requested start is at or after the end of the object (HTTP 416)."""

    def __init__(self, total: int | None = None):
        super().__init__(total)
        self.total = total


TRANSIENT_ERRORS: tuple[type, ...] = (
    Transient, ConnectionError, TimeoutError, socket.timeout, http.client.IncompleteRead,
    http.client.RemoteDisconnected, http.client.BadStatusLine, urllib3.exceptions.ProtocolError,
    urllib3.exceptions.TimeoutError, urllib3.exceptions.IncompleteRead, urllib3.exceptions.MaxRetryError,
    urllib3.exceptions.NewConnectionError, urllib3.exceptions.SSLError,
)


def with_retries(policy: RetryPolicy, fn: Callable, *, url: str, transient: tuple[type, ...] = TRANSIENT_ERRORS,
                 at: Callable[[], str] | None = None, offset: Callable[[], int | None] = lambda: None,
                 on_failure: Callable[[], None] | None = None, on_retry: Callable[[Exception], None] | None = None):
    """Call ``fn()`` until it succeeds, retrying ``transient`` errors as ``policy`` allows.

    A :class:`Fatal`, or a transient error once the retries are spent, becomes a
    :class:`~.errors.RemoteReadError` (:class:`~.errors.RemoteNotFoundError` for a missing object)
    naming ``url`` and, through ``at()``, where in it. ``on_failure`` runs after every failure
    (a reader drops its connection), ``on_retry`` before every wait. The one retry loop: every
    ranged read and every size probe of HTTP and S3 objects goes through it.
    """
    failures = 0
    while True:
        try:
            return fn()
        except Fatal as e:
            if on_failure is not None:
                on_failure()
            cls = RemoteNotFoundError if e.not_found else RemoteReadError
            raise cls(f"{url}: {e}" + (f" (at {at()})" if at else ""), url=url, offset=offset()) from None
        except transient as e:
            if on_failure is not None:
                on_failure()
            failures += 1
            if failures > policy.retries:
                raise RemoteReadError(
                    f"{url}: giving up after {failures} failed attempts ({policy.retries} retries)"
                    + (f" at {at()}" if at else "") + f": {type(e).__name__}: {e}", url=url, offset=offset()) from e
            if on_retry is not None:
                on_retry(e)
            policy.wait(failures)


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """'bytes 10-99/100' -> (10, 99, 100); total '*' -> None."""
    if not value:
        return None
    m = re.match(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", value)
    if not m:
        return None
    total = None if m.group(3) == "*" else int(m.group(3))
    return int(m.group(1)), int(m.group(2)), total


def range_header(pos: int, end: int | None) -> str:
    return f"bytes={pos}-" if end is None else f"bytes={pos}-{end - 1}"


class Opened:
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

    def __init__(self, url: str, opener: Callable[[int, int | None], Opened], *, policy: RetryPolicy = RetryPolicy(),
                 transient: tuple[type, ...] = TRANSIENT_ERRORS, chunk_size: int = 1 << 20, seekable: bool = True,
                 start: int = 0, end: int | None = None):
        super().__init__()
        self.url = url
        self._opener = opener
        self.policy = policy
        self._transient = transient
        self.chunk_size = int(chunk_size)
        self._seekable = seekable
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"invalid byte window start={start} end={end}")
        self._pos = int(start)
        self._end = None if end is None else int(end)  # exclusive; None = object end
        self._size: int | None = None
        self._etag: str | None = None
        self._cur: Opened | None = None
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
        except PastEnd as e:
            if e.total is not None and self._size is None:
                self._size = e.total
            self._eof_at = self._pos
            return
        if op.start != self._pos:
            self._release(op)
            raise Fatal(f"server returned bytes from {op.start}, asked for {self._pos}")
        if self._etag and op.etag and op.etag != self._etag:
            self._release(op)
            raise Fatal(f"object changed while reading (ETag {self._etag} -> {op.etag})")
        if self._size is not None and op.total is not None and op.total != self._size:
            self._release(op)
            raise Fatal(f"object changed while reading (size {self._size} -> {op.total})")
        self._etag = self._etag or op.etag
        self.bytes_skipped += op.skipped
        if op.total is not None:
            self._size = op.total
        self._cur = op
        self._cur_end = op.start + op.length if op.length is not None else self._size

    @staticmethod
    def _release(op: Opened, ok: bool = False) -> None:
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
                raise Transient(f"connection closed early: body ended at byte {self._pos} of {end}")
            self._drop(ok=True)
            if self._size is None and self._end is None:
                self._size = self._pos
            return 0
        n = len(data)
        if n > len(mv):  # a body that ignored amt; never expected
            raise Fatal(f"read returned {n} bytes for a {len(mv)}-byte buffer")
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
        return with_retries(self.policy, fn, url=self.url, transient=self._transient, at=self._where,
                            offset=lambda: self._pos, on_failure=lambda: self._drop(ok=False), on_retry=self._note_retry)

    def _where(self) -> str:
        return f"byte offset {self._pos}" + ("" if self._size is None else f" of {self._size}")

    def _note_retry(self, exc: Exception) -> None:
        self.reconnects += 1
        self.errors = (self.errors + [f"@{self._pos}: {type(exc).__name__}: {exc}"])[-5:]


def discard(read: Callable[[int], bytes], n: int, chunk_size: int = 1 << 20) -> int:
    """Read and drop ``n`` bytes through ``read``; returns how many there were (fewer at the end)."""
    done = 0
    while done < n:
        data = read(min(n - done, chunk_size))
        if not data:
            break
        done += len(data)
    return done


def skip_body(read: Callable[[int], bytes], n: int, chunk_size: int = 1 << 20) -> None:
    """Discard ``n`` bytes of a body whose server ignored our ``Range`` (raises Transient if it ends first)."""
    if discard(read, n, chunk_size) < n:
        raise Transient("body ended while skipping to the resume offset")


class Window(io.RawIOBase):
    """Read at most ``length`` bytes of an underlying stream (and close it when closed).

    ``local``: the stream is a file on this machine, where a skip is a seek. A remote stream
    (whose seek would drop the connection and open a new ranged request) skips by reading.
    """

    def __init__(self, raw, length: int, *, local: bool = False):
        self._raw, self._left, self._local = raw, length, local

    def readable(self):
        return True

    def read(self, n=-1):
        if self._left <= 0:
            return b""
        n = self._left if n is None or n < 0 else min(n, self._left)
        b = self._raw.read(n)
        self._left -= len(b)
        return b

    def skip(self, n: int) -> int:
        """Pass over ``n`` bytes of the window: a seek on a local file, else read and discard."""
        if not self._local:
            return discard(self.read, n)
        n = min(n, self._left)
        self._raw.seek(n, io.SEEK_CUR)
        self._left -= n
        return n

    def close(self):
        try:
            self._raw.close()
        finally:
            super().close()


class SparseWindow(Window):
    """A :class:`Window` over an unbuffered local file for a read that skips most of its range (a face
    track's members out of a clip): a skip is a seek, and :meth:`pread` reads at an offset without
    moving — what :func:`shardgen.core.clip_reader.read_selected` walks a clip's headers with."""

    def __init__(self, raw, length: int):
        super().__init__(raw, length, local=True)
        self._start, self._length = raw.tell(), length  # the window's place in the file

    def pread(self, n: int, at: int) -> bytes:
        """Up to ``n`` bytes at file offset ``at``, within the window; the stream's position is unchanged."""
        end = self._start + self._length
        if not self._start <= at <= end:
            raise ValueError(f"offset {at} outside the window [{self._start}, {end})")
        return os.pread(self._raw.fileno(), max(0, min(n, end - at)), at)

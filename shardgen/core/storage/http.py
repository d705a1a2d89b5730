"""``http(s)://`` objects, read-only: ranged GETs through urllib3, resumed by :class:`.stream.ResumableReader`.

A server that ignores ``Range`` (``python -m http.server`` does) still works — the reader skips the
bytes before the offset it asked for — but every such read costs the object from byte 0, so the
first one per host raises a :class:`RangeIgnoredWarning` saying so. Error responses are summarised
(status, reason, an HTML page's title), never dumped.
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from urllib.parse import urlsplit

import urllib3

from .base import Store
from .options import DEFAULT_HTTP_TIMEOUT, TransportOptions
from .stream import Fatal, Opened, PastEnd, ResumableReader, Transient, parse_content_range, range_header, skip_body, with_retries

_pools: dict[int, urllib3.PoolManager] = {}
_pools_lock = threading.Lock()
_NO_URLLIB3_RETRIES = urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=5,
                                    raise_on_redirect=True, raise_on_status=False)  # our RetryPolicy retries


def _pool_manager() -> urllib3.PoolManager:
    """One urllib3 PoolManager per process (fork-safe: DataLoader workers get their own)."""
    pid = os.getpid()
    with _pools_lock:
        pm = _pools.get(pid)
        if pm is None:
            pm = urllib3.PoolManager(num_pools=32, maxsize=16, block=False)
            _pools.clear()
            _pools[pid] = pm
        return pm


class RangeIgnoredWarning(UserWarning):
    """An HTTP server answered a ranged GET with the whole object (200): ranged reads cost it from byte 0."""


_range_warned: set[str] = set()  # hosts already warned about, in this process


def _warn_range_ignored(url: str, pos: int, end: int | None) -> None:
    host = urlsplit(url).netloc
    if host in _range_warned:
        return
    _range_warned.add(host)
    asked = f"bytes {pos}-{'' if end is None else end - 1}"
    warnings.warn(f"{host} ignores HTTP Range requests (asked for {asked} of {url}, it sent the whole object): every "
                  "ranged read downloads its object from byte 0 and discards what lies before the offset, so reading a "
                  "clip at byte N costs N extra bytes and a shard's last clip costs the whole shard. Serve the build "
                  "with a server that honours Range (nginx, Caddy, any S3-compatible store; python -m http.server "
                  "does not)", RangeIgnoredWarning, stacklevel=3)


def summarise_body(body: bytes, content_type: str = "") -> str:
    """An error response's body in a few words: an HTML page's title (or its text without tags), whitespace
    collapsed, at most 120 characters — a server's error page is not a message."""
    text = body.decode("utf-8", "replace")
    if "html" in content_type.lower() or text.lstrip()[:15].lower().startswith(("<!doctype", "<html", "<head")):
        m = re.search(r"<title[^>]*>(.*?)</title>", text, re.I | re.S)
        text = m.group(1) if m else re.sub(r"<[^>]+>", " ", text)
    text = " ".join(text.split())
    return text if len(text) <= 120 else text[:119] + "…"


def _status_error(resp, status: int) -> Exception:
    """A non-2xx response → Transient (408/425/429/5xx) or Fatal (not_found for 404/410), with the body summarised."""
    body = b""
    try:
        body = resp.read(2048, decode_content=False)
    except Exception:
        pass
    reason = (resp.reason or "").strip()
    msg = f"HTTP {status} {reason}".strip()
    summary = summarise_body(body, resp.headers.get("Content-Type", "") if resp.headers else "")
    if summary and (not reason or reason.lower() not in summary.lower()):  # nginx's "404 Not Found" page adds nothing
        msg += f" (server: {summary})"
    if status in (408, 425, 429) or status >= 500:
        return Transient(msg)
    return Fatal(msg, not_found=status in (404, 410))


class HttpStore(Store):
    """A read-only store under an ``http(s)://`` prefix."""

    def __init__(self, base_url: str, options: TransportOptions | None = None) -> None:
        super().__init__(options)
        self.base_url = base_url.rstrip("/")
        connect, read = self.options.timeouts(DEFAULT_HTTP_TIMEOUT)
        self._timeout = urllib3.Timeout(connect=connect, read=read)

    def __repr__(self) -> str:
        return f"HttpStore({self.base_url!r})"

    def url(self, name):
        return f"{self.base_url}/{self.clean(name)}"

    def open_range(self, name, start=0, end=None, *, sparse=False):
        url = self.url(name)
        return ResumableReader(url, self._opener(url), policy=self.options.retry, chunk_size=self.options.chunk_size,
                               start=start, end=end)

    def size(self, name):
        url = self.url(name)

        def head() -> int | None:
            resp = _pool_manager().request("HEAD", url, headers={"Accept-Encoding": "identity"}, retries=_NO_URLLIB3_RETRIES,
                                           timeout=self._timeout, preload_content=False)
            try:
                if resp.status in (404, 410):
                    return None
                if resp.status != 200:
                    raise _status_error(resp, resp.status)
                clen = resp.headers.get("Content-Length")
                if not (clen and clen.isdigit()):
                    raise Fatal("HEAD response without a Content-Length")
                return int(clen)
            finally:
                resp.release_conn()

        return with_retries(self.options.retry, head, url=url)

    def _opener(self, url: str):
        pm, chunk_size, timeout = _pool_manager(), self.options.chunk_size, self._timeout
        state = {"etag": None}

        def opener(pos: int, end: int | None) -> Opened:
            headers = {"Accept-Encoding": "identity", "User-Agent": "avshards"}
            if pos > 0 or end is not None:
                headers["Range"] = range_header(pos, end)
            resp = pm.request("GET", url, headers=headers, preload_content=False, decode_content=False,
                              retries=_NO_URLLIB3_RETRIES, timeout=timeout)

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
                cr = parse_content_range(resp.headers.get("Content-Range"))
                if cr is None:
                    release(False)
                    raise Fatal(f"206 response without a valid Content-Range ({resp.headers.get('Content-Range')!r})")
                first, last, total = cr
                return Opened(resp, first, total, etag, length=last - first + 1, release=release)
            if status == 200:
                if pos == 0:
                    if end is not None and length is not None and length > end:
                        _warn_range_ignored(url, pos, end)  # asked for a head, got the whole object
                    state["etag"] = etag
                    return Opened(resp, 0, length, etag, length=length, release=release)
                # The server ignored the Range header: skip what we already have.
                _warn_range_ignored(url, pos, end)
                if state["etag"] and etag and etag != state["etag"]:
                    release(False)
                    raise Fatal(f"object changed while reading (ETag {state['etag']} -> {etag})")
                try:
                    skip_body(lambda n: resp.read(n, decode_content=False), pos, chunk_size)
                except Transient:
                    release(False)
                    raise
                opened = Opened(resp, pos, length, etag, length=None if length is None else length - pos, release=release)
                opened.skipped = pos
                return opened
            if status == 416:
                release(False)  # body unread: do not return the connection to the pool
                m = re.match(r"\s*bytes\s+\*/(\d+)", resp.headers.get("Content-Range") or "")
                raise PastEnd(int(m.group(1)) if m else None)
            err = _status_error(resp, status)
            release(False)
            raise err

        return opener

"""``shardgen view``: a local web server over a build — browse its clips, watch one with its labels.

The web stack is the standard library's threaded HTTP server: the viewer has a dozen routes, no
sessions, no forms beyond a search box, and binds to loopback for one person, so a framework would
add a dependency (and its updates) to every install of avshards for nothing the viewer uses. What
the stdlib does not give is written here once: routing by pattern, byte ranges (the audio element
seeks with them), and the refusals below.

Safety: nothing is served from a file path. Every URL names a split, a video or a clip key that is
looked up in the build's clip index, or one of the viewer's own static files by exact name; so a
path trick (``..``, encoded slashes, backslashes, absolute paths) finds nothing and gets a 404.
Only GET and HEAD are answered. On a loopback address the ``Host`` header must name that address
(a web page elsewhere cannot reach the viewer by rebinding a DNS name to 127.0.0.1). The server
reads the build and writes nothing anywhere.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, unquote, urlsplit

from shardgen.core.format import FormatError, parse_clip_key
from shardgen.core.storage import TransportOptions

from . import media, pages
from .catalog import Catalog, Split, open_catalog
from .clips import DEFAULT_BUDGET, ClipStore, ClipUnreadable
from .summary import FILTERS, Summaries, scan

STATIC = {"player.js": "text/javascript; charset=utf-8", "view.css": "text/css; charset=utf-8"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; media-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_KEY = r"(?P<key>[^/]+/clip_f\d+)"
ROUTES = [
    ("home", re.compile(r"/")),
    ("static", re.compile(r"/static/(?P<name>[a-z]+\.(?:js|css))")),
    ("search", re.compile(r"/search")),
    ("split", re.compile(r"/split/(?P<split>[^/]+)")),
    ("video", re.compile(r"/split/(?P<split>[^/]+)/video/(?P<video>[^/]+)")),
    ("find", re.compile(r"/split/(?P<split>[^/]+)/find")),
    ("clip", re.compile(rf"/clip/{_KEY}")),
    ("audio", re.compile(rf"/media/{_KEY}/audio")),
    ("frame", re.compile(rf"/media/{_KEY}/(?P<kind>frame|gray)/(?P<i>\d{{1,7}})\.jpg")),
    ("crop", re.compile(rf"/media/{_KEY}/crop/(?P<person>\d{{1,3}})/(?P<i>\d{{1,7}})\.jpg")),
]


class NotFound(Exception):
    """Answered with a 404 page naming what was not found."""


class Viewer:
    """The viewer's state behind every request: the catalog, the summaries made so far, the clips held."""

    def __init__(self, catalog: Catalog, *, clip_budget: int = DEFAULT_BUDGET):
        self.catalog = catalog
        self.summaries = Summaries(catalog.options)
        self.clips = ClipStore(catalog.options, clip_budget)

    def split(self, name: str) -> Split:
        split = self.catalog.splits.get(name)
        if split is None:
            raise NotFound(f"no split {name!r} in this build")
        return split

    def clip_row(self, key: str) -> tuple[Split, int]:
        try:
            parse_clip_key(key)
        except FormatError:
            raise NotFound(f"{key!r} is not a clip key (<video_id>/clip_fNNNNNN)") from None
        found = self.catalog.locate(key)
        if found is None:
            raise NotFound(f"no clip {key} in this build")
        return found


class Handler(BaseHTTPRequestHandler):
    """One request: route it, answer it, never let an error escape unanswered."""

    server_version = "avshards-view"
    protocol_version = "HTTP/1.1"
    viewer: Viewer  # set on the subclass made by make_server
    allowed_hosts: frozenset[str] | None = None
    quiet = True
    _head = False  # answering a HEAD request: headers only

    # ---------------------------------------------------------------- plumbing
    def do_GET(self):
        self._answer(head=False)

    def do_HEAD(self):
        self._answer(head=True)

    def _not_allowed(self):
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"only GET and HEAD\n", "text/plain; charset=utf-8",
                   extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def log_message(self, format, *args):  # noqa: A002 (the stdlib's name)
        if not self.quiet:
            super().log_message(format, *args)

    def _answer(self, head: bool) -> None:
        self._head = head
        try:
            if self.allowed_hosts is not None and self.headers.get("Host", "") not in self.allowed_hosts:
                self._send(HTTPStatus.MISDIRECTED_REQUEST, b"unknown Host\n", "text/plain; charset=utf-8")
                return
            route, match, query = self._route()
            getattr(self, f"_get_{route}")(match, query)
        except NotFound as exc:
            self._html(HTTPStatus.NOT_FOUND, pages.not_found(self.viewer.catalog, str(exc)))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away (a seek cancels the audio request it had open)
        except Exception as exc:  # a bug or an unreadable remote: say so, keep serving
            print(f"shardgen view: {self.path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            try:
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}\n".encode(),
                           "text/plain; charset=utf-8")
            except OSError:
                pass

    def _route(self):
        """(route name, match, query) for the request's path; a NotFound for anything else."""
        raw = urlsplit(self.path)
        try:
            path = unquote(raw.path, errors="strict")
        except UnicodeDecodeError:
            raise NotFound("no such page") from None
        # nothing names a file, but refuse the shapes of a path trick outright (and so say it in one place)
        if "\\" in path or "\x00" in path or "//" in path or any(p in (".", "..") for p in path.split("/")):
            raise NotFound("no such page")
        for name, pattern in ROUTES:
            m = pattern.fullmatch(path)
            if m:
                return name, m, parse_qs(raw.query, max_num_fields=10)
        raise NotFound("no such page")

    def _send(self, status, body: bytes, ctype: str, *, extra: dict | None = None, cache: str = "no-cache") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if ctype.startswith("text/html"):
            self.send_header("Content-Security-Policy", CSP)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not self._head:
            self.wfile.write(body)

    def _html(self, status, text: str) -> None:
        self._send(status, text.encode(), "text/html; charset=utf-8")

    def _bytes(self, data: bytes, ctype: str) -> None:
        """A member's bytes, whole or one ``Range: bytes=`` range of them (206), as media elements ask."""
        size = len(data)
        extra = {"Accept-Ranges": "bytes"}
        spec = self.headers.get("Range")
        if spec is None:
            self._send(HTTPStatus.OK, data, ctype, extra=extra, cache="private, max-age=300")
            return
        span = byte_range(spec, size)
        if span is None:
            self._send(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, b"", ctype,
                       extra={**extra, "Content-Range": f"bytes */{size}"})
            return
        a, b = span
        self._send(HTTPStatus.PARTIAL_CONTENT, data[a:b], ctype, cache="private, max-age=300",
                   extra={**extra, "Content-Range": f"bytes {a}-{b - 1}/{size}"})

    # ---------------------------------------------------------------- pages
    def _get_home(self, m, q):
        self._html(HTTPStatus.OK, pages.home(self.viewer.catalog))

    def _get_static(self, m, q):
        name = m["name"]
        if name not in STATIC:
            raise NotFound(f"no static file {name}")
        data = resources.files(__package__).joinpath("static", name).read_bytes()
        self._send(HTTPStatus.OK, data, STATIC[name])

    def _get_split(self, m, q):
        split = self.viewer.split(m["split"])
        self._html(HTTPStatus.OK, pages.split_page(self.viewer.catalog, split))

    def _get_video(self, m, q):
        split = self.viewer.split(m["split"])
        rows = split.index.clips.video_rows(m["video"])
        video = next((v for v in split.videos() if v.video_id == m["video"]), None)
        if video is None:
            raise NotFound(f"no video {m['video']!r} in split {split.name}")
        summaries = list(zip(rows.tolist(), self.viewer.summaries.get(split, rows)))
        self._html(HTTPStatus.OK, pages.video_page(self.viewer.catalog, split, video, summaries))

    def _get_find(self, m, q):
        split = self.viewer.split(m["split"])
        flag = (q.get("flag") or [""])[0]
        if flag not in FILTERS:
            raise NotFound(f"no filter {flag!r}; filters: {', '.join(FILTERS)}")
        start = (q.get("from") or ["0"])[0]
        if not start.isdigit():
            raise NotFound(f"'from' must be a clip number, not {start!r}")
        result = scan(self.viewer.summaries, split, flag, int(start))
        self._html(HTTPStatus.OK, pages.find_page(self.viewer.catalog, split, flag, result))

    def _get_search(self, m, q):
        text = (q.get("q") or [""])[0].strip()
        found = self.viewer.catalog.locate(text) if text else None
        if found is not None:
            self._send(HTTPStatus.FOUND, b"", "text/plain", extra={"Location": pages.clip_href(text)})
            return
        clips = []
        if "/" in text:  # a key's beginning: the clips of that video whose key starts with it
            video = text.split("/", 1)[0]
            for split in self.viewer.catalog.splits.values():
                rows = split.index.clips.video_rows(video)
                clips += [k for k in (split.index.clips.key(int(r)) for r in rows[:1000]) if k.startswith(text)]
        videos = self.viewer.catalog.search(text) if text else []
        self._html(HTTPStatus.OK, pages.search_page(self.viewer.catalog, text, clips[:200], videos))

    def _get_clip(self, m, q):
        split, row = self.viewer.clip_row(m["key"])
        try:
            sample = self.viewer.clips.get(split, row)
        except ClipUnreadable as exc:
            self._html(HTTPStatus.INTERNAL_SERVER_ERROR, pages.clip_error_page(self.viewer.catalog, split, row, str(exc)))
            return
        self._html(HTTPStatus.OK, pages.clip_page(self.viewer.catalog, split, row, sample))

    # ---------------------------------------------------------------- media
    def _sample(self, key: str):
        split, row = self.viewer.clip_row(key)
        try:
            return self.viewer.clips.get(split, row)
        except ClipUnreadable as exc:
            raise NotFound(str(exc)) from None

    def _get_audio(self, m, q):
        data, ctype = media.audio(self._sample(m["key"]))
        self._bytes(data, ctype)

    def _get_frame(self, m, q):
        sample = self._sample(m["key"])
        i = int(m["i"])
        data = media.picture(sample, i) if m["kind"] == "frame" else media.gray(sample, i)
        if data is None:
            raise NotFound(f"clip {m['key']} has no {m['kind']} {i}")
        self._bytes(data, "image/jpeg")

    def _get_crop(self, m, q):
        sample = self._sample(m["key"])
        data = media.crop(sample, int(m["person"]), int(m["i"]))
        if data is None:
            raise NotFound(f"clip {m['key']} has no crop of person row {m['person']} at frame {m['i']}")
        self._bytes(data, "image/jpeg")


def byte_range(spec: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` → ``[start, end)`` within ``size``; None when unsatisfiable.
    Several ranges are not offered (no media element asks for them): only the first is answered."""
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*(?:,.*)?", spec)
    if not m or (m[1] == "" and m[2] == ""):
        return None
    if m[1] == "":  # the last n bytes
        n = int(m[2])
        return (max(0, size - n), size) if n > 0 and size > 0 else None
    start = int(m[1])
    end = size if m[2] == "" else min(size, int(m[2]) + 1)
    return (start, end) if start < end else None


def _allowed_hosts(host: str, port: int) -> frozenset[str] | None:
    """The Host headers a loopback server answers (None: bound to a real interface, where names vary)."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        return None
    names = {host, "localhost", "127.0.0.1", "[::1]"}
    return frozenset(f"{n}:{port}" for n in names) | frozenset(names if port == 80 else ())


class ViewerHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        """A browser dropping a kept-alive connection is routine, not an error worth a traceback."""
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError, TimeoutError)):
            super().handle_error(request, client_address)


class ViewerHTTPServer6(ViewerHTTPServer):
    address_family = socket.AF_INET6  # --host ::1 and other IPv6 addresses


def make_server(source, host: str = "127.0.0.1", port: int = 8000, *, options: TransportOptions | dict | None = None,
                verbose: bool = False, clip_budget: int = DEFAULT_BUDGET) -> ThreadingHTTPServer:
    """A server over ``source`` bound to ``host:port`` (port 0: any free port), not yet serving."""
    viewer = Viewer(open_catalog(source, options), clip_budget=clip_budget)
    handler = type("ViewerHandler", (Handler,), {"viewer": viewer, "quiet": not verbose})
    server_class = ViewerHTTPServer if ":" not in host else ViewerHTTPServer6
    server = server_class((host, port), handler)
    handler.allowed_hosts = _allowed_hosts(host, server.server_address[1])
    server.viewer = viewer
    return server


def server_url(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def serve(source, host: str = "127.0.0.1", port: int = 8000, *, options: TransportOptions | dict | None = None,
          verbose: bool = False, ready=None) -> None:
    """Serve until interrupted; ``ready(url)`` is called once the socket is listening."""
    server = make_server(source, host, port, options=options, verbose=verbose)
    try:
        (ready or (lambda url: None))(server_url(server))
        server.serve_forever()
    finally:
        server.server_close()
        server.viewer.summaries.close()


class BackgroundServer:
    """A viewer served from a thread (tests, notebooks): ``with BackgroundServer(source) as url: ...``."""

    def __init__(self, source, host: str = "127.0.0.1", port: int = 0, **kw):
        self.server = make_server(source, host, port, **kw)
        self.url = server_url(self.server)
        self._thread = threading.Thread(target=self.server.serve_forever, name="shardgen-view", daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.server.viewer.summaries.close()
        self._thread.join(timeout=10)

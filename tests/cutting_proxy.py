"""``cutting_proxy``: a threaded TCP proxy that cuts, resets or stalls responses, to test resumption."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

import pytest

from tests.service_procs import HOST


# --------------------------------------------------------------------------
# cutting proxy
# --------------------------------------------------------------------------

class CuttingProxy:
    """Threaded TCP proxy on 127.0.0.1 that interrupts responses.

    Each client connection is cut once ``cut_every`` bytes of response body
    (bytes after the first ``\\r\\n\\r\\n`` of the response stream) have been
    forwarded on it, so a client that resumes with a new connection is cut
    again every ``cut_every`` bytes.  ``max_cuts`` bounds the total number of
    cuts (then it is a plain proxy); ``refuse_after=k`` closes every
    connection after the first k right after accept; ``mode`` is 'close'
    (FIN), 'reset' (RST) or 'stall' (stop forwarding, keep the socket open
    until ``stall_seconds`` pass or the proxy stops).
    """

    def __init__(self, target_port: int, *, cut_every: int | None, target_host: str = HOST,
                 mode: str = "close", max_cuts: int | None = None, refuse_after: int | None = None,
                 stall_seconds: float = 30.0) -> None:
        assert mode in ("close", "reset", "stall")
        self.target = (target_host, target_port)
        self.cut_every = cut_every
        self.mode = mode
        self.max_cuts = max_cuts
        self.refuse_after = refuse_after
        self.stall_seconds = stall_seconds
        self.cuts = 0
        self.connections = 0
        self.refused = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._socks: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind((HOST, 0))
        self._lsock.listen(64)
        self._lsock.settimeout(0.2)
        self.port = self._lsock.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, name=f"cutproxy-{self.port}", daemon=True)
        t.start()
        self._threads.append(t)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._socks.add(s)

    def _close(self, s: socket.socket, rst: bool = False) -> None:
        # close() alone does not release a socket that another thread is blocked
        # in recv() on, so wake that thread with shutdown() first.  For an RST
        # only shut the read side (SO_LINGER 0 then turns the close into RST).
        with contextlib.suppress(OSError):
            if rst:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.shutdown(socket.SHUT_RD)
            else:
                s.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            s.close()
        with self._lock:
            self._socks.discard(s)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                n = self.connections
            if self.refuse_after is not None and n > self.refuse_after:
                with self._lock:
                    self.refused += 1
                self._close(client, rst=True)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                self._close(client)
                continue
            for s in (client, upstream):
                s.settimeout(None)
                self._track(s)
            t1 = threading.Thread(target=self._pump_up, args=(client, upstream), daemon=True)
            t2 = threading.Thread(target=self._pump_down, args=(upstream, client), daemon=True)
            t1.start()
            t2.start()
            self._threads += [t1, t2]

    def _pump_up(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                data = client.recv(65536)
                if not data:
                    break
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_WR)

    def _should_cut(self) -> bool:
        with self._lock:
            if self.cut_every is None or (self.max_cuts is not None and self.cuts >= self.max_cuts):
                return False
            self.cuts += 1
            return True

    def _pump_down(self, upstream: socket.socket, client: socket.socket) -> None:
        head = b""
        in_body = False
        body = 0
        limit = self.cut_every
        try:
            while not self._stop.is_set():
                data = upstream.recv(65536)
                if not data:
                    break
                if not in_body:
                    head += data
                    i = head.find(b"\r\n\r\n")
                    if i < 0:
                        client.sendall(data)
                        continue
                    in_body = True
                    hdr_len_in_data = len(data) - (len(head) - (i + 4))
                    client.sendall(data[:hdr_len_in_data])
                    data = data[hdr_len_in_data:]
                    head = b""
                if limit is not None and body + len(data) >= limit and data:
                    if self._should_cut():
                        keep = max(0, limit - body)
                        if keep:
                            client.sendall(data[:keep])
                        if self.mode == "stall":
                            self._stop.wait(self.stall_seconds)
                        self._close(client, rst=self.mode == "reset")
                        self._close(upstream)
                        return
                    limit = None  # cuts exhausted: plain proxy from now on
                body += len(data)
                client.sendall(data)
        except OSError:
            pass
        finally:
            self._close(client)
            self._close(upstream)

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._lsock.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            self._close(s)
        for t in self._threads:
            t.join(timeout=2)


@pytest.fixture(scope="session")
def cutting_proxy():
    """Factory: ``cutting_proxy(port, cut_every=N, ...)`` -> :class:`CuttingProxy`."""
    proxies: list[CuttingProxy] = []

    def start(target_port: int, **kw) -> CuttingProxy:
        kw.setdefault("cut_every", 256 * 1024)
        p = CuttingProxy(target_port, **kw)
        proxies.append(p)
        return p

    try:
        yield start
    finally:
        for p in proxies:
            p.stop()

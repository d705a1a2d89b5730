"""Real servers on 127.0.0.1 for the remote-storage tests.

Fixtures (import them into a test module or list this module in
``pytest_plugins = ["tests.servers"]`` in a conftest):

* ``s3_server`` (session): OpenStack Swift (Debian packages) with the s3api
  and tempauth middlewares: memcached + account/container/object servers +
  proxy, rings with one replica built at start-up, everything in a temp dir on
  free loopback ports.  Falls back to moto's standalone server when Swift
  cannot be started (``AVSHARDS_TEST_S3_BACKEND=swift|moto`` forces one).
  Yields an :class:`S3Server` (endpoint_url, access_key, secret_key, region,
  backend, ``new_bucket()``, ``options()``).
* ``http_server`` (session, factory): ``http_server(directory)`` starts nginx
  (Debian package, foreground, generated config in a temp dir) serving that
  directory and returns an :class:`HttpServer` (``url``, ``port``,
  ``url_for(name)``).
* ``cutting_proxy`` (session, factory): ``cutting_proxy(port, cut_every=N)``
  starts a threaded TCP proxy in front of ``127.0.0.1:port`` that cuts each
  client connection after N bytes of response body (``mode='close'`` FIN,
  ``'reset'`` RST, ``'stall'`` stop sending to provoke a read timeout), so a
  transfer is interrupted several times.  ``refuse_after=k`` makes it close
  every connection after the first k immediately (retries exhausted).

Services come from ``scripts/install_test_services.sh``.  When a service is
missing the dependent tests are *skipped* with the reason, unless
``AVSHARDS_REQUIRE_TEST_SERVICES=1`` (then they error), which CI should set.

Every child process is started in its own session with PR_SET_PDEATHSIG
(dies with pytest), killed by pid at session end (SIGTERM, then SIGKILL after
a timeout) and by an atexit hook as a backstop.  Every wait has a timeout.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import getpass
import http.client
import itertools
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = [
    "s3_server",
    "http_server",
    "cutting_proxy",
    "S3Server",
    "HttpServer",
    "CuttingProxy",
    "free_port",
]

HOST = "127.0.0.1"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's python3-swift lives there
START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0


def _log(request, msg: str) -> None:
    """Print a line that shows even with pytest's output capture on."""
    line = f"[tests.servers] {msg}"
    tr = None
    if request is not None:
        tr = request.config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(line)
    else:
        print(line, file=sys.stderr, flush=True)


def _require_services() -> bool:
    return os.environ.get("AVSHARDS_REQUIRE_TEST_SERVICES", "") not in ("", "0", "false", "no")


def _unavailable(reason: str):
    if _require_services():
        pytest.fail(f"test service unavailable (AVSHARDS_REQUIRE_TEST_SERVICES=1): {reason}",
                    pytrace=False)
    pytest.skip(f"test service unavailable: {reason} (run scripts/install_test_services.sh)")


# --------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _pdeathsig():  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


_live: dict[int, "Proc"] = {}
_live_lock = threading.Lock()


class Proc:
    """A child process started in its own session, killed by pid."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict | None = None,
                 cwd: str | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=env, cwd=cwd, start_new_session=True, preexec_fn=_pdeathsig,
        )
        with _live_lock:
            _live[self.popen.pid] = self

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        p = self.popen
        if p.poll() is None:
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, timeout)):
                try:
                    os.kill(p.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    p.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # the process group only holds what this child forked itself
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            p.wait(1)
        with contextlib.suppress(Exception):
            self._log.close()
        with _live_lock:
            _live.pop(p.pid, None)


@atexit.register
def _kill_leftovers() -> None:
    with _live_lock:
        procs = list(_live.values())
    for p in procs:
        p.stop(timeout=2)


def _wait_port(port: int, proc: Proc | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
        with contextlib.suppress(OSError):
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        time.sleep(0.05)
    raise TimeoutError(f"{proc.name if proc else 'server'} did not listen on {HOST}:{port} "
                       f"within {timeout}s" + (f":\n{proc.log_tail()}" if proc else ""))


def _http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


# --------------------------------------------------------------------------
# S3: Swift + s3api (or moto)
# --------------------------------------------------------------------------

@dataclass
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str = field(repr=False)
    region: str
    backend: str  # 'swift' or 'moto'
    port: int
    start_seconds: float = 0.0
    _counter: itertools.count = field(default_factory=itertools.count, repr=False)

    def options(self, **overrides):
        """An ``S3Options`` pointing at this server (path-style addressing)."""
        from shardgen.core.storage import S3Options

        kw = dict(endpoint_url=self.endpoint_url, region=self.region, addressing_style="path",
                  access_key=self.access_key, secret_key=self.secret_key,
                  connect_timeout=5.0, read_timeout=15.0, max_retries=2)
        kw.update(overrides)
        return S3Options(**kw)

    def client(self, **overrides):
        return self.options(**overrides).make_client()

    def new_bucket(self, prefix: str = "t") -> str:
        """Create a fresh, empty bucket and return its name."""
        name = f"{prefix}-{next(self._counter)}-{uuid.uuid4().hex[:8]}".lower()
        self.client().create_bucket(Bucket=name)
        return name


_SWIFT_LAUNCHER = textwrap.dedent("""\
    import sys
    from swift.common import utils
    utils.set_swift_dir(sys.argv[1])   # read swift.conf from our temp dir
    from swift.common.wsgi import run_wsgi
    sys.exit(run_wsgi(sys.argv[2], sys.argv[3], verbose=True))
""")

_RING_BUILDER = textwrap.dedent("""\
    import os, sys
    from swift.common.ring import RingBuilder
    d = sys.argv[1]
    for arg in sys.argv[2:]:
        name, port = arg.split("=")
        b = RingBuilder(6, 1, 1)   # part_power, replicas, min_part_hours
        b.add_dev({"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1", "port": int(port),
                   "device": "d0", "weight": 100.0, "meta": ""})
        b.rebalance()
        b.save(os.path.join(d, name + ".builder"))
        b.get_ring().save(os.path.join(d, name + ".ring.gz"))
""")


def _swift_available() -> str | None:
    """None if usable, else the reason."""
    missing = [b for b in ("memcached",) if shutil.which(b) is None and not os.path.exists(f"/usr/bin/{b}")]
    if missing:
        return f"{', '.join(missing)} not installed"
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} not found"
    r = subprocess.run([SYSTEM_PYTHON, "-c", "import swift.common.middleware.s3api.s3api"],
                       capture_output=True, timeout=60)
    if r.returncode != 0:
        return "python3-swift (with s3api) not importable by /usr/bin/python3"
    return None


def _start_swift(workdir: Path, procs: list[Proc]) -> S3Server:
    t0 = time.monotonic()
    user = getpass.getuser()
    etc = workdir / "etc"
    devices = workdir / "srv"
    (devices / "d0").mkdir(parents=True)
    etc.mkdir()
    logs = workdir / "log"
    logs.mkdir()
    ports = {n: free_port() for n in ("proxy", "account", "container", "object", "memcached")}
    region = "us-east-1"

    (etc / "swift.conf").write_text(textwrap.dedent(f"""\
        [swift-hash]
        swift_hash_path_suffix = avshards-{uuid.uuid4().hex}
        swift_hash_path_prefix = avshards-test
        [storage-policy:0]
        name = Policy-0
        default = yes
        [swift-constraints]
        """))
    (etc / "launch.py").write_text(_SWIFT_LAUNCHER)
    (etc / "build_rings.py").write_text(_RING_BUILDER)

    common = textwrap.dedent(f"""\
        [DEFAULT]
        bind_ip = {HOST}
        workers = 0
        user = {user}
        swift_dir = {etc}
        devices = {devices}
        mount_check = false
        log_level = INFO
        log_address = {workdir}/no-syslog
        log_udp_host =
        disable_fallocate = true
        """)
    for kind, egg in (("account", "account"), ("container", "container"), ("object", "object")):
        (etc / f"{kind}-server.conf").write_text(common + textwrap.dedent(f"""\
            bind_port = {ports[kind]}
            [pipeline:main]
            pipeline = {kind}-server
            [app:{kind}-server]
            use = egg:swift#{egg}
            """))
    (etc / "proxy-server.conf").write_text(common + textwrap.dedent(f"""\
        bind_port = {ports['proxy']}
        [pipeline:main]
        pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk s3api tempauth copy slo dlo proxy-logging proxy-server
        [app:proxy-server]
        use = egg:swift#proxy
        allow_account_management = true
        account_autocreate = true
        [filter:s3api]
        use = egg:swift#s3api
        location = {region}
        [filter:tempauth]
        use = egg:swift#tempauth
        user_test_tester = testing .admin
        [filter:cache]
        use = egg:swift#memcache
        memcache_servers = {HOST}:{ports['memcached']}
        [filter:catch_errors]
        use = egg:swift#catch_errors
        [filter:gatekeeper]
        use = egg:swift#gatekeeper
        [filter:healthcheck]
        use = egg:swift#healthcheck
        [filter:proxy-logging]
        use = egg:swift#proxy_logging
        [filter:listing_formats]
        use = egg:swift#listing_formats
        [filter:bulk]
        use = egg:swift#bulk
        [filter:copy]
        use = egg:swift#copy
        [filter:slo]
        use = egg:swift#slo
        [filter:dlo]
        use = egg:swift#dlo
        """))

    memcached = shutil.which("memcached") or "/usr/bin/memcached"
    mc_argv = [memcached, "-l", HOST, "-p", str(ports["memcached"]), "-U", "0", "-m", "16", "-t", "1"]
    if os.geteuid() == 0:
        mc_argv += ["-u", "root"]
    procs.append(Proc("memcached", mc_argv, logs / "memcached.log"))

    r = subprocess.run(
        [SYSTEM_PYTHON, str(etc / "build_rings.py"), str(etc)]
        + [f"{k}={ports[k]}" for k in ("account", "container", "object")],
        capture_output=True, timeout=60,
    )
    if r.returncode != 0:
        raise RuntimeError(f"ring build failed: {r.stderr.decode(errors='replace')[-2000:]}")

    env = dict(os.environ)
    for k in list(env):  # keep the venv's python path etc. away from the system python
        if k.startswith(("PYTHON", "VIRTUAL_ENV")):
            env.pop(k)
    for kind in ("account", "container", "object", "proxy"):
        procs.append(Proc(
            f"swift-{kind}-server",
            [SYSTEM_PYTHON, str(etc / "launch.py"), str(etc), str(etc / f"{kind}-server.conf"),
             f"{kind}-server"],
            logs / f"{kind}.log", env=env, cwd=str(workdir),
        ))

    deadline = time.monotonic() + START_TIMEOUT
    for p, port in zip(procs, [ports[k] for k in ("memcached", "account", "container", "object", "proxy")]):
        _wait_port(port, p, max(0.1, deadline - time.monotonic()))
    proxy = procs[-1]
    while True:
        try:
            status, _ = _http_get(ports["proxy"], "/healthcheck")
            if status == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline or not proxy.alive():
            raise RuntimeError(f"swift proxy healthcheck failed:\n{proxy.log_tail()}")
        time.sleep(0.05)

    server = S3Server(endpoint_url=f"http://{HOST}:{ports['proxy']}", access_key="test:tester",
                      secret_key="testing", region=region, backend="swift", port=ports["proxy"])
    # first S3 call autocreates the account; retry briefly while the servers settle
    last = None
    while time.monotonic() < deadline:
        try:
            server.client().list_buckets()
            break
        except Exception as e:  # noqa: BLE001
            last = e
            time.sleep(0.1)
    else:
        raise RuntimeError(f"swift s3api not answering: {last}\n{proxy.log_tail()}")
    server.start_seconds = time.monotonic() - t0
    return server


def _start_moto(procs: list) -> tuple[S3Server, object]:
    t0 = time.monotonic()
    from moto.server import ThreadedMotoServer  # type: ignore

    port = free_port()
    srv = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
    srv.start()
    _wait_port(port, None, START_TIMEOUT)
    server = S3Server(endpoint_url=f"http://{HOST}:{port}", access_key="testing",
                      secret_key="testing", region="us-east-1", backend="moto", port=port)
    server.start_seconds = time.monotonic() - t0
    return server, srv


@pytest.fixture(scope="session")
def s3_server(request, tmp_path_factory):
    pytest.importorskip("boto3")
    forced = os.environ.get("AVSHARDS_TEST_S3_BACKEND", "").strip().lower()
    workdir = Path(tempfile.mkdtemp(prefix="avshards-swift-"))
    procs: list[Proc] = []
    moto_srv = None
    server = None
    errors = []
    try:
        if forced in ("", "swift"):
            reason = _swift_available()
            if reason is None:
                try:
                    server = _start_swift(workdir, procs)
                except Exception as e:  # noqa: BLE001
                    errors.append(f"swift: {e}")
                    for p in reversed(procs):
                        p.stop()
                    procs.clear()
            else:
                errors.append(f"swift: {reason}")
        if server is None and forced in ("", "moto"):
            try:
                server, moto_srv = _start_moto(procs)
            except ImportError:
                errors.append("moto: not installed (pip install 'moto[server]')")
            except Exception as e:  # noqa: BLE001
                errors.append(f"moto: {e}")
        if server is None:
            _unavailable("; ".join(errors) or f"unknown backend {forced!r}")
        note = f" (fallback; {'; '.join(errors)})" if errors else ""
        _log(request, f"s3 backend: {server.backend} at {server.endpoint_url}, "
                      f"started in {server.start_seconds:.1f}s{note}")
        yield server
    finally:
        for p in reversed(procs):
            p.stop()
        if moto_srv is not None:
            with contextlib.suppress(Exception):
                moto_srv.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------
# HTTP: nginx
# --------------------------------------------------------------------------

@dataclass
class HttpServer:
    root: Path
    port: int
    proc: Proc = field(repr=False)
    start_seconds: float = 0.0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def url_for(self, name: str) -> str:
        from urllib.parse import quote

        return f"{self.url}/{quote(name)}"

    def stop(self) -> None:
        self.proc.stop()


def _nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None)


def _start_nginx(directory: Path, workdir: Path) -> HttpServer:
    t0 = time.monotonic()
    nginx = _nginx_binary()
    assert nginx
    workdir.mkdir(parents=True)
    for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / d).mkdir()
    port = free_port()
    user_line = "user root;" if os.geteuid() == 0 else ""
    conf = workdir / "nginx.conf"
    conf.write_text(textwrap.dedent(f"""\
        daemon off;
        master_process off;
        worker_processes 1;
        {user_line}
        pid {workdir}/nginx.pid;
        error_log {workdir}/error.log warn;
        events {{ worker_connections 256; }}
        http {{
            access_log {workdir}/access.log;
            client_body_temp_path {workdir}/client_body;
            proxy_temp_path {workdir}/proxy;
            fastcgi_temp_path {workdir}/fastcgi;
            uwsgi_temp_path {workdir}/uwsgi;
            scgi_temp_path {workdir}/scgi;
            default_type application/octet-stream;
            types {{ application/x-tar tar; application/json json; text/plain txt; }}
            sendfile on;
            keepalive_timeout 30;
            server {{
                listen {HOST}:{port};
                root {directory};
                location / {{ autoindex on; }}
            }}
        }}
        """))
    proc = Proc("nginx", [nginx, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")],
                workdir / "stdout.log")
    try:
        _wait_port(port, proc, START_TIMEOUT)
    except Exception:
        err = (workdir / "error.log").read_text(errors="replace") if (workdir / "error.log").exists() else ""
        proc.stop()
        raise RuntimeError(f"nginx did not start: {err[-2000:]}")
    return HttpServer(root=directory, port=port, proc=proc, start_seconds=time.monotonic() - t0)


@pytest.fixture(scope="session")
def http_server(request):
    """Factory: ``srv = http_server(directory)`` -> nginx serving ``directory``."""
    if _nginx_binary() is None:
        _unavailable("nginx not installed")
    base = Path(tempfile.mkdtemp(prefix="avshards-nginx-"))
    servers: list[HttpServer] = []
    n = itertools.count()

    def start(directory) -> HttpServer:
        srv = _start_nginx(Path(directory).absolute(), base / f"n{next(n)}")
        servers.append(srv)
        _log(request, f"http backend: nginx at {srv.url} serving {directory} "
                      f"(started in {srv.start_seconds:.2f}s)")
        return srv

    try:
        yield start
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(base, ignore_errors=True)


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

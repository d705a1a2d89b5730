"""``s3_server``: OpenStack Swift with s3api on loopback (moto's standalone server as the fallback)."""

from __future__ import annotations

import contextlib
import getpass
import itertools
import os
import shutil
import subprocess
import tempfile
import textwrap
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.service_procs import HOST, SYSTEM_PYTHON, START_TIMEOUT, _log, _unavailable, free_port, Proc, _wait_port, _http_get


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



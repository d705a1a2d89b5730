"""``http_server``: nginx serving a directory on loopback."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.service_procs import HOST, START_TIMEOUT, _log, _unavailable, free_port, Proc, _wait_port


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



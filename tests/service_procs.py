"""Child processes for the loopback test servers: free ports, start/stop with timeouts, death with pytest.

Every child is started in its own session with PR_SET_PDEATHSIG (dies with pytest), killed by pid at
session end (SIGTERM, then SIGKILL after a timeout) and by an atexit hook as a backstop.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest


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



"""kill -9 at random points of a build: every resumed build is byte-identical to a clean one.

A corpus of many tiny clips with ``--shard-clips 1 --workers 2`` gives a build of a few tenths of a
second with dozens of shard writes, so seeded random delays land in every phase: start-up, probing,
the pool writing shards, the manifests and the report. After each kill:

* every file under a final name is whole: a shard is byte-identical to the clean build's, a
  manifest is either absent or identical;
* a re-run of the same command (the documented way to resume) ends with the same bytes as the
  clean build, and no ``.tmp-`` file is left anywhere.

Kills are chained (a build killed, resumed, killed again ...) and each chain ends with a resume
that runs to completion. Most kills hit the whole process group (what a terminal's kill, a job
scheduler or a container OOM does); every third one kills only the parent (what the OOM killer does
to the largest process), and its pool workers must then exit on their own within 10 s, never linger.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.sources import write_source

ROOT = Path(__file__).resolve().parents[1]
KILLS = 24
CHAIN = 4  # kills per chain before the resume that completes it


def tree(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != "build-report.json"}  # the report holds timings


def _group_alive(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@pytest.fixture(scope="module")
def kill_source(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    vids = {f"v{i:02d}": 60 for i in range(10)}
    src = write_source(root / "src", vids, size=(32, 24),
                       splits={"train": [v for v in vids if v < "v08"], "val": ["v08", "v09"]})
    cmd = [sys.executable, "-m", "shardgen", "build", "--data", str(src), "--split", "train,val", "--clip-seconds", "0.5",
           "--shard-clips", "1", "--workers", "2", "--allow-unannotated", "--no-progress"]
    clean = root / "clean"
    t = time.monotonic()
    proc = subprocess.Popen(cmd + ["--out", str(clean)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = last = None  # when shards first and last appeared: the window the pool writes in
    while proc.poll() is None:
        n = sum(1 for _ in clean.rglob("*.tar")) if clean.exists() else 0
        if n and first is None:
            first = time.monotonic() - t
        if n < 40:
            last = time.monotonic() - t
        time.sleep(0.005)
    assert proc.wait() == 0, proc.stderr.read()
    clean_s = time.monotonic() - t
    window = (first if first is not None else 0.02, max(last or clean_s, first or 0.02))
    return cmd, clean, clean_s, window, root


def test_kill_9_at_random_points_then_resume_is_byte_identical(kill_source):
    cmd, clean, clean_s, window, root = kill_source
    ref = tree(clean)
    assert sum(n.endswith(".tar") for n in ref) == 40
    rng = random.Random(20240606)
    kills, shards_at_kill, chains = 0, [], 0
    attempts = 0
    while kills < KILLS:
        attempts += 1
        assert attempts < 4 * KILLS, "the build keeps finishing before the kill: the machine is far faster than expected"
        out = root / f"chain{chains}"
        chains += 1
        for i in range(CHAIN):
            proc = subprocess.Popen(cmd + ["--out", str(out)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            # anywhere in the build, except each chain's first kill (its output is still empty): before the
            # first shard in even chains, inside the window the shards were written in in odd ones — start-up
            # alone is ~0.3 s of imports, so uniform times could miss either stage
            if i == 0:
                early = (chains - 1) % 2 == 0
                delay = rng.uniform(0.02, max(0.03, 0.8 * window[0])) if early else rng.uniform(*window)
            else:
                delay = rng.uniform(0.02, 1.1 * clean_s)
            time.sleep(delay)
            parent_only = kills % 3 == 2
            if proc.poll() is not None:
                continue  # it finished first: not a kill
            os.kill(proc.pid, signal.SIGKILL) if parent_only else os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            deadline = time.monotonic() + 10
            while _group_alive(proc.pid) and time.monotonic() < deadline:  # orphaned workers are killed with it
                time.sleep(0.01)
            assert not _group_alive(proc.pid), f"kill {kills}: the build's workers outlived it"
            kills += 1
            # whatever sits under a final name is whole
            now = tree(out) if out.exists() else {}
            for name, data in now.items():
                if ".tmp-" in name:
                    continue
                assert name in ref and data == ref[name], f"kill {kills}: {name} differs from the clean build"
            shards_at_kill.append(sum(n.endswith(".tar") for n in now if ".tmp-" not in n))
        subprocess.run(cmd + ["--out", str(out)], check=True, cwd=ROOT, capture_output=True)
        assert tree(out) == ref, f"chain {chains}: resumed build differs from the clean build"
        assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    # the kills landed at different stages: before any shard was written, and part way through the shards
    assert min(shards_at_kill) == 0 and any(0 < n < 40 for n in shards_at_kill), shards_at_kill
    print(f"\n{kills} kills in {chains} chains; clean build {clean_s:.2f} s; final shards present at each kill: {shards_at_kill}")


def _group_size(pgid: int) -> int:
    n = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        n += int(fields[2]) == pgid and fields[0] != "Z"
    return n


def test_pool_workers_die_with_a_killed_driver(tmp_path):
    """kill -9 of the driver alone while its pool writes shards (the OOM killer picks the largest process):
    the workers go too, at once — they used to wait for tasks for ever, holding their memory and any pipe
    the driver's caller reads to its end."""
    vids = {f"v{i}": 300 for i in range(4)}
    src = write_source(tmp_path / "src", vids, size=(64, 48), splits={"train": list(vids)})
    cmd = [sys.executable, "-m", "shardgen", "build", "--data", str(src), "--split", "train", "--clip-seconds", "0.5",
           "--shard-clips", "1", "--workers", "2", "--allow-unannotated", "--no-progress"]
    for attempt in range(3):
        out = tmp_path / f"o{attempt}"
        proc = subprocess.Popen(cmd + ["--out", str(out)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.monotonic() + 120
        while proc.poll() is None and not (out.exists() and any(out.rglob("*.tar"))):
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                pytest.fail("the build wrote no shard in 120 s")
            time.sleep(0.002)
        size = _group_size(proc.pid)
        if proc.poll() is not None or size < 3:  # finished first, or the pool not there: not this case
            os.killpg(proc.pid, signal.SIGKILL) if size else None
            proc.wait()
            continue
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        alive = _group_size(proc.pid)
        if alive:
            os.killpg(proc.pid, signal.SIGKILL)
        assert alive == 0, f"{alive} pool worker(s) outlived the killed driver by 10 s"
        return
    pytest.fail("the build never had its pool writing when the first shard appeared")

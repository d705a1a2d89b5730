#!/usr/bin/env python3
"""The builder's driver at scale: its peak memory per clip, measured on the real build path.

    python scripts/bench_driver.py [--clips 6000,60000] [--workers 2] [--executor local,ray] [--code DIR]

A source of ``N`` one-frame clips (tiny frames: every frame a symlink to one 64x36 JPEG, every wav a
symlink to one wav; ``N / 10,000`` videos, no annotations) is built by the real
:func:`shardgen.build.build` — probing, planning, cutting 1,000-clip shards, *writing every shard*
through the chosen executor's workers, reducing their results, writing the clip index, the manifest
and the report. Nothing is replaced or simulated: this is ``shardgen build`` with ``--executor``.

Each ``(executor, N)`` runs in a fresh process on an empty output directory. The figure that matters
is the driver's peak RSS (VmHWM of the process that called ``build()``; probing and writing happen in
worker processes) and how it grows with ``N``: the "per clip" column is the growth from the smallest
``N`` measured, divided by the clips added. Also reported: seconds of the plan (probe + shards), of
the writing, and of the clip index + manifest. Prints a Markdown table. ``--code DIR`` measures
another checkout's driver (e.g. ``git worktree add /tmp/before <commit>``) on the same sources.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / ".bench" / "driver"
FRAMES_PER_VIDEO = 10_000
SHARD_CLIPS = 1000


def make_source(n: int) -> Path:
    """``n`` frames in ``ceil(n / 10,000)`` videos, all symlinks (a million of them take ~30 s and no data)."""
    import io

    import numpy as np
    import soundfile as sf
    from PIL import Image

    root = BENCH / f"src{n}"
    if (root / "split" / "train.list").exists():
        return root
    (root / "split").mkdir(parents=True, exist_ok=True)
    jpeg, wav = root / "frame.jpg", root / "audio.wav"
    buf = io.BytesIO()
    Image.fromarray(np.full((36, 64, 3), 128, np.uint8)).save(buf, format="JPEG", quality=80)
    jpeg.write_bytes(buf.getvalue())
    per = min(n, FRAMES_PER_VIDEO)
    sf.write(wav, np.zeros(int(per / 30 * 16000) + 16000, np.int16), 16000, subtype="PCM_16")
    ids = []
    left = n
    while left > 0:
        vid, frames = f"v{len(ids):05d}", min(left, FRAMES_PER_VIDEO)
        d = root / "video_imgs" / vid
        d.mkdir(parents=True, exist_ok=True)
        for f in range(1, frames + 1):
            os.symlink(jpeg, d / f"img_{f:05d}.jpg")
        (root / "wav").mkdir(exist_ok=True)
        os.symlink(wav, root / "wav" / f"{vid}.wav")
        ids.append(vid)
        left -= frames
    (root / "split" / "train.list").write_text("\n".join(ids) + "\n")
    return root


CHILD = r"""
import json, sys, time
import shardgen.build.pipeline as b
from shardgen.build.plan import BuildParams

src, out, workers, executor = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
phase = {}

def timed(name, fn):
    def run(*a, **kw):
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            phase[name] = phase.get(name, 0.0) + time.perf_counter() - t
    return run

b._plan = timed("plan", b._plan)
b._write = timed("write", b._write)
b._publish_manifests = timed("index", b._publish_manifests)
t = time.perf_counter()
res = b.build(src, out, ["train"], BuildParams(clip_seconds=1 / 30, min_clip_seconds=1 / 30, allow_unannotated=True,
              shard_clips=int(sys.argv[5])), workers=workers, progress=False, check_space=False, executor=executor,
              executor_options={"init_options": {"include_dashboard": False, "log_to_driver": False}} if executor == "ray" else None)
total = time.perf_counter() - t
with open("/proc/self/status") as fh:
    hwm = next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmHWM:"))
print(json.dumps({"clips": res.report["splits"][0]["clips_written"], "total": total, **phase, "hwm": hwm}))
"""


def measure(n: int, workers: int, executor: str, code: Path = ROOT) -> dict:
    src = make_source(n)
    out = BENCH / f"out-{executor}-{n}"
    shutil.rmtree(out, ignore_errors=True)  # a fresh build every time: a resumed one would write nothing
    env = {**os.environ, "PYTHONPATH": str(code), "RAY_AUTH_MODE": "disabled"}
    try:
        run = subprocess.run([sys.executable, "-c", CHILD, str(src), str(out), str(workers), executor, str(SHARD_CLIPS)],
                             check=True, capture_output=True, text=True, cwd=code, env=env, timeout=7200)
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"{executor} build of {n:,} clips failed:\n{exc.stderr[-3000:]}") from None
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", default="6000,60000", help="clip counts, the smallest first (growth is measured from it)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--executor", default="local", help="local, ray, or both as local,ray")
    ap.add_argument("--code", type=Path, default=ROOT, help="the checkout whose driver is measured (default: this one)")
    args = ap.parse_args()
    counts = [int(x) for x in args.clips.split(",")]
    print(f"{SHARD_CLIPS:,}-clip shards, {args.workers} workers, one-frame 64x36 clips; driver = the process that "
          f"calls build()\n")
    print("| executor | clips | plan (probe + shards) | write | index + manifest | whole build | driver peak RSS "
          "| growth per clip |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for executor in args.executor.split(","):
        base = None
        for n in counts:
            r = measure(n, args.workers, executor, args.code)
            assert r["clips"] == n, r
            per = "(base)" if base is None else f"{(r['hwm'] - base['hwm']) / (n - base['clips']):.0f} B"
            base = base or r
            print(f"| {executor} | {n:,} | {r['plan']:.1f} s | {r['write']:.1f} s | {r['index']:.2f} s | "
                  f"{r['total']:.1f} s | {r['hwm'] / 2**20:.0f} MiB | {per} |", flush=True)


if __name__ == "__main__":
    main()

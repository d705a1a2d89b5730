#!/usr/bin/env python3
"""The builder's driver at scale: plan and index time, and peak memory, for 100k and 1M clips.

    python scripts/bench_driver.py [--clips 100000,1000000] [--workers 2]

A source of ``N`` one-frame clips (tiny frames: every frame a symlink to one 64x36 JPEG, every
wav a symlink to one wav; ``N / 10,000`` videos, no annotations) is built by the real
:func:`shardgen.build.build` — probing every frame, planning, sharding (1,000 clips a shard),
resuming, writing the clip index and manifest and the report — with one phase replaced: the
shard *writing* is simulated (each shard's result made from its plan, nothing written), since
writing a million clips is the workers' job and their cost is what ``make bench`` measures. Each
``N`` runs in a fresh process; it reports the seconds of the plan (probe + shards) and of the
index + manifest, and the driver's peak RSS (VmHWM; probing runs in worker processes) minus
that of a 1,000-clip run, per clip. Prints a Markdown table. ``--code DIR`` measures another
checkout's driver (e.g. ``git worktree add /tmp/before 96ad169``) on the same sources.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / ".bench" / "driver"
FRAMES_PER_VIDEO = 10_000


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
from shardgen.build.writer import ClipRecord, ShardResult

src, out, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
phase = {}

def timed(name, fn):
    def run(*a, **kw):
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            phase[name] = phase.get(name, 0.0) + time.perf_counter() - t
    return run

def simulated_write(ex, contexts, todo, done, progress):
    # each shard's result as the writer would report it, from the plan (sizes as planned, fixed digests)
    for sp, _ in todo:
        offset, clips = 0, []
        for i, c in enumerate(sp.clips):  # a distinct digest per clip, as a real write gives
            clips.append(ClipRecord(c.key, offset, c.planned_bytes, 7, f"{sp.index:032x}{i:032x}",
                                    {"tracks": [[0, 0, c.n_frames]]}))
            offset += c.planned_bytes
        res = ShardResult(sp.name, offset + 1024, "cd" * 32, clips)
        if hasattr(done[sp.split], "add"):
            done[sp.split].add(sp, res)
        else:  # a checkout before WrittenShards keeps the results in a list
            done[sp.split].append(res)
    return b._Written(clips=sum(len(sp.clips) for sp, _ in todo))

b._plan = timed("plan", b._plan)
b._publish_manifests = timed("index", b._publish_manifests)
b._write = simulated_write
t = time.perf_counter()
res = b.build(src, out, ["train"], BuildParams(clip_seconds=1 / 30, min_clip_seconds=1 / 30, allow_unannotated=True,
              shard_clips=1000), workers=workers, progress=False, check_space=False, overwrite=True)
total = time.perf_counter() - t
with open("/proc/self/status") as fh:
    hwm = next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmHWM:"))
print(json.dumps({"clips": res.report["splits"][0]["clips_written"], "total": total, **phase, "hwm": hwm}))
"""


def measure(n: int, workers: int, code: Path = ROOT) -> dict:
    src = make_source(n)
    out = subprocess.run([sys.executable, "-c", CHILD, str(src), str(BENCH / f"out{n}"), str(workers)], check=True,
                         capture_output=True, text=True, cwd=code, env={**os.environ, "PYTHONPATH": str(code)},
                         timeout=3600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", default="100000,1000000")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--code", type=Path, default=ROOT, help="the checkout whose driver is measured (default: this one)")
    args = ap.parse_args()
    base = measure(1000, args.workers, args.code)
    print(f"1,000-clip run: driver peak RSS {base['hwm'] / 2**20:.0f} MiB, {args.workers} workers\n")
    print("| clips | plan (probe + shards) | index + manifest | whole build (writing simulated) | driver peak RSS | per clip |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in (int(x) for x in args.clips.split(",")):
        r = measure(n, args.workers, args.code)
        assert r["clips"] == n, r
        print(f"| {n:,} | {r['plan']:.1f} s | {r['index']:.2f} s | {r['total']:.1f} s | {r['hwm'] / 2**20:.0f} MiB "
              f"| {(r['hwm'] - base['hwm']) / n:.0f} B |", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The loader's index cost at scale: start-up to the first batch and peak memory against the clip count.

    python scripts/bench_index.py [--clips 10000,100000,1000000] [--workers 2]

A tiny real build (one demo video, 64x36 frames, 1 s clips) gives real shards; a synthetic
``manifest.json`` then lists ``N`` clip records that point, cyclically, at its real clips — what
a corpus of ``N`` clips costs the loader to index, plan and start, with the data of a tiny one.
Each ``N`` runs in a fresh process (imports done before the clock starts): seconds from
``make_loader`` to the first batch, and peak RSS (VmHWM) of the parent and of each DataLoader
worker, minus the same figures for the tiny build itself, per clip. Prints a Markdown table.

This is the baseline for issue 13 (a compact shared index): today every process parses the whole
JSON manifest and holds a Python object per clip.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / ".bench" / "index"


def tiny_build() -> Path:
    sys.path.insert(0, str(ROOT))
    from shardgen.build import build
    from shardgen.demo import make_demo_corpus
    from shardgen.plan import BuildParams

    out = BENCH / "tiny"
    if not (out / "train" / "manifest.json").exists():
        src = make_demo_corpus(BENCH / "src", seconds=4.0, width=64, height=36, n_train=1, n_val=0, n_test=0)
        build(src, out, ["train"], BuildParams(clip_seconds=1.0), workers=1, progress=False, overwrite=True)
    return out / "train"


def synthetic_manifest(tiny: Path, n: int) -> Path:
    """``N`` clip records cycling over the tiny build's clips (same shards, keys and byte ranges)."""
    d = BENCH / f"n{n}"
    path = d / "manifest.json"
    if path.exists():
        return path
    d.mkdir(parents=True, exist_ok=True)
    m = json.loads((tiny / "manifest.json").read_text())
    for s in m["shards"]:
        target = d / s["name"]
        if not target.exists():
            os.symlink(tiny / s["name"], target)
    real = m["clips"]
    m["clips"] = [real[i % len(real)] for i in range(n)]
    m["totals"] = {**m.get("totals", {}), "clips": n}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(m, indent=1) + "\n")
    os.replace(tmp, path)
    return path


CHILD = r"""
import json, os, sys, time
import loaders

def hwm(pid):
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0

source, workers, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
t = time.perf_counter()
ld = loaders.make_loader(source, mode=mode, num_workers=workers, shuffle=True, batch_size=1)
it = iter(ld)
next(it)
first = time.perf_counter() - t
kids = [int(p) for p in open(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read().split()]
print(json.dumps({"first_batch_s": first, "parent": hwm(os.getpid()), "workers": [hwm(k) for k in kids]}))
"""


def measure(source: Path, workers: int, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(source), str(workers), mode], check=True, capture_output=True,
                         text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", default="10000,100000,1000000")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--mode", default="talknet")
    args = ap.parse_args()
    tiny = tiny_build()
    base = measure(tiny, args.workers, args.mode)
    n_tiny = len(json.loads((tiny / "manifest.json").read_text())["clips"])
    print(f"tiny build: {n_tiny} clips, first batch {base['first_batch_s']:.2f} s, parent {base['parent'] / 2**20:.0f} MiB, "
          f"workers {', '.join(f'{w / 2**20:.0f}' for w in base['workers'])} MiB\n")
    print(f"| clips | manifest.json | first batch | per clip | parent peak RSS | per clip | worker peak RSS | per clip |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in (int(x) for x in args.clips.split(",")):
        path = synthetic_manifest(tiny, n)
        r = measure(path.parent, args.workers, args.mode)
        dt = r["first_batch_s"] - base["first_batch_s"]
        dp = r["parent"] - base["parent"]
        worker = max(r["workers"]) if r["workers"] else 0
        dw = worker - (max(base["workers"]) if base["workers"] else 0)
        print(f"| {n:,} | {path.stat().st_size / 1e6:.0f} MB | {r['first_batch_s']:.2f} s | {1e6 * dt / n:.1f} µs "
              f"| {r['parent'] / 2**20:.0f} MiB | {dp / n:.0f} B | {worker / 2**20:.0f} MiB | {dw / n:.0f} B |", flush=True)


if __name__ == "__main__":
    main()

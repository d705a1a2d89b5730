#!/usr/bin/env python3
"""The loader's index cost at scale: start-up to the first batch and peak memory against the clip count.

    python scripts/bench_index.py [--clips 10000,100000,1000000] [--workers 2] [--mode talknet]

A tiny real build (one demo video, 64x36 frames, 400 clips of 0.25 s in one shard) gives a real
shard; :func:`tests.synthetic_index.synthetic_split` then writes a split of ``N`` clips naming it
``N / 400`` times (``clips.idx`` repeating its rows, one copy per shard entry) — what a corpus of
``N`` clips costs the loader to index, plan and start, with the data of a tiny one. Each ``N``
runs in a fresh process (imports done before the clock starts): seconds from ``make_loader`` to
the first batch, and peak RSS (VmHWM, which counts the mapped index pages a process touched) of
the parent and of each DataLoader worker, minus the same figures for the tiny build itself, per
clip, and the seconds per item (clip or track) over the 200 batches after the first (at most 20,000 items;
a tiny source's short epochs are chained, their start-up untimed) against the tiny build's: the per-item
cost must not grow with the source either. Prints a Markdown table. ``--mode asd-tracks`` (2 face tracks a clip) and
``--batch-frames`` plan over tracks instead.

Issue 13's targets, per process beyond a small corpus's: ≤ 3 µs and ≤ 200 bytes per clip.

``--code DIR`` measures another checkout's loader on the same splits — e.g. ``git worktree add
/tmp/before 96ad169`` for the JSON-manifest loader before the clip index: a checkout without
``shardgen/core/clip_index.py`` reads version-1 manifests, so each split is also written that way
(the same shard entries, every clip row inline: ``tests.sources.v1_manifest``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / ".bench" / "index2"
sys.path.insert(0, str(ROOT))


def tiny_build() -> Path:
    from shardgen.build.pipeline import build
    from shardgen.demo.corpus import make_demo_corpus
    from shardgen.build.plan import BuildParams

    out = BENCH / "tiny"
    if not (out / "train" / "manifest.json").exists():
        src = make_demo_corpus(BENCH / "src", seconds=100.0, width=64, height=36, n_train=1, n_val=0, n_test=0)
        build(src, out, ["train"], BuildParams(clip_seconds=0.25, min_clip_seconds=0.25), workers=2, progress=False,
              overwrite=True)
    return out / "train"


def as_version_1(split: Path) -> Path:
    """The same split for a loader before the clip index: shard symlinks and a version-1 manifest, clips inline."""
    from tests.sources import v1_manifest

    out = split.parent / f"{split.name}-v1"
    if (out / "manifest.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    for shard in split.glob("*.tar"):
        if not (out / shard.name).exists():
            os.symlink(shard.resolve(), out / shard.name)
    data = v1_manifest(split)
    (out / ".manifest.tmp").write_bytes(data)
    os.replace(out / ".manifest.tmp", out / "manifest.json")
    return out


CHILD = r"""
import json, os, sys, time
import loaders
STEADY, STEADY_ITEMS = 200, 20_000

def hwm(pid):
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0

source, workers, mode, budget = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
size = {"batch_frames": budget} if budget else {"batch_size": 1}
t = time.perf_counter()
ld = loaders.make_loader(source, mode=mode, num_workers=workers, shuffle=True, **size)
it = iter(ld)
next(it)
first = time.perf_counter() - t
kids = [int(p) for p in open(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read().split()]
mem = {"parent": hwm(os.getpid()), "workers": [hwm(k) for k in kids]}  # before the steady batches below
# The per-item cost must not grow with the source either: the next STEADY batches (or STEADY_ITEMS items), timed
# per item. A tiny source's epoch may end first (batch_frames packs its 750 tracks into 2 batches): the next epoch
# is started untimed (a fresh iterator spawns workers) and its first batch is skipped like this one's. An epoch
# with nothing after its first batch would never get there: stop at it.
batches = items = 0
elapsed = 0.0
while True:
    t, before = time.perf_counter(), batches
    for batch in it:
        batches += 1
        items += len(batch[-1])
        if batches >= STEADY or items >= STEADY_ITEMS:
            break
    elapsed += time.perf_counter() - t
    if batches >= STEADY or items >= STEADY_ITEMS or batches == before:
        break
    it = iter(ld)
    next(it)
print(json.dumps({"first_batch_s": first, **mem, "item_s": elapsed / max(items, 1), "items": items,
                  "batches": batches}))
"""


def measure(source: Path, workers: int, mode: str, budget: int, code: Path = ROOT) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(source), str(workers), mode, str(budget)], check=True,
                         capture_output=True, text=True, cwd=code, env={**os.environ, "PYTHONPATH": str(code)},
                         timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from tests.synthetic_index import synthetic_split

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", default="10000,100000,1000000")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--mode", default="talknet")
    ap.add_argument("--batch-frames", type=int, default=0, help="asd-tracks frame-budget batches (0: batch_size 1)")
    ap.add_argument("--code", type=Path, default=ROOT, help="the checkout whose loader is measured (default: this one)")
    args = ap.parse_args()
    tiny = tiny_build()
    v1 = not (args.code / "shardgen" / "core" / "clip_index.py").exists()
    prepare = as_version_1 if v1 else (lambda split: split)
    base = measure(prepare(tiny), args.workers, args.mode, args.batch_frames, args.code)
    n_tiny = json.loads((tiny / "manifest.json").read_text())["totals"]["clips"]
    print(f"tiny build: {n_tiny} clips, first batch {base['first_batch_s']:.2f} s, parent {base['parent'] / 2**20:.0f} MiB, "
          f"{1e3 * base['item_s']:.2f} ms per item over {base['items']} items in {base['batches']} batches, "
          f"workers {', '.join(f'{w / 2**20:.0f}' for w in base['workers'])} MiB; mode {args.mode}"
          f"{f', batch_frames {args.batch_frames}' if args.batch_frames else ''}\n")
    print("| clips | manifest.json + clips.idx | first batch | per clip | parent peak RSS | per clip | worker peak RSS | per clip "
          "| next 200 batches, per item (tiny build: ratio) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in (int(x) for x in args.clips.split(",")):
        split = prepare(synthetic_split(tiny, n, BENCH / f"n{n}"))
        r = measure(split, args.workers, args.mode, args.batch_frames, args.code)
        dt = r["first_batch_s"] - base["first_batch_s"]
        dp = r["parent"] - base["parent"]
        worker = max(r["workers"]) if r["workers"] else 0
        dw = worker - (max(base["workers"]) if base["workers"] else 0)
        size = sum((split / f).stat().st_size for f in ("manifest.json", "clips.idx") if (split / f).exists())
        print(f"| {n:,} | {size / 1e6:.1f} MB | {r['first_batch_s']:.2f} s | {1e6 * dt / n:.2f} µs "
              f"| {r['parent'] / 2**20:.0f} MiB | {dp / n:.0f} B | {worker / 2**20:.0f} MiB | {dw / n:.0f} B "
              f"| {1e3 * r['item_s']:.2f} ms ({r['item_s'] / base['item_s']:.2f}x) |", flush=True)


if __name__ == "__main__":
    main()

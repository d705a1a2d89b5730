#!/usr/bin/env python3
"""`make bench`: asd-tracks batching — frames kept per epoch, and frames/s, ``batch_size`` vs ``batch_frames``.

1. **Frames kept.** A batch is cut to its shortest track (TalkNet's rule), so with tracks of
   varied length a random batch of ``batch_size`` throws frames away; TalkNet's frame-budget
   batches (``batch_frames``) group tracks of similar length. Computed from the epoch plan
   (:meth:`ShardStream.epoch_batches`, no data read) over 4 shuffled epochs, on the demo corpus
   cut into 5 s clips and on the real clip of ``../shared/realdata`` (when present).
2. **Throughput.** Frames delivered per second, one process, best of 5 epochs, of
   ``batch_frames`` against the baseline ``batch_size=1`` (one track a batch, nothing cut), in the
   same run, on plain 640x360 shards and on shards built with ``--derive crops``.

Prints Markdown tables.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BENCH = ROOT / ".bench" / "batching"
REAL = ROOT.parent / "shared" / "realdata" / "hamilton"

import loaders  # noqa: E402
from shardgen.build.pipeline import build  # noqa: E402
from shardgen.demo.corpus import make_demo_corpus  # noqa: E402
from shardgen.build.plan import BuildParams  # noqa: E402

VARIANTS = [{"batch_size": 1}, {"batch_size": 4}, {"batch_size": 8}, {"batch_frames": 500}, {"batch_frames": 2500}]


def corpora() -> dict[str, Path]:
    out = {}
    many = BENCH / "many"  # tracks only matter for frames kept: many videos, tiny frames
    if not (many / "train" / "manifest.json").exists():
        src = make_demo_corpus(BENCH / "many-src", seconds=60.0, width=160, height=90, n_train=12, n_val=0, n_test=0)
        build(src, many, ["train"], BuildParams(clip_seconds=5.0), workers=os.cpu_count() or 1, progress=False,
              overwrite=True)
    out["demo, 12 videos of 60 s"] = many / "train"
    src = make_demo_corpus(BENCH / "src", seconds=30.0, width=640, height=360, n_train=4, n_val=0, n_test=0)
    for kind, derive in (("demo 640x360", ()), ("demo 640x360, --derive crops", ("crops",))):
        dst = BENCH / ("crops" if derive else "plain")
        if not (dst / "train" / "manifest.json").exists():
            build(src, dst, ["train"], BuildParams(clip_seconds=5.0, derive=derive), workers=os.cpu_count() or 1,
                  progress=False, overwrite=True)
        out[kind] = dst / "train"
    if (REAL / "split" / "train.list").is_file():
        dst = BENCH / "real"
        if not (dst / "train" / "manifest.json").exists():
            build(REAL, dst, ["train"], BuildParams(clip_seconds=5.0), workers=1, progress=False, overwrite=True)
        out["real clip (../shared/realdata)"] = dst / "train"
    else:
        print(f"(the real clip is absent at {REAL}: its rows are left out)")
    return out


def frames_kept(split, kw: dict, epochs: int = 4) -> tuple[float, int]:
    kept = total = batches = 0
    for epoch in range(epochs):
        ld = loaders.make_loader(split, mode="asd-tracks", seed=11, **kw)
        for b in ld.stream.epoch_batches(0, 0, epoch=epoch):
            lengths = [u.track[2] for u in b]
            kept += min(lengths) * len(lengths)
            total += sum(lengths)
            batches += 1
    return kept / total, batches // epochs


def throughput(split, variants: list[dict], runs: int = 5) -> list[float]:
    """Frames delivered per second of each variant, best of ``runs``, the variants taking turns (so a busy
    moment of the machine does not land on one variant only)."""
    best = [0.0] * len(variants)
    for epoch in range(runs):
        for i, kw in enumerate(variants):
            ld = loaders.make_loader(split, mode="asd-tracks", seed=11, **kw)
            ld.set_epoch(epoch)
            t = time.perf_counter()
            frames = sum(f.shape[0] * f.shape[1] for _, f, _ in ld)
            best[i] = max(best[i], frames / (time.perf_counter() - t))
    return best


def main() -> None:
    splits = corpora()
    print("\n**Frames kept per epoch** (delivered B×T over the tracks' frames; 4 shuffled epochs)\n")
    print("| corpus | tracks | lengths (frames) | variant | batches/epoch | frames kept |")
    print("|---|---:|---|---|---:|---:|")
    for name, split in splits.items():
        ld = loaders.make_loader(split, mode="asd-tracks")
        lengths = ld.stream.items.track_lengths().tolist()
        for kw in VARIANTS:
            kept, nb = frames_kept(split, kw)
            label = ", ".join(f"{k}={v}" for k, v in kw.items())
            print(f"| {name} | {len(lengths)} | {min(lengths)}–{max(lengths)} | {label} | {nb} | {100 * kept:.1f} % |")
    print("\n**Throughput** (frames delivered per second, 1 process, best of 5 epochs, variants taking turns)\n")
    print("| shards | batch_size=1 (baseline) | batch_frames=500 | batch_frames=2500 | ratio (2500 vs baseline) |")
    print("|---|---:|---:|---:|---:|")
    for name, split in splits.items():
        if not name.startswith("demo 640"):
            continue
        base, b500, b2500 = throughput(split, [{"batch_size": 1}, {"batch_frames": 500}, {"batch_frames": 2500}])
        print(f"| {name} | {base:.0f} | {b500:.0f} | {b2500:.0f} | {b2500 / base:.2f}x |")


if __name__ == "__main__":
    main()

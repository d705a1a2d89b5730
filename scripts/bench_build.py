#!/usr/bin/env python3
"""Build throughput of the local and the Ray executor, against the I/O floor, in one run.

On the demo corpus (``make_demo_corpus``: 640x360, 45 s videos, the 3 train + 2 val videos are
built), for each executor and worker count: one ``shardgen.build.build`` of train+val into a
fresh directory (same parameters, so every run writes the same bytes — checked), timed from
the call to its return (probe + plan + write + manifests).

The floor is ``tar cf`` of exactly the source files a build reads (frames and wavs of the built
videos) into a file next to the outputs, then fsync — the builder fsyncs every shard too. (GNU
tar does not read the files when the archive is /dev/null, hence a real file.) Every run reads
a warm page cache: the corpus is read once before the first measurement.

The Ray runtime (``num_cpus`` = the largest worker count) is started once before the Ray runs
and reused by them, as on a cluster; its start-up time is printed separately.

    python scripts/bench_build.py [--seconds 45] [--width 640 --height 360] [--workers 1,2]

Each row is the median of ``--repeat`` runs (default 3). Prints a Markdown table: seconds, MB/s (shard bytes written / seconds), clips/s, and the
throughput as a fraction of the tar floor's.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BENCH = ROOT / ".bench" / "build"
SPLITS = ["train", "val"]


def source_files(src: Path) -> list[str]:
    """Relative paths of what a train+val build reads: every frame and wav of the listed videos."""
    rel = []
    for split in SPLITS:
        for vid in (src / "split" / f"{split}.list").read_text().split():
            rel += sorted(str(p.relative_to(src)) for p in (src / "video_imgs" / vid).iterdir())
            rel.append(f"wav/{vid}.wav")
    return rel


def warm(src: Path, rel: list[str]) -> int:
    total = 0
    for r in rel:
        total += len((src / r).read_bytes())
    return total


def tar_floor(src: Path, rel: list[str], work: Path) -> tuple[float, int]:
    listing = work / "tar-files.txt"
    listing.write_text("".join(f"{r}\n" for r in rel))
    archive = work / "floor.tar"
    t0 = time.perf_counter()
    subprocess.run(["tar", "cf", str(archive), "-C", str(src), "-T", str(listing)], check=True)
    fd = os.open(archive, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    dt = time.perf_counter() - t0
    size = archive.stat().st_size
    archive.unlink()
    return dt, size


def median_run(fn, repeat: int) -> dict:
    runs = sorted((fn() for _ in range(max(1, repeat))), key=lambda r: r["seconds"])
    row = dict(runs[len(runs) // 2])
    row["all_seconds"] = [r["seconds"] for r in runs]
    row["sha"] = runs[0]["sha"] if len({r["sha"] for r in runs}) == 1 else "differs between repeats"
    return row


def one_build(src: Path, out: Path, params, executor: str, workers: int) -> dict:
    from shardgen.build.pipeline import build

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    res = build(src, out, SPLITS, params, workers=workers, executor=executor, progress=False)
    dt = time.perf_counter() - t0
    shards = sorted(p for s in SPLITS for p in (out / s).glob("*.tar"))
    digest = hashlib.sha256()
    for p in shards + [out / s / "manifest.json" for s in SPLITS]:
        digest.update(p.name.encode() + p.read_bytes())
    row = {"seconds": dt, "write_seconds": res.report["timing"]["write_seconds"],
           "bytes": sum(p.stat().st_size for p in shards), "shards": len(shards),
           "clips": res.report["timing"]["clips_written_now"], "sha": digest.hexdigest()}
    shutil.rmtree(out, ignore_errors=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=45.0, help="length of each demo video (default 45)")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--workers", default="1,2", help="worker counts to run (default 1,2)")
    ap.add_argument("--clip-seconds", type=float, default=15.0)
    ap.add_argument("--shard-bytes", default="64MB", help="shard size, small enough for several shards per split (default 64MB)")
    ap.add_argument("--executors", default="local,ray")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each row; the median is shown (default 3)")
    args = ap.parse_args(argv)

    from shardgen.cli import _size
    from shardgen.demo.corpus import make_demo_corpus
    from shardgen.build.plan import BuildParams

    workers = [int(w) for w in args.workers.split(",") if w]
    executors = [e for e in args.executors.split(",") if e]
    name = f"{args.width}x{args.height}-{args.seconds:g}s"
    t0 = time.perf_counter()
    src = make_demo_corpus(BENCH / name / "src", seconds=args.seconds, width=args.width, height=args.height,
                           n_train=3, n_val=2, n_test=0)
    print(f"corpus {src} ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    work = BENCH / name / "runs"
    work.mkdir(parents=True, exist_ok=True)
    params = BuildParams(clip_seconds=args.clip_seconds, shard_bytes=_size(args.shard_bytes))

    rel = source_files(src)
    src_bytes = warm(src, rel)
    rows: list[tuple[str, int, dict]] = []
    floors = sorted(tar_floor(src, rel, work) for _ in range(max(1, args.repeat)))
    floor_s, floor_bytes = floors[len(floors) // 2]

    if "local" in executors:  # before Ray starts: the local executor forks, and forking a process with Ray's threads is unsafe
        for w in workers:
            rows.append(("local", w, median_run(lambda: one_build(src, work / "out", params, "local", w), args.repeat)))
            print(f"local x{w}: {rows[-1][2]['all_seconds']} s", file=sys.stderr)
    ray_start = None
    if "ray" in executors:
        import ray

        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private runtime on this machine
        t = time.perf_counter()
        ray.init(num_cpus=max(workers), include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - t
        try:
            for w in workers:
                rows.append(("ray", w, median_run(lambda: one_build(src, work / "out", params, "ray", w), args.repeat)))
                print(f"ray x{w}: {rows[-1][2]['all_seconds']} s", file=sys.stderr)
        finally:
            ray.shutdown()

    floor_mbs = floor_bytes / 1e6 / floor_s
    print(f"\nBuild throughput — demo corpus {args.width}x{args.height}, {args.seconds:g} s x 5 videos (train+val), "
          f"{len(rel)} source files, {src_bytes / 1e6:.1f} MB; clip {args.clip_seconds:g} s, shards {args.shard_bytes}; "
          f"{os.cpu_count()} CPUs; warm page cache; median of {args.repeat}\n")
    print("| run | workers | seconds | write s | shards | MB/s | clips/s | vs tar floor |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| `tar cf` + fsync (floor) | 1 | {floor_s:.2f} | | | {floor_mbs:.1f} | | 1.00 |")
    for ex, w, r in rows:
        mbs = r["bytes"] / 1e6 / r["seconds"]
        print(f"| {ex} executor | {w} | {r['seconds']:.2f} | {r['write_seconds']:.2f} | {r['shards']} | {mbs:.1f} | "
              f"{r['clips'] / r['seconds']:.2f} | {mbs / floor_mbs:.2f} |")
    same = len({r["sha"] for _, _, r in rows}) == 1
    print(f"\nall runs wrote identical shards and manifests: {'yes' if same else 'NO'}")
    if ray_start is not None:
        print(f"Ray runtime start (once, not in the rows): {ray_start:.1f} s")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

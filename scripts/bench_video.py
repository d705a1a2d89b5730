#!/usr/bin/env python3
"""Building from mp4 files directly vs extracting with the ffmpeg CLI first, same videos, one run.

The demo corpus as mp4 (``make_demo_videos``: 640x360 H.264 + AAC, 3 train + 2 val videos). Two
ways to the same shards' content, each timed end to end from the mp4 files:

* **extract, then build** — what a user does without issue 14: per video
  ``ffmpeg -i V -vf fps=30 -fps_mode passthrough -q:v 2 video_imgs/<id>/img_%05d.jpg`` and
  ``ffmpeg -i V -ac 1 -ar 16000 wav/<id>.wav`` (``--workers`` videos at a time, each ffmpeg with its
  own default threads), then ``shardgen build`` of the frame directories with ``--workers``;
* **build from mp4** — ``shardgen build`` of the mp4 files with ``--workers`` (PyAV decoding inside
  the workers, cores // workers FFmpeg threads each).

Peak extra disk: bytes of files that exist during the run besides the mp4 sources and the output
shards — the extracted JPEGs and wavs for the first, and for the second whatever new file appears
in the source tree or ``$TMPDIR`` (none expected). Every run reads a warm page cache.

    python scripts/bench_video.py [--seconds 30] [--workers 2] [--repeat 2]

Prints a Markdown table; each row is the fastest of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BENCH = ROOT / ".bench" / "video"
SPLITS = ["train", "val"]


def tree_bytes(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_size for p in Path(root).rglob("*") if p.is_file()}


def listed(src: Path) -> list[str]:
    return [v for s in SPLITS for v in (src / "split" / f"{s}.list").read_text().split()]


def extract_then_build(videos: Path, work: Path, params, workers: int) -> dict:
    """ffmpeg CLI extraction into a frame-dir source, then the ordinary build of it."""
    from shardgen.build.pipeline import build

    src = work / "extracted"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(videos, src, ignore=shutil.ignore_patterns("videos", ".*"))
    t0 = time.perf_counter()

    def one(vid: str) -> None:
        d = src / "video_imgs" / vid
        d.mkdir(parents=True)
        v = str(videos / "videos" / f"{vid}.mp4")
        subprocess.run(["ffmpeg", "-v", "error", "-i", v, "-vf", "fps=30", "-fps_mode", "passthrough", "-q:v", "2",
                        str(d / "img_%05d.jpg")], check=True)
        (src / "wav").mkdir(exist_ok=True)
        subprocess.run(["ffmpeg", "-v", "error", "-i", v, "-vn", "-ac", "1", "-ar", "16000", str(src / "wav" / f"{vid}.wav")],
                       check=True)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, listed(videos)))
    t_extract = time.perf_counter() - t0
    extra = sum(tree_bytes(src / "video_imgs").values()) + sum(tree_bytes(src / "wav").values())
    out = work / "out-extract"
    shutil.rmtree(out, ignore_errors=True)
    res = build(src, out, SPLITS, params, workers=workers, progress=False)
    dt = time.perf_counter() - t0
    row = {"seconds": dt, "extract_seconds": t_extract, "extra_bytes": extra,
           "clips": res.report["timing"]["clips_written_now"], "bytes": sum(tree_bytes(out).values())}
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(src, ignore_errors=True)
    return row


def build_from_mp4(videos: Path, work: Path, params, workers: int) -> dict:
    from shardgen.build.pipeline import build

    out = work / "out-mp4"
    shutil.rmtree(out, ignore_errors=True)
    tmp = Path(tempfile.gettempdir())
    before_src, before_tmp = tree_bytes(videos), set(os.listdir(tmp))
    t0 = time.perf_counter()
    res = build(videos, out, SPLITS, params, workers=workers, progress=False)
    dt = time.perf_counter() - t0
    new_src = {p: s for p, s in tree_bytes(videos).items() if p not in before_src}
    new_tmp = set(os.listdir(tmp)) - before_tmp
    extra = sum(new_src.values()) + sum(sum(tree_bytes(tmp / n).values()) if (tmp / n).is_dir() else (tmp / n).stat().st_size
                                        for n in new_tmp if (tmp / n).exists())
    row = {"seconds": dt, "extract_seconds": 0.0, "extra_bytes": extra,
           "clips": res.report["timing"]["clips_written_now"], "bytes": sum(tree_bytes(out).values())}
    shutil.rmtree(out, ignore_errors=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each demo video (default 30)")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes for both ways (default: all cores)")
    ap.add_argument("--clip-seconds", type=float, default=15.0)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each row; the fastest is shown (default 2)")
    args = ap.parse_args(argv)
    if shutil.which("ffmpeg") is None:
        print("bench_video: the ffmpeg command-line tool is needed for the baseline (make test-services installs it)",
              file=sys.stderr)
        return 2

    from shardgen.demo.videos import make_demo_videos
    from shardgen.build.plan import BuildParams

    name = f"{args.width}x{args.height}-{args.seconds:g}s"
    t0 = time.perf_counter()
    videos = make_demo_videos(BENCH / name / "src", seconds=args.seconds, width=args.width, height=args.height,
                              n_train=3, n_val=2, n_test=0)
    print(f"mp4 corpus {videos} ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    work = BENCH / name / "runs"
    work.mkdir(parents=True, exist_ok=True)
    for p in (videos / "videos").iterdir():
        p.read_bytes()  # warm the page cache
    params = BuildParams(clip_seconds=args.clip_seconds)
    rows = {}
    for label, fn in (("extract with ffmpeg CLI, then `shardgen build`", extract_then_build),
                      ("`shardgen build` from the mp4 files", build_from_mp4)):
        runs = [fn(videos, work, params, args.workers) for _ in range(max(1, args.repeat))]
        rows[label] = min(runs, key=lambda r: r["seconds"])
        print(f"{label}: {[round(r['seconds'], 2) for r in runs]} s", file=sys.stderr)
    base = rows["extract with ffmpeg CLI, then `shardgen build`"]["seconds"]
    mp4_bytes = sum(p.stat().st_size for p in (videos / "videos").iterdir())
    print(f"\nBuild from video files — demo corpus as mp4, {args.width}x{args.height}, {args.seconds:g} s x 5 videos "
          f"({mp4_bytes / 1e6:.1f} MB of mp4); clip {args.clip_seconds:g} s; {args.workers} workers; {os.cpu_count()} CPUs; "
          f"fastest of {args.repeat}\n")
    print("| way | seconds | of which extraction | clips | shard MB | peak extra disk | speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, r in rows.items():
        print(f"| {label} | {r['seconds']:.2f} | {r['extract_seconds']:.2f} | {r['clips']} | {r['bytes'] / 1e6:.1f} | "
              f"{r['extra_bytes'] / 1e6:.1f} MB | {base / r['seconds']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

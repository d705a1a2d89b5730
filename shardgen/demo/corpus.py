"""Deterministic synthetic "embedded demo corpus" in the Ego4D-style source layout.

``make_demo_corpus(root)`` writes, under ``root``::

    split/{train,val,test}.list          one video id per line, newline-terminated
    video_imgs/<video_id>/img_00001.jpg  1-based, 5 digits, ``fps`` frames per second
    wav/<video_id>.wav                   PCM_16
    json/av_{train,val,test}.json        Ego4D AV format (0-based frames)
    .demo_complete.json                  marker: generator version, args, per-video facts

Video ids are ``demo_<split>_<NNN>``; each video has exactly one clip whose ``clip_uid`` equals
its ``video_uid`` (as in ``realdata/hamilton``).  Each video shows two face-like persons
(``person_id`` "1" and "2") on a panning textured background; each has two tracking paths
separated by a few-second gap in which the person is not drawn.  Person "3" is the camera
wearer (no tracks, voice only).  Boxes are the exact pixel bounding box of the drawn face
ellipse (the face covers columns ``x .. x+width-1`` and rows ``y .. y+height-1``) and always lie
inside the frame.  A person's mouth opens with the same syllable envelope that modulates its
voice in the wav.

Conventions (Ego4D): track ``frame`` f is ``img_{f+1:05d}.jpg`` at time ``f/fps``;
voice-segment ``end_frame`` is inclusive, ``start_time = start_frame/fps`` and
``end_time = end_frame/fps``; the speech audio of a segment fills
``[start_frame/fps, (end_frame+1)/fps)``.

Deliberate oddities for the builder to handle:

* the LAST val video (``demo_val_{n_val-1:03d}``) has a 48 kHz stereo wav (resampler path);
* the LAST train video (``demo_train_{n_train-1:03d}``) has a wav 0.5 s shorter than its
  frames (zero padding path).

All other wavs are ``sample_rate`` Hz mono with exactly ``n_frames/fps`` seconds of audio.

Output is byte-deterministic for equal arguments (one seeded ``numpy`` generator tree, no
clock, no global randomness; frames are rendered independently so the worker count does not
matter).  Every file is written atomically (temp name in the same directory, then
``os.replace``); a finished corpus is recognised by its marker and not regenerated, and an
interrupted run with the same arguments resumes without re-encoding frames that exist.

The work is in three modules: :mod:`.demo_scene` plans each video (faces, voices, boxes, its
annotations), :mod:`.demo_media` turns a plan into JPEG and wav bytes, and this one writes the
corpus: splits, markers, resumption, the worker pool and the CLI.

CLI: ``python -m shardgen.demo.corpus --out DIR [--seconds S] [--width W] ...``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


from .media import render_task, synth_audio, write_atomically, write_wav
from .scene import DEMO_VERSION, ODD_RATE, SHORT_WAV_SECONDS, SKIN_COLOURS, ScenePlan, clip_json, plan_video

__all__ = [
    "DEMO_VERSION",
    "MARKER_NAME",
    "ODD_RATE",
    "SHORT_WAV_SECONDS",
    "SKIN_COLOURS",
    "make_demo_corpus",
    "demo_truth",
    "video_ids",
    "main",
]

MARKER_NAME = ".demo_complete.json"
_PROGRESS_NAME = ".demo_inprogress.json"
SPLITS = ("train", "val", "test")
_DEMO_NAME = re.compile(r"^demo_(train|val|test)_\d{3,}(\.wav)?$")
_FRAMES_PER_TASK = 256

# --------------------------------------------------------------------------- helpers


def video_ids(split: str, n: int) -> list[str]:
    """The ids ``make_demo_corpus`` uses for ``n`` videos of ``split``."""
    return [f"demo_{split}_{i:03d}" for i in range(n)]



def _atomic_write_text(path: Path, text: str) -> None:
    write_atomically(path, text.encode("utf-8"))


def _remove_temps(d: Path) -> None:
    if d.is_dir():
        for p in d.glob(".*.tmp"):
            p.unlink(missing_ok=True)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- driver


def _args_dict(**kw) -> dict:
    return {k: kw[k] for k in sorted(kw)}


def _marker_matches(path: Path, args: dict) -> bool:
    m = _read_json(path)
    return isinstance(m, dict) and m.get("version") == DEMO_VERSION and m.get("args") == args


def _cleanup_stale(root: Path, plans: list) -> None:
    keep = {p.video_id for p in plans}
    imgs, wavs = root / "video_imgs", root / "wav"
    if imgs.is_dir():
        for d in imgs.iterdir():
            if d.is_dir() and _DEMO_NAME.match(d.name) and d.name not in keep:
                shutil.rmtree(d)
    if wavs.is_dir():
        for w in wavs.iterdir():
            if _DEMO_NAME.match(w.name) and w.name[:-4] not in keep:
                w.unlink()
    frame_name = re.compile(r"^img_(\d{5,})\.jpg$")
    for p in plans:
        d = imgs / p.video_id
        if d.is_dir():
            for f in d.iterdir():
                m = frame_name.match(f.name)
                if m and int(m.group(1)) > p.n_frames:
                    f.unlink()


def make_demo_corpus(root, *, seed: int = 0, n_train: int = 3, n_val: int = 2, n_test: int = 1,
                     seconds: float = 45.0, fps: int = 30, width: int = 640, height: int = 360,
                     sample_rate: int = 16000, quality: int = 85,
                     workers: int | None = None) -> Path:
    """Write the demo corpus under ``root`` (see module docstring) and return ``root``.

    Returns at once when ``root/.demo_complete.json`` records the same arguments.  ``workers``
    (frame-rendering processes; default: CPU count, 1 for tiny corpora) does not change the
    output.
    """
    root = Path(root)
    seconds, fps, width, height = float(seconds), int(fps), int(width), int(height)
    if fps <= 0 or seconds <= 0 or width < 16 or height < 16:
        raise ValueError("need seconds > 0, fps > 0 and width, height >= 16")
    if min(n_train, n_val, n_test) < 0:
        raise ValueError("video counts must be >= 0")
    if not 1 <= quality <= 100:
        raise ValueError("quality must be in 1..100")
    n_frames = int(round(seconds * fps))
    if n_frames < 4:
        raise ValueError("need at least 4 frames")
    args = _args_dict(seed=int(seed), n_train=int(n_train), n_val=int(n_val), n_test=int(n_test),
                      seconds=seconds, fps=fps, width=width, height=height,
                      sample_rate=int(sample_rate), quality=int(quality))
    marker = root / MARKER_NAME
    if _marker_matches(marker, args):
        return root

    root.mkdir(parents=True, exist_ok=True)
    progress = root / _PROGRESS_NAME
    resume = _marker_matches(progress, args)
    marker.unlink(missing_ok=True)

    counts = {"train": int(n_train), "val": int(n_val), "test": int(n_test)}
    plans: list[ScenePlan] = []
    for split in SPLITS:
        n = counts[split]
        for i, vid in enumerate(video_ids(split, n)):
            plans.append(plan_video(
                vid, split, i, seed=seed, n_frames=n_frames, fps=fps, width=width, height=height,
                sample_rate=int(sample_rate),
                odd_rate=(split == "val" and i == n - 1),
                short=(split == "train" and i == n - 1),
            ))

    dirs = [root / s for s in ("split", "json", "wav", "video_imgs")]
    dirs += [root / "video_imgs" / p.video_id for p in plans]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
        _remove_temps(d)
    _remove_temps(root)
    if not resume:
        _cleanup_stale(root, plans)
        _atomic_write_text(progress, json.dumps({"version": DEMO_VERSION, "args": args}))

    # frames (the expensive part) in parallel chunks
    tasks = []
    for p in plans:
        for a in range(0, p.n_frames, _FRAMES_PER_TASK):
            tasks.append((p, a, min(a + _FRAMES_PER_TASK, p.n_frames),
                          str(root / "video_imgs" / p.video_id), int(quality), resume))
    total = len(plans) * n_frames
    if workers is None:
        workers = 1 if total < 1500 else min(os.cpu_count() or 1, len(tasks))
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            render_task(task)
    else:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            for _ in ex.map(render_task, tasks):
                pass

    # audio, annotations, split lists
    for p in plans:
        write_wav(root / "wav" / f"{p.video_id}.wav", synth_audio(p), p.wav_rate)
    for split in SPLITS:
        vids = [p for p in plans if p.split == split]
        doc = {"videos": [{"video_uid": p.video_id, "clips": [clip_json(p)]} for p in vids]}
        _atomic_write_text(root / "json" / f"av_{split}.json", json.dumps(doc))
        _atomic_write_text(root / "split" / f"{split}.list", "".join(f"{p.video_id}\n" for p in vids))

    truth = {
        "version": DEMO_VERSION,
        "args": args,
        "videos": {
            p.video_id: {
                "split": p.split,
                "n_frames": p.n_frames,
                "fps": p.fps,
                "wav_sample_rate": p.wav_rate,
                "wav_channels": p.wav_channels,
                "wav_samples": p.wav_samples,
                "wav_short": p.wav_samples < int(round(p.n_frames * p.wav_rate / p.fps)),
            }
            for p in plans
        },
    }
    _atomic_write_text(marker, json.dumps(truth, indent=1, sort_keys=True) + "\n")
    progress.unlink(missing_ok=True)
    return root


def demo_truth(root) -> dict:
    """The marker of a finished demo corpus: ``{"version", "args", "videos": {id: facts}}``
    where facts are split, n_frames, fps, wav_sample_rate, wav_channels, wav_samples, wav_short."""
    m = _read_json(Path(root) / MARKER_NAME)
    if not isinstance(m, dict) or "videos" not in m:
        raise FileNotFoundError(f"no finished demo corpus at {root}")
    return m


# --------------------------------------------------------------------------- CLI


def _build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m shardgen.demo.corpus",
        description=(
            "Generate a small deterministic synthetic corpus in the Ego4D-style source layout "
            "(split/*.list, video_imgs/<id>/img_%%05d.jpg, wav/<id>.wav, json/av_<split>.json). "
            "Each video shows two face-like persons whose mouths move with their voices, plus a "
            "camera wearer who is heard but not seen. The last val video's wav is 48 kHz stereo "
            "and the last train video's wav is 0.5 s short. Re-running with the same arguments "
            "is a no-op."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--out", required=True, type=Path, help="corpus root directory to write")
    ap.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    ap.add_argument("--n-train", type=int, default=3, help="number of train videos")
    ap.add_argument("--n-val", type=int, default=2, help="number of val videos")
    ap.add_argument("--n-test", type=int, default=1, help="number of test videos")
    ap.add_argument("--seconds", type=float, default=45.0, help="duration of each video in seconds")
    ap.add_argument("--fps", type=int, default=30, help="frames per second")
    ap.add_argument("--width", type=int, default=640, help="frame width in pixels")
    ap.add_argument("--height", type=int, default=360, help="frame height in pixels")
    ap.add_argument("--sample-rate", type=int, default=16000,
                    help="sample rate of the (mono) wavs; the odd val wav is always 48000 Hz stereo")
    ap.add_argument("--quality", type=int, default=85, help="JPEG quality (baseline JPEG)")
    ap.add_argument("--workers", type=int, default=None,
                    help="frame-rendering processes (default: CPU count); does not change the output")
    return ap


def main(argv=None) -> int:
    a = _build_parser().parse_args(argv)
    t0 = time.perf_counter()
    already = _marker_matches(a.out / MARKER_NAME, _args_dict(
        seed=a.seed, n_train=a.n_train, n_val=a.n_val, n_test=a.n_test, seconds=float(a.seconds),
        fps=a.fps, width=a.width, height=a.height, sample_rate=a.sample_rate, quality=a.quality))
    root = make_demo_corpus(
        a.out, seed=a.seed, n_train=a.n_train, n_val=a.n_val, n_test=a.n_test, seconds=a.seconds,
        fps=a.fps, width=a.width, height=a.height, sample_rate=a.sample_rate, quality=a.quality,
        workers=a.workers,
    )
    n = len(demo_truth(root)["videos"])
    verb = "already complete" if already else f"generated in {time.perf_counter() - t0:.1f} s"
    print(f"demo corpus at {root}: {n} videos, {verb}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

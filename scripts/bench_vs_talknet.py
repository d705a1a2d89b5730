#!/usr/bin/env python3
"""`make bench`: avshards ``batch_frames`` against TalkNet-ASD's own training input, same tracks, same run.

TalkNet's users train from a preprocessing pass's output (AVA's ``clips_videos`` / ``clips_audios``
layout): every face track extracted into 224x224 colour JPEGs named by timestamp, one 16 kHz wav
per track, and a trial list. This script builds that layout from the very shards it benchmarks
(same tracks, same frames, same labels) and times, interleaved, best of ``--rounds``:

* **talknet** — a loader written here from TalkNet-ASD's published ``dataLoader.train_loader``:
  the trial list sorted by (length, index) descending and cut into frame-budget mini-batches;
  per batch every track's wav read with ``scipy.io.wavfile``, the noise ``overlap`` with another
  track of the batch (SNR -5..5 dB, half the time), ``python_speech_features.mfcc`` with its
  window for the fps, wrap-padded and cut to 4T rows; faces found with ``glob``, sorted by their
  timestamp names, ``cv2.imread`` + ``cvtColor(BGR2GRAY)`` + ``resize(112, 112)``, one of
  orig / flip / crop 70-100 % / rotate +-15 deg per track (``cv2.flip``, ``cv2.resize``,
  ``cv2.warpAffine``); ``torch.FloatTensor`` out, ``DataLoader(batch_size=1, shuffle=True)``;
* **avshards plain** — ``make_loader(mode="asd-tracks", batch_frames=2500, augment=True)`` on the
  plain shards (crops cut from the full frames);
* **avshards crops** — the same on shards built with ``--derive crops`` (stored 112x112 crops);
* **avshards plain + crop cache** — plain shards with ``crop_cache_dir``: its first epoch cuts the crops
  and writes the cache (shown on its own), the later ones read it;
* **decode ceiling** — plain shards' bound: the decodes an epoch makes (each frame of a batch once per
  DCT scale; at full scale only the faces' region), recorded from one real epoch and timed alone on
  bytes held in memory; delivered frames over that time is what plain shards could reach if nothing
  else cost anything;

with 1 and 2 DataLoader workers, on the demo corpus at 640x360 and at 1920x1080 (4 videos of
45 s, 5 s clips). Each variant's loader is made once, before any timing, and runs one epoch a
round, as a training script holds one loader for every epoch (the DataLoader's workers start anew
each epoch, for both); the variants take turns within a round so a busy moment of this shared
machine does not land on one of them only, and the ratios are of the best epoch of each. Prints a
Markdown table.

``--quick``: one corpus (640x360), two rounds, one worker (a smoke run).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

BENCH = ROOT / ".bench" / "vs_talknet"
BUDGET = 2500  # TalkNet's --batchSize default, in frames
CROP_SIDE = 224  # TalkNet's stored face crops
FACE = 112
LAYOUT_VERSION = 1


# --------------------------------------------------------------------------- corpora


SIZES = {"640x360": (640, 360), "1920x1080": (1920, 1080)}
VARIANTS = ("talknet", "plain", "crops", "cache")


def corpora(sizes: list[str]) -> dict[str, dict[str, Path]]:
    from bench import corpus  # scripts/bench.py: the demo corpus and its plain and derived builds

    return {label: corpus(f"vs_talknet_{SIZES[label][1]}p", *SIZES[label], 45.0, 4, clip_seconds=5.0, derive=("crops",))
            for label in sizes}


def talknet_layout(split: Path, out: Path) -> Path:
    """TalkNet's AVA-style files for every face track of ``split`` (built once, cached under ``out``).

    ``clips_videos/<video>/<entity>/<t:.2f>.jpg``: 224x224 colour JPEGs (``cv2.imwrite``'s default
    quality, as TalkNet's preprocessing writes them) of the track's face, the same TalkNet window as
    avshards' crops (its central half, which a resize to 112 turns into that crop);
    ``clips_audios/<video>/<entity>.wav``: exactly the track's audio; ``train_loader.csv``: one
    line per track, ``entity \\t frames \\t fps \\t [labels] \\t index``. The video name is the
    entity's first 11 characters, as TalkNet's loader takes it.
    """
    import cv2
    from scipy.io import wavfile

    from loaders.modes import track_audio
    from shardgen.core.crops import interpolate_boxes, talknet_crop
    from shardgen.core.decode import rgb_frame
    from shardgen.core.sources import read_clip, resolve

    marker = out / "layout.json"
    if marker.exists() and json.loads(marker.read_text()).get("version") == LAYOUT_VERSION:
        return out
    src = resolve(str(split))
    videos: dict[str, str] = {}
    lines = []
    for row in range(len(src.clips)):  # the clips in shard order, each read whole through the core's clip reader
        sample = read_clip(src, row)
        m = sample.meta
        video = videos.setdefault(m["video_id"], f"v{len(videos):010d}")  # 11 characters
        for p, first, n in src.clips.tracks(row):
            entity = f"{video}_{m['start_frame'] + first:06d}_{m['persons'][p]['person_id']}"
            folder = out / "clips_videos" / video / entity
            folder.mkdir(parents=True, exist_ok=True)
            boxes, _ = interpolate_boxes(sample.boxes[p, first:first + n].astype(np.float64))
            for i in range(n):
                rgb = rgb_frame(sample.frame(first + i))
                crop = np.stack([talknet_crop(rgb[..., c], boxes[i], out_size=CROP_SIDE) for c in range(3)], -1)
                t = (m["start_frame"] + first + i) / m["fps"]
                cv2.imwrite(str(folder / f"{t:.2f}.jpg"), crop[..., ::-1])
            audio, sr = track_audio(sample, (p, first, n))
            (out / "clips_audios" / video).mkdir(parents=True, exist_ok=True)
            wavfile.write(out / "clips_audios" / video / f"{entity}.wav", sr, np.asarray(audio))
            labels = ",".join(str(int(v)) for v in sample.speaking[p, first:first + n])
            lines.append(f"{entity}\t{n}\t{m['fps']}\t[{labels}]\t{len(lines)}")
    (out / "train_loader.csv").write_text("\n".join(lines) + "\n")
    marker.write_text(json.dumps({"version": LAYOUT_VERSION, "tracks": len(lines)}))
    return out


# --------------------------------------------------------------------------- TalkNet's loader (baseline)


class TalkNetTrainLoader:
    """What TalkNet-ASD's ``dataLoader.train_loader`` does, written here from its published code:
    the same library calls, the same augmentation draws, the same MFCC window."""

    def __init__(self, root: Path, batch_size: int = BUDGET):
        self.audio_path = root / "clips_audios"
        self.visual_path = root / "clips_videos"
        lines = (root / "train_loader.csv").read_text().splitlines()
        lines = sorted(lines, key=lambda s: (int(s.split("\t")[1]), int(s.split("\t")[-1])), reverse=True)
        self.batches = []
        start = 0
        while True:
            length = int(lines[start].split("\t")[1])
            end = min(len(lines), start + max(int(batch_size / length), 1))
            self.batches.append(lines[start:end])
            if end == len(lines):
                break
            start = end

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int):
        import torch
        from scipy.io import wavfile

        batch = self.batches[index]
        n_frames = int(batch[-1].split("\t")[1])
        audio_set = {}
        for line in batch:
            name = line.split("\t")[0]
            _, audio_set[name] = wavfile.read(os.path.join(self.audio_path, name[:11], name + ".wav"))
        audio, faces, labels = [], [], []
        for line in batch:
            data = line.split("\t")
            audio.append(self._audio(data, n_frames, audio_set))
            faces.append(self._visual(data, n_frames))
            labels.append(np.array([int(v) for v in data[3].strip("[]").split(",")][:n_frames]))
        return (torch.FloatTensor(np.array(audio)), torch.FloatTensor(np.array(faces)),
                torch.LongTensor(np.array(labels)))

    @staticmethod
    def _overlap(name: str, audio: np.ndarray, audio_set: dict) -> np.ndarray:
        noise = audio_set[random.sample(sorted(set(audio_set) - {name}), 1)[0]]
        snr = [random.uniform(-5, 5)]
        if len(noise) < len(audio):
            noise = np.pad(noise, (0, len(audio) - len(noise)), "wrap")
        else:
            noise = noise[:len(audio)]
        noise_db = 10 * np.log10(np.mean(abs(noise ** 2)) + 1e-4)
        clean_db = 10 * np.log10(np.mean(abs(audio ** 2)) + 1e-4)
        noise = np.sqrt(10 ** ((clean_db - noise_db - snr) / 10)) * noise
        return (audio + noise).astype(np.int16)

    def _audio(self, data: list[str], n_frames: int, audio_set: dict) -> np.ndarray:
        import python_speech_features

        name, fps = data[0], float(data[2])
        audio = audio_set[name]
        if random.randint(0, 1) == 1 and len(audio_set) > 1:  # TalkNet's batches of one track have no other audio
            audio = self._overlap(name, audio, audio_set)
        mfcc = python_speech_features.mfcc(audio, 16000, numcep=13, winlen=0.025 * 25 / fps, winstep=0.010 * 25 / fps)
        rows = int(n_frames * 4)
        if mfcc.shape[0] < rows:
            mfcc = np.pad(mfcc, ((0, rows - mfcc.shape[0]), (0, 0)), "wrap")
        return mfcc[:int(round(n_frames * 4)), :]

    def _visual(self, data: list[str], n_frames: int) -> np.ndarray:
        import cv2

        name = data[0]
        files = glob.glob(f"{os.path.join(self.visual_path, name[:11], name)}/*.jpg")
        files = sorted(files, key=lambda f: float(f.split("/")[-1][:-4]))
        H = FACE
        new = int(H * random.uniform(0.7, 1))
        x, y = np.random.randint(0, H - new), np.random.randint(0, H - new)
        M = cv2.getRotationMatrix2D((H / 2, H / 2), random.uniform(-15, 15), 1)
        kind = random.choice(["orig", "flip", "crop", "rotate"])
        faces = []
        for f in files[:n_frames]:
            face = cv2.resize(cv2.cvtColor(cv2.imread(f), cv2.COLOR_BGR2GRAY), (H, H))
            if kind == "orig":
                faces.append(face)
            elif kind == "flip":
                faces.append(cv2.flip(face, 1))
            elif kind == "crop":
                faces.append(cv2.resize(face[y:y + new, x:x + new], (H, H)))
            else:
                faces.append(cv2.warpAffine(face, M, (H, H)))
        return np.array(faces)


# --------------------------------------------------------------------------- one epoch of each variant


def talknet_loader(root: Path, workers: int):
    import torch

    return torch.utils.data.DataLoader(TalkNetTrainLoader(root), batch_size=1, shuffle=True, num_workers=workers)


def epoch_talknet(dl, epoch: int) -> tuple[int, float]:
    import torch

    t = time.perf_counter()
    frames = 0
    for audio, faces, labels in dl:
        assert faces.dtype == torch.float32 and audio.shape[2] == 4 * faces.shape[2]
        frames += faces.shape[1] * faces.shape[2]
    return frames, time.perf_counter() - t


def avshards_loader(split: Path, workers: int, **kw):
    import loaders

    return loaders.make_loader(split, mode="asd-tracks", batch_frames=BUDGET, augment=True, num_workers=workers, seed=0,
                               **kw)


def epoch_avshards(ld, epoch: int) -> tuple[int, float]:
    import torch

    t = time.perf_counter()
    ld.set_epoch(epoch)
    frames = 0
    for audio, faces, labels in ld:
        assert faces.dtype == torch.float32 and audio.shape[1] == 4 * faces.shape[1]
        frames += faces.shape[0] * faces.shape[1]
    return frames, time.perf_counter() - t


def decode_ceiling(split: Path, repeat: int = 3) -> tuple[int, float]:
    """Delivered frames of an epoch, and the best time to do only its decodes (see the module doc): the decode
    calls one real epoch makes (each frame of a batch once per DCT scale; at full scale, the faces' region)
    recorded, then replayed alone on bytes in memory."""
    import loaders
    import shardgen.core.track_crops as faces  # where the loader's crops are cut

    calls = []
    real = {name: getattr(faces, name) for name in ("decode_gray", "decode_gray_region")}

    def recorder(name):
        def record(data, *args, **kw):
            calls.append((real[name], bytes(data), args, kw))
            return real[name](data, *args, **kw)
        return record

    ld = loaders.make_loader(split, mode="asd-tracks", batch_frames=BUDGET, num_workers=0)
    try:
        for name in real:
            setattr(faces, name, recorder(name))
        frames = sum(faces_.shape[0] * faces_.shape[1] for _, faces_, _ in ld)
    finally:
        for name, fn in real.items():
            setattr(faces, name, fn)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for fn, data, args, kw in calls:
            fn(data, *args, **kw)
        best = min(best, time.perf_counter() - t)
    return frames, best


def measure(corpora_: dict, workers: list[int], rounds: int, names: tuple[str, ...] = VARIANTS,
            ceiling: bool = True) -> list[dict]:
    import shutil

    variants = []
    for label, c in corpora_.items():
        layout = talknet_layout(c["plain"], c["plain"].parent.parent / "talknet")
        for w in workers:
            cache = c["plain"].parent.parent / f"crop_cache_{w}w"
            shutil.rmtree(cache, ignore_errors=True)  # its first epoch is a cold one
            loaders_ = {"talknet": lambda w=w, r=layout: talknet_loader(r, w),
                        "plain": lambda w=w, s=c["plain"]: avshards_loader(s, w),
                        "crops": lambda w=w, s=c["derived"]: avshards_loader(s, w),
                        "cache": lambda w=w, s=c["plain"], d=cache: avshards_loader(s, w, crop_cache_dir=d)}
            variants += [{"corpus": label, "workers": w, "name": n, "loader": loaders_[n](),
                          "run": epoch_talknet if n == "talknet" else epoch_avshards} for n in VARIANTS if n in names]
    for v in variants:
        v["best"], v["frames"], v["first"] = 0.0, None, None
    for r in range(rounds):
        for v in variants:
            frames, secs = v["run"](v["loader"], r)
            # one reader reads every batch; with 2, remainder="drop" sits a different batch out each epoch
            assert v["workers"] > 1 or v["frames"] in (None, frames), \
                f"{v['name']}: {frames} frames, an earlier epoch had {v['frames']}"
            if v["name"] == "cache" and v["first"] is None:
                v["first"] = frames / secs  # the cold epoch: it cuts and writes the crops
            elif frames / secs > v["best"]:
                v["best"], v["frames"] = frames / secs, frames
            print(f"  round {r + 1}: {v['corpus']} {v['name']} {v['workers']}w {frames / secs:,.0f} frames/s",
                  file=sys.stderr, flush=True)
    for label, c in (corpora_.items() if ceiling else ()):
        frames, secs = decode_ceiling(c["plain"])
        variants.append({"corpus": label, "workers": 1, "name": "ceiling", "frames": frames, "best": frames / secs,
                         "first": None})
    return variants


def table(variants: list[dict]) -> str:
    names = {"talknet": "TalkNet's loader over its pre-extracted crops",
             "plain": "avshards `batch_frames`, plain shards",
             "crops": "avshards `batch_frames`, `--derive crops` shards",
             "cache": "avshards `batch_frames`, plain shards + crop cache, later epochs",
             "ceiling": "plain shards' decode ceiling (the epoch's decodes only, 1 core)"}
    base = {(v["corpus"], v["workers"]): v["best"] for v in variants if v["name"] == "talknet"}
    out = ["| frames | workers | loader | frames/epoch | frames/s | vs TalkNet |", "|---|---:|---|---:|---:|---:|"]
    for v in variants:
        rows = [(names[v["name"]], v["best"])]
        if v["first"] is not None:
            rows.insert(0, ("avshards `batch_frames`, plain shards + crop cache, first epoch (writes it)", v["first"]))
        for name, rate in rows:
            out.append(f"| {v['corpus']} | {v['workers']} | {name} | {v['frames']:,} | {rate:,.0f} | "
                       f"{rate / base[v['corpus'], v['workers']]:.2f}x |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="epochs of each variant, taking turns; the best counts")
    ap.add_argument("--workers", default="1,2", help="DataLoader worker counts, comma-separated")
    ap.add_argument("--sizes", default=",".join(SIZES), help=f"frame sizes, comma-separated, of {', '.join(SIZES)}")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"loaders to time, comma-separated, of {', '.join(VARIANTS)} (talknet is the baseline: keep it)")
    ap.add_argument("--no-ceiling", action="store_true", help="skip the plain shards' decode ceiling")
    ap.add_argument("--quick", action="store_true", help="640x360 only, two rounds, one worker (smoke run)")
    args = ap.parse_args()
    rounds, workers = (2, [1]) if args.quick else (args.rounds, [int(w) for w in args.workers.split(",")])
    sizes = ["640x360"] if args.quick else args.sizes.split(",")
    names = tuple(args.variants.split(","))
    for bad in [s for s in sizes if s not in SIZES] + [n for n in names if n not in VARIANTS]:
        raise SystemExit(f"unknown size or variant {bad!r}")
    if "talknet" not in names:
        raise SystemExit("--variants must include talknet: every ratio is to it")
    if rounds < 2:
        raise SystemExit("--rounds must be at least 2 (the crop cache's first epoch is shown on its own)")
    variants = measure(corpora(sizes), workers, rounds, names, ceiling=not args.no_ceiling)
    print(f"\nbatch_frames={BUDGET}, augmentation on, best of {rounds} interleaved epochs\n")
    print(table(variants))


if __name__ == "__main__":
    main()

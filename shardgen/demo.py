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

CLI: ``python -m shardgen.demo --out DIR [--seconds S] [--width W] ...``
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .core.storage.atomic import atomic_file

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

DEMO_VERSION = 1
MARKER_NAME = ".demo_complete.json"
_PROGRESS_NAME = ".demo_inprogress.json"
ODD_RATE = 48000  # sample rate of the stereo val wav
SHORT_WAV_SECONDS = 0.5  # how much shorter the short train wav is
SPLITS = ("train", "val", "test")
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
_DEMO_NAME = re.compile(r"^demo_(train|val|test)_\d{3,}(\.wav)?$")
_FRAMES_PER_TASK = 256
# face colours; each video uses the two that contrast most with its background
SKIN_COLOURS = ((224, 172, 135), (171, 118, 84), (241, 200, 165), (141, 93, 62), (120, 150, 205))


# --------------------------------------------------------------------------- helpers


def video_ids(split: str, n: int) -> list[str]:
    """The ids ``make_demo_corpus`` uses for ``n`` videos of ``split``."""
    return [f"demo_{split}_{i:03d}" for i in range(n)]


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path, durable=False) as f:  # the one atomic write (no fsync: the demo can be regenerated)
        f.write(data)


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write_bytes(path, text.encode("utf-8"))


def _remove_temps(d: Path) -> None:
    if d.is_dir():
        for p in d.glob(".*.tmp"):
            p.unlink(missing_ok=True)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- plan


@dataclass
class _Face:
    """Per-frame drawing state of one visible person (arrays over all frames)."""

    pid: str
    visible: np.ndarray  # bool [N]
    x0: np.ndarray  # int [N] left column of face ellipse
    y0: np.ndarray  # int [N] top row
    w: np.ndarray  # int [N] face width in pixels
    h: np.ndarray  # int [N]
    mouth: np.ndarray  # float [N] openness 0..1
    blink: np.ndarray  # bool [N]
    skin: tuple
    hair: tuple
    shirt: tuple
    intervals: list  # [(start, end_exclusive)] visible frame ranges


@dataclass
class _Voice:
    pid: str
    segments: list  # [(start_frame, end_frame_inclusive)]
    f0: float
    syl_rate: float
    syl_phase: float
    vib_phase: float
    gain: float
    pan: float  # 0 = left, 1 = right (stereo wav only)


@dataclass
class _VideoPlan:
    video_id: str
    split: str
    n_frames: int
    fps: int
    width: int
    height: int
    bg: np.ndarray  # uint8 [H+2m, W+2m, 3]
    pan_x: np.ndarray  # int [N]
    pan_y: np.ndarray  # int [N]
    faces: list
    voices: list
    wav_rate: int
    wav_channels: int
    wav_samples: int
    audio_seed: np.random.SeedSequence


def _syllable_env(t: np.ndarray, rate: float, phase: float) -> np.ndarray:
    """Syllable-rate envelope in [0, 1] (~``rate`` Hz, slightly irregular)."""
    ph = 2 * np.pi * (rate * t + 0.12 * np.sin(2 * np.pi * 0.37 * t + phase)) + phase
    return (0.5 - 0.5 * np.cos(ph)) ** 1.5


def _smooth_unit(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Smooth motion in [-1, 1]: sum of two slow sinusoids."""
    a1, a2 = rng.uniform(0.04, 0.12), rng.uniform(0.15, 0.35)
    p1, p2 = rng.uniform(0, 2 * np.pi, 2)
    return 0.65 * np.sin(2 * np.pi * a1 * t + p1) + 0.35 * np.sin(2 * np.pi * a2 * t + p2)


def _background(rng: np.random.Generator, H: int, W: int) -> np.ndarray:
    """Gradient plus low-frequency colour texture plus stripes plus fine grain."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    base = rng.uniform(60, 190, 3).astype(np.float32)
    tilt = rng.uniform(-50, 50, 3).astype(np.float32)
    g = (xx / max(W - 1, 1))[..., None] * tilt + (yy / max(H - 1, 1))[..., None] * (0.6 * tilt[::-1])
    img = base + g
    # low-frequency blobs: coarse noise upsampled bilinearly
    ch, cw = 6, 10
    coarse = rng.normal(0, 22, (ch, cw, 3)).astype(np.float32)
    yi = yy / max(H - 1, 1) * (ch - 1)
    xi = xx / max(W - 1, 1) * (cw - 1)
    y0 = np.minimum(yi.astype(int), ch - 2)
    x0 = np.minimum(xi.astype(int), cw - 2)
    fy = (yi - y0)[..., None]
    fx = (xi - x0)[..., None]
    img += (
        coarse[y0, x0] * (1 - fy) * (1 - fx)
        + coarse[y0 + 1, x0] * fy * (1 - fx)
        + coarse[y0, x0 + 1] * (1 - fy) * fx
        + coarse[y0 + 1, x0 + 1] * fy * fx
    )
    # faint diagonal stripes (a "wall" texture) and grain
    period = rng.uniform(18, 40)
    img += (8 * np.sin(2 * np.pi * (xx + 0.5 * yy) / period))[..., None]
    img += rng.normal(0, 4, (H, W, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _visible_intervals(n: int, fps: int, rng: np.random.Generator, which: int) -> list:
    """Two visible frame ranges separated by a gap of a few seconds (scaled for short videos)."""
    dur = n / fps
    gap = max(1, int(round(min(rng.uniform(2.0, 4.0), 0.2 * dur) * fps)))
    if which == 0:
        start, end = 0, n
        gap_start = int(round(rng.uniform(0.25, 0.5) * n))
    else:
        start = int(round(rng.uniform(0.0, 0.08) * n))
        end = n - int(round(rng.uniform(0.0, 0.06) * n))
        gap_start = int(round(rng.uniform(0.55, 0.7) * n))
    gap_start = min(max(gap_start, start + 1), end - gap - 1)
    out = [(start, gap_start), (gap_start + gap, end)]
    return [(a, b) for a, b in out if b > a]


def _voice_turns(n: int, fps: int, rng: np.random.Generator, pids: list) -> dict:
    """Turn-taking schedule with occasional overlaps -> {pid: [(sf, ef_inclusive)]}."""
    dur = n / fps
    scale = min(1.0, dur / 15.0)  # short test videos get short turns so everyone speaks
    raw: dict = {p: [] for p in pids}
    first = [pids[i] for i in rng.permutation(len(pids))]  # everyone speaks early on
    t = rng.uniform(0.2, 1.0) * scale
    prev = None
    while t < dur:
        if first:
            spk = first.pop(0)
        else:
            choices = [p for p in pids if p != prev]
            spk = choices[int(rng.integers(len(choices)))]
        length = rng.uniform(0.8, 3.2) * scale
        raw[spk].append((t, t + length))
        if rng.random() < 0.25:  # next speaker starts before this one ends
            t = t + length - rng.uniform(0.2, 0.6) * scale
        else:
            t = t + length + rng.uniform(0.25, 1.4) * scale
        prev = spk
    out = {}
    for p, segs in raw.items():
        frames = []
        for a, b in sorted(segs):
            sf = int(round(a * fps))
            ef = min(int(round(b * fps)) - 1, n - 1)
            if ef < sf:
                continue
            if frames and sf <= frames[-1][1] + 1:
                frames[-1] = (frames[-1][0], max(frames[-1][1], ef))
            else:
                frames.append((sf, ef))
        out[p] = frames
    return out


def _speaking_mask(n: int, segments: list) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    for sf, ef in segments:
        m[sf : ef + 1] = True
    return m


def _plan_video(video_id: str, split: str, index: int, *, seed: int, n_frames: int, fps: int,
                width: int, height: int, sample_rate: int, odd_rate: bool, short: bool) -> _VideoPlan:
    ss = np.random.SeedSequence([int(seed), _SPLIT_CODE[split], index, DEMO_VERSION])
    bg_ss, plan_ss, audio_ss = ss.spawn(3)
    rng = np.random.default_rng(plan_ss)
    W, H, N = width, height, n_frames
    t = np.arange(N) / fps

    margin = max(4, int(round(0.04 * min(W, H))))
    bg = _background(np.random.default_rng(bg_ss), H + 2 * margin, W + 2 * margin)
    pan_x = np.round(margin * (1 + _smooth_unit(t, rng) * 0.95)).astype(int)
    pan_y = np.round(margin * (1 + _smooth_unit(t, rng) * 0.95)).astype(int)

    visible_pids = ["1", "2"]
    turns = _voice_turns(N, fps, rng, visible_pids + ["3"])
    voices = []
    f0s = {"1": rng.uniform(120, 140), "2": rng.uniform(185, 215), "3": rng.uniform(140, 175)}
    for pid, pan in zip(["1", "2", "3"], [0.2, 0.8, 0.5]):
        voices.append(_Voice(
            pid=pid, segments=turns[pid], f0=float(f0s[pid]),
            syl_rate=float(rng.uniform(3.5, 4.8)), syl_phase=float(rng.uniform(0, 2 * np.pi)),
            vib_phase=float(rng.uniform(0, 2 * np.pi)),
            gain=0.45 if pid == "3" else float(rng.uniform(0.22, 0.3)), pan=pan,
        ))

    # face geometry: person k lives in its half of the frame so the two never overlap;
    # the torso (1.6 face widths) also stays inside that half.
    half = W / 2.0
    h_cap = min(0.40 * H, (half - 6) / (1.6 * 0.75) / 1.12)
    faces = []
    bg_mean = bg.reshape(-1, 3).mean(axis=0)
    skins = sorted(SKIN_COLOURS, key=lambda c: -float(np.abs(np.asarray(c) - bg_mean).sum()))[:2]
    skins = [skins[i] for i in rng.permutation(2)]
    palette_hair = [(40, 28, 20), (90, 60, 30), (20, 20, 24), (150, 110, 60)]
    palette_shirt = [(40, 80, 160), (160, 50, 50), (50, 130, 70), (120, 120, 40), (90, 60, 130)]
    for k, pid in enumerate(visible_pids):
        hbase = min(rng.uniform(0.26, 0.36) * H, h_cap)
        hf = hbase * (1 + 0.12 * np.sin(2 * np.pi * rng.uniform(0.03, 0.08) * t + rng.uniform(0, 2 * np.pi)))
        h = np.maximum(np.round(hf).astype(int), 8)
        w = np.maximum(np.round(0.75 * hf).astype(int), 6)
        wmax, hmax = int(w.max()), int(h.max())
        lo_x, hi_x = k * half + 0.8 * wmax + 2, (k + 1) * half - 0.8 * wmax - 2
        if lo_x > hi_x:
            lo_x = hi_x = k * half + half / 2
        lo_y, hi_y = hmax / 2 + 2, min(H - hmax / 2 - 2, 0.62 * H)
        if lo_y > hi_y:
            lo_y = hi_y = H / 2
        cx = (lo_x + hi_x) / 2 + (hi_x - lo_x) / 2 * _smooth_unit(t, rng)
        cy = (lo_y + hi_y) / 2 + (hi_y - lo_y) / 2 * _smooth_unit(t, rng)
        x0 = np.clip(np.round(cx - w / 2).astype(int), 0, W - w)
        y0 = np.clip(np.round(cy - h / 2).astype(int), 0, H - h)
        intervals = _visible_intervals(N, fps, rng, k)
        visible = np.zeros(N, dtype=bool)
        for a, b in intervals:
            visible[a:b] = True
        v = voices[k]
        speaking = _speaking_mask(N, v.segments)
        env = _syllable_env(t, v.syl_rate, v.syl_phase)
        mouth = np.where(speaking, 0.2 + 0.8 * env, 0.0)
        # blinks: 3 frames every ~2.5-5 s
        blink = np.zeros(N, dtype=bool)
        tb = rng.uniform(0.5, 3.0)
        while tb < N / fps:
            f = int(tb * fps)
            blink[f : f + 3] = True
            tb += rng.uniform(2.5, 5.0)
        faces.append(_Face(
            pid=pid, visible=visible, x0=x0, y0=y0, w=w, h=h, mouth=mouth, blink=blink,
            skin=skins[k],
            hair=palette_hair[int(rng.integers(len(palette_hair)))],
            shirt=palette_shirt[int(rng.integers(len(palette_shirt)))],
            intervals=intervals,
        ))

    wav_rate = ODD_RATE if odd_rate else sample_rate
    wav_channels = 2 if odd_rate else 1
    wav_samples = int(round(N * wav_rate / fps))
    if short:
        wav_samples = max(0, wav_samples - int(round(SHORT_WAV_SECONDS * wav_rate)))
    return _VideoPlan(
        video_id=video_id, split=split, n_frames=N, fps=fps, width=W, height=H, bg=bg,
        pan_x=pan_x, pan_y=pan_y, faces=faces, voices=voices, wav_rate=wav_rate,
        wav_channels=wav_channels, wav_samples=wav_samples, audio_seed=audio_ss,
    )


# --------------------------------------------------------------------------- frames


def _draw_face(draw, f: _Face, i: int) -> None:
    x0, y0, w, h = int(f.x0[i]), int(f.y0[i]), int(f.w[i]), int(f.h[i])
    x1, y1 = x0 + w - 1, y0 + h - 1
    cx = x0 + (w - 1) / 2.0
    # torso first (below the face; clipped by the frame, never inside another person's half)
    draw.ellipse((cx - 0.8 * w, y1 - 0.1 * h, cx + 0.8 * w, y1 + 1.3 * h), fill=f.shirt)
    outline = tuple(max(0, c - 60) for c in f.skin)
    draw.ellipse((x0, y0, x1, y1), fill=f.skin, outline=outline, width=max(1, w // 40))
    draw.chord((x0, y0, x1, y1), 205, 335, fill=f.hair)
    # eyes
    ey = y0 + 0.42 * h
    ew, eh = max(1.0, 0.07 * w), max(1.0, 0.045 * h)
    if f.blink[i]:
        eh = 0.5
    for ex in (cx - 0.2 * w, cx + 0.2 * w):
        draw.ellipse((ex - ew, ey - eh, ex + ew, ey + eh), fill=(25, 25, 30))
    # mouth: a thin line when closed, an opening ellipse when speaking
    my = y0 + 0.72 * h
    mw = 0.18 * w
    mh = max(0.8, float(f.mouth[i]) * 0.11 * h)
    draw.ellipse((cx - mw, my - mh, cx + mw, my + mh), fill=(95, 25, 40))


def _render_frames(plan: _VideoPlan, start: int, stop: int, out_dir: str, quality: int,
                   skip_existing: bool) -> int:
    from PIL import Image, ImageDraw

    W, H = plan.width, plan.height
    bg = Image.fromarray(plan.bg)
    d = Path(out_dir)
    written = 0
    for i in range(start, stop):
        path = d / f"img_{i + 1:05d}.jpg"
        if skip_existing and path.exists():
            continue
        px, py = int(plan.pan_x[i]), int(plan.pan_y[i])
        im = bg.crop((px, py, px + W, py + H))
        draw = ImageDraw.Draw(im)
        for f in plan.faces:
            if f.visible[i]:
                _draw_face(draw, f, i)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=quality, optimize=False, progressive=False)
        _atomic_write_bytes(path, buf.getvalue())
        written += 1
    return written


def _render_task(args) -> int:
    return _render_frames(*args)


# --------------------------------------------------------------------------- audio


def _synth_audio(plan: _VideoPlan) -> np.ndarray:
    """int16 [samples] (mono) or [samples, 2] (stereo)."""
    sr, n, C = plan.wav_rate, plan.wav_samples, plan.wav_channels
    rng = np.random.default_rng(plan.audio_seed)
    out = rng.normal(0.0, 0.0015, (n, C))  # near-silent room noise everywhere
    fmax = min(4000.0, 0.45 * sr)
    for v in plan.voices:
        gains = [v.gain] if C == 1 else [v.gain * np.sqrt(1 - v.pan), v.gain * np.sqrt(v.pan)]
        for sf, ef in v.segments:
            a = int(round(sf * sr / plan.fps))
            b = min(int(round((ef + 1) * sr / plan.fps)), n)
            if b <= a:
                continue
            t = np.arange(a, b) / sr
            # pitch f(t) = f0 (1 + 0.10 sin(2pi 2.3 t + p) + 0.05 sin(2pi 0.5 t + p)); phase is its
            # exact integral, so any sample range gives the same waveform.
            p = v.vib_phase
            phase = 2 * np.pi * v.f0 * (
                t
                - 0.10 / (2 * np.pi * 2.3) * np.cos(2 * np.pi * 2.3 * t + p)
                - 0.05 / (2 * np.pi * 0.5) * np.cos(2 * np.pi * 0.5 * t + p)
            )
            sig = np.zeros_like(t)
            norm = 0.0
            k = 1
            while k * v.f0 * 1.16 < fmax:
                fk = k * v.f0
                amp = (1.0 / k) * (1 + 2.0 * np.exp(-(((fk - 650) / 180) ** 2))
                                   + 1.2 * np.exp(-(((fk - 1700) / 300) ** 2)))
                sig += amp * np.sin(k * phase)
                norm += amp
                k += 1
            sig /= max(norm, 1e-9)
            env = 0.1 + 0.9 * _syllable_env(t, v.syl_rate, v.syl_phase)
            ramp_n = min(int(0.015 * sr), (b - a) // 2)
            if ramp_n > 0:
                r = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp_n) / ramp_n)
                env[:ramp_n] *= r
                env[-ramp_n:] *= r[::-1]
            sig = (sig * 2.2 + 0.04 * rng.normal(0, 1, len(t))) * env
            for c in range(C):
                out[a:b, c] += gains[c] * sig
    pcm = np.clip(np.round(out * 32767.0), -32768, 32767).astype(np.int16)
    return pcm[:, 0] if C == 1 else pcm


def _write_wav(path: Path, pcm: np.ndarray, sr: int) -> None:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, pcm, sr, subtype="PCM_16", format="WAV")
    _atomic_write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------- annotations


def _clip_json(plan: _VideoPlan) -> dict:
    fps = plan.fps
    persons = []
    voices = {v.pid: v for v in plan.voices}
    for pid in ("1", "2", "3"):
        face = next((f for f in plan.faces if f.pid == pid), None)
        paths = []
        if face is not None:
            for k, (a, b) in enumerate(face.intervals):
                paths.append({
                    "track_id": f"{plan.video_id}_p{pid}_t{k}",
                    "track": [
                        {"frame": i, "x": float(face.x0[i]), "y": float(face.y0[i]),
                         "width": float(face.w[i]), "height": float(face.h[i])}
                        for i in range(a, b)
                    ],
                })
        persons.append({
            "person_id": pid,
            "camera_wearer": face is None,
            "tracking_paths": paths,
            "voice_segments": [
                {"start_frame": sf, "end_frame": ef, "start_time": sf / fps, "end_time": ef / fps,
                 "person": pid}
                for sf, ef in voices[pid].segments
            ],
        })
    return {"clip_uid": plan.video_id, "video_uid": plan.video_id, "persons": persons}


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
    plans: list[_VideoPlan] = []
    for split in SPLITS:
        n = counts[split]
        for i, vid in enumerate(video_ids(split, n)):
            plans.append(_plan_video(
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
            _render_task(task)
    else:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            for _ in ex.map(_render_task, tasks):
                pass

    # audio, annotations, split lists
    for p in plans:
        _write_wav(root / "wav" / f"{p.video_id}.wav", _synth_audio(p), p.wav_rate)
    for split in SPLITS:
        vids = [p for p in plans if p.split == split]
        doc = {"videos": [{"video_uid": p.video_id, "clips": [_clip_json(p)]} for p in vids]}
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
        prog="python -m shardgen.demo",
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

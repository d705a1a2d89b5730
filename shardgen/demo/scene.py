"""The demo corpus's scenes, planned before anything is drawn: every face, voice and box of a video.

Each video gets one seeded plan (:func:`plan_video`): a panning background, two face-like persons
with two visible intervals each and a mouth that opens with that person's syllable envelope, voice
turns for them and for the camera wearer, and the audio's rate and length (including the demo's
deliberate oddities). :func:`clip_json` writes the plan's annotations in Ego4D AV form. Pure
functions of the seed: drawing (:mod:`.demo_media`) and writing (:mod:`.demo`) only read plans.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEMO_VERSION = 1
ODD_RATE = 48000  # sample rate of the stereo val wav
SHORT_WAV_SECONDS = 0.5  # how much shorter the short train wav is
SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
# face colours; each video uses the two that contrast most with its background
SKIN_COLOURS = ((224, 172, 135), (171, 118, 84), (241, 200, 165), (141, 93, 62), (120, 150, 205))

# --------------------------------------------------------------------------- plan


@dataclass
class Face:
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
class Voice:
    pid: str
    segments: list  # [(start_frame, end_frame_inclusive)]
    f0: float
    syl_rate: float
    syl_phase: float
    vib_phase: float
    gain: float
    pan: float  # 0 = left, 1 = right (stereo wav only)


@dataclass
class ScenePlan:
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


def syllable_env(t: np.ndarray, rate: float, phase: float) -> np.ndarray:
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


def plan_video(video_id: str, split: str, index: int, *, seed: int, n_frames: int, fps: int,
                width: int, height: int, sample_rate: int, odd_rate: bool, short: bool) -> ScenePlan:
    ss = np.random.SeedSequence([int(seed), SPLIT_CODE[split], index, DEMO_VERSION])
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
        voices.append(Voice(
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
        env = syllable_env(t, v.syl_rate, v.syl_phase)
        mouth = np.where(speaking, 0.2 + 0.8 * env, 0.0)
        # blinks: 3 frames every ~2.5-5 s
        blink = np.zeros(N, dtype=bool)
        tb = rng.uniform(0.5, 3.0)
        while tb < N / fps:
            f = int(tb * fps)
            blink[f : f + 3] = True
            tb += rng.uniform(2.5, 5.0)
        faces.append(Face(
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
    return ScenePlan(
        video_id=video_id, split=split, n_frames=N, fps=fps, width=W, height=H, bg=bg,
        pan_x=pan_x, pan_y=pan_y, faces=faces, voices=voices, wav_rate=wav_rate,
        wav_channels=wav_channels, wav_samples=wav_samples, audio_seed=audio_ss,
    )


# --------------------------------------------------------------------------- annotations


def clip_json(plan: ScenePlan) -> dict:
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



"""The demo corpus's bytes: a plan's frames as JPEGs and its voices as a wav, written atomically.

Frames are rendered independently of each other (a worker count never changes a byte); the audio
is synthesised from the same syllable envelopes that open the faces' mouths.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw

from ..core.storage.atomic import atomic_file
from .scene import Face, ScenePlan, syllable_env


def write_atomically(path: Path, data: bytes) -> None:
    with atomic_file(path, durable=False) as f:  # the one atomic write (no fsync: the demo can be regenerated)
        f.write(data)

# --------------------------------------------------------------------------- frames


def draw_face(draw, f: Face, i: int) -> None:
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


def render_frames(plan: ScenePlan, start: int, stop: int, out_dir: str, quality: int,
                   skip_existing: bool) -> int:

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
                draw_face(draw, f, i)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=quality, optimize=False, progressive=False)
        write_atomically(path, buf.getvalue())
        written += 1
    return written


def render_task(args) -> int:
    return render_frames(*args)


# --------------------------------------------------------------------------- audio


def synth_audio(plan: ScenePlan) -> np.ndarray:
    """int16 [samples] (mono) or [samples, 2] (stereo)."""
    sr, n, C = plan.wav_rate, plan.wav_samples, plan.wav_channels
    rng = np.random.default_rng(plan.audio_seed)
    out = rng.normal(0.0, 0.0015, (n, C))  # near-silent room noise everywhere
    fmax = min(4000.0, 0.45 * sr)
    for v in plan.voices:
        gains = [v.gain] if C == 1 else [v.gain * np.sqrt(1 - v.pan), v.gain * np.sqrt(v.pan)]
        for seg_start, seg_end in v.segments:
            a = int(round(seg_start * sr / plan.fps))
            b = min(int(round((seg_end + 1) * sr / plan.fps)), n)
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
            env = 0.1 + 0.9 * syllable_env(t, v.syl_rate, v.syl_phase)
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


def write_wav(path: Path, pcm: np.ndarray, sr: int) -> None:

    buf = io.BytesIO()
    sf.write(buf, pcm, sr, subtype="PCM_16", format="WAV")
    write_atomically(path, buf.getvalue())



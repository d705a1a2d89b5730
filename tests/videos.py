"""Small video files for the tests (made with PyAV), and the ffmpeg command-line tool as the reference."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from shardgen.demo.videos import write_video
from tests.sources import SHARED

REAL_VIDEO = SHARED / "realdata" / "videos" / "short_hamilton_clip.mp4"
FFMPEG = shutil.which("ffmpeg")
_MISSING = "the ffmpeg command-line tool is not installed (make test installs it: scripts/install_test_services.sh)"
# CI (.ci/run) sets AVSHARDS_REQUIRE_TEST_SERVICES: there a missing ffmpeg fails the tests instead of skipping them
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None and not os.environ.get("AVSHARDS_REQUIRE_TEST_SERVICES"), reason=_MISSING)


def _ffmpeg() -> str:
    assert FFMPEG, _MISSING
    return FFMPEG


def moving_frames(n: int, fps, w: int = 96, h: int = 64):
    """Frames whose content depends on their time (a bar moving 4 px per 1/30 s over a gradient), so
    neighbouring frames differ clearly and a frame picked at the wrong time is measurably wrong."""
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        t30 = float(Fraction(i) / Fraction(fps) * 30)  # position in 1/30 s steps
        img = np.empty((h, w, 3), np.uint8)
        img[..., 0] = (xx * 2 + yy) % 256
        img[..., 1] = (yy * 3 + 40) % 256
        img[..., 2] = 90
        x = int(round(t30 * 4)) % (w - 10)
        img[8:h - 8, x:x + 10] = (250, 250, 250)
        img[2:6, : (i % w)] = (10, 10, 10)
        yield img


def noise_audio(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """Band-limited noise (unique under cross-correlation): float32 mono at ``sr``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(int(seconds * sr)).astype(np.float32)
    k = np.ones(4, np.float32) / 4  # gentle low-pass so AAC keeps it well
    return (np.convolve(x, k, mode="same") * 0.25).astype(np.float32)


def make_video(path: Path, fps, seconds: float, *, audio: bool = True, video_delay_s: float = 0.0,
               audio_delay_s: float = 0.0, size=(96, 64), gop: int = 15) -> Path:
    n = int(round(seconds * Fraction(fps)))
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, moving_frames(n, fps, *size), fps, audio=noise_audio(seconds + 0.2) if audio else None,
                       video_delay_s=video_delay_s, audio_delay_s=audio_delay_s, gop=gop)


def video_source(root: Path, videos: dict[str, dict], split: str = "train") -> Path:
    """A source directory with videos/<id>.mp4 for each {id: make_video kwargs (fps, seconds, ...)}."""
    (root / "split").mkdir(parents=True, exist_ok=True)
    (root / "split" / f"{split}.list").write_text("".join(f"{v}\n" for v in videos))
    for vid, kw in videos.items():
        kw = dict(kw)
        ext = kw.pop("ext", "mp4")
        make_video(root / "videos" / f"{vid}.{ext}", **kw)
    return root


def ffmpeg_frames(video: Path, fps, size: tuple[int, int]) -> np.ndarray:
    """``ffmpeg -i V -vf fps=FPS`` frames as RGB [N,H,W,3] (``-fps_mode passthrough``: the fps filter's
    frames as they are; the rawvideo/image2 muxers' default CFR mode would add copies of the first
    frame in front when the video starts after the file's start)."""
    w, h = size
    raw = subprocess.run([_ffmpeg(), "-v", "error", "-i", str(video), "-vf", f"fps={fps}", "-fps_mode", "passthrough",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)


def ffmpeg_wav(video: Path) -> np.ndarray:
    """``ffmpeg -i V -ac 1 -ar 16000 x.wav``: int16 mono; its sample 0 is at the audio stream's start."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "x.wav"
        subprocess.run([_ffmpeg(), "-v", "error", "-i", str(video), "-vn", "-ac", "1", "-ar", "16000", str(wav)],
                       check=True, capture_output=True)
        sr, x = wavfile.read(wav)
    assert sr == 16000
    return x


def ffprobe_starts(video: Path) -> dict[str, float]:
    """Each stream's start_time as ffprobe prints it: {"video": s, "audio": s}."""
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,start_time", "-of", "json",
                          str(video)], check=True, capture_output=True, text=True).stdout
    return {s["codec_type"]: float(s["start_time"]) for s in json.loads(out)["streams"]}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def xcorr_lag(x: np.ndarray, y: np.ndarray, max_lag: int) -> int:
    """The lag L (|L| <= max_lag) maximising sum_j x[j] * y[j + L] (normalised), by FFT."""
    x = x.astype(np.float64) - x.mean()
    y = y.astype(np.float64) - y.mean()
    n = 1 << int(np.ceil(np.log2(len(x) + len(y) + 1)))
    c = np.fft.irfft(np.fft.rfft(y, n) * np.conj(np.fft.rfft(x, n)), n)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    vals = np.concatenate([c[: max_lag + 1], c[n - max_lag:]])
    return int(lags[int(np.argmax(vals))])

"""Source wav → 16 kHz mono int16, and the exact sample range of a clip.

Any rate, channel count or PCM width is accepted: channels are averaged, other rates go
through soxr (a band-limited resampler, 'HQ' quality) — never sample dropping. A 16 kHz mono
16-bit file is read as int16 directly, so its samples reach the shard bit-exact (TalkNet reads
int16 with ``scipy.io.wavfile``; so does our loader).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ..core.format import SAMPLE_RATE, audio_sample_range
from .source import SourceError


@dataclass(frozen=True)
class VideoAudio:
    samples: np.ndarray  # int16 [N] at 16 kHz mono
    info: dict  # what the source file was, for the clip metadata


def load_video_audio(path: Path) -> VideoAudio:
    """Read a whole wav as 16 kHz mono int16 (cached per process: clips of a video share it)."""
    st = Path(path).stat()
    return _load_cached(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _load_cached(path: str, _size: int, _mtime: int) -> VideoAudio:
    try:
        info = sf.info(path)
        if info.samplerate == SAMPLE_RATE and info.channels == 1 and info.subtype == "PCM_16":
            data, sr = sf.read(path, dtype="int16")
            samples = np.ascontiguousarray(data)
        else:
            data, sr = sf.read(path, dtype="float32", always_2d=True)
            mono = data.mean(axis=1)
            if sr != SAMPLE_RATE:
                mono = soxr.resample(mono, sr, SAMPLE_RATE, quality="HQ")
            samples = np.clip(np.round(mono * 32768.0), -32768, 32767).astype(np.int16)
    except SourceError:
        raise
    except Exception as exc:  # soundfile raises its own error types for bad files
        raise SourceError(f"{path}: unreadable wav ({exc})") from None
    samples.setflags(write=False)
    return VideoAudio(
        samples,
        {"sample_rate": int(info.samplerate), "channels": int(info.channels), "subtype": info.subtype,
         "duration_s": round(info.frames / info.samplerate, 6),
         "resampled": info.samplerate != SAMPLE_RATE, "downmixed": info.channels != 1},
    )


def cut_clip_audio(audio: VideoAudio, start_frame: int, n_real: int, fps, pad_frames: int = 0) -> tuple[np.ndarray, int, int]:
    """Samples for frames [start, start+n_real+pad): (int16 samples, first sample index, zeros for a short wav).

    The range is ``[round(s/fps*sr), round(e/fps*sr))``. Source audio fills the real frames'
    part ``[round(s/fps*sr), round((s+n_real)/fps*sr))``; padded frames (tail policy ``pad``)
    get zeros, never the audio that follows them in the wav. When the wav ends before the real
    frames do, the rest of their part is zeros too, and that count is returned (it goes in the
    metadata as ``audio_padded_samples``).
    """
    a, b_real = audio_sample_range(start_frame, start_frame + n_real, fps)
    _, b = audio_sample_range(start_frame, start_frame + n_real + pad_frames, fps)
    part = audio.samples[a:b_real]
    short = (b_real - a) - len(part)
    if b - a > len(part):
        part = np.concatenate([part, np.zeros((b - a) - len(part), np.int16)])
    return part, a, short

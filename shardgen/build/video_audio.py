"""A video file's audio stream → 16 kHz mono int16, placed by container time.

Why: extracting a wav with ``ffmpeg -i V x.wav`` starts it at the audio stream's first sample and
the frames at the video stream's first frame, so whenever the two streams start at different
container times (0.852 s vs 0.008 s in the real test clip) the pair is out of sync by that
difference. Here the audio keeps its container time: sample k of :class:`StreamAudio` is at
``start + k / 16000`` seconds, ``start`` the first decoded sample's timestamp (after the decoder
drops encoder priming as the edit list / skip-samples side data say), and a clip takes the samples
at the container times of its frames, ``v0 + (start_frame + i) / fps``.

Decoding: PyAV (FFmpeg's decoders); channels are averaged and the rate converted by soxr's
streaming resampler at 'HQ' quality, as the wav path does, in a fixed chunking (the decoder's
frames), so the samples are the same on every run. A gap between frames' timestamps is filled with
zeros (counted); overlapping samples are dropped.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
import soxr

from ..core.format import SAMPLE_RATE, audio_sample_range, round_half_up
from .source import SourceError


@dataclass(frozen=True)
class StreamAudio:
    samples: np.ndarray  # int16 [N], 16 kHz mono
    start: Fraction  # container time of samples[0], seconds
    info: dict  # for the clip metadata's audio_source


def load_stream_audio(path: str, name: str, size: int, mtime_ns: int, stream: int) -> StreamAudio:
    """The whole audio stream at 16 kHz mono (cached per process: a video's clips share it)."""
    return _load(path, name, size, mtime_ns, stream)


def _to_float_channels(frame) -> np.ndarray:
    """[channels, n] float32 in [-1, 1) from any of FFmpeg's sample formats."""
    arr = frame.to_ndarray()
    ch = frame.layout.nb_channels
    if not frame.format.is_planar:
        arr = arr.reshape(-1, ch).T
    if arr.dtype == np.uint8:
        return (arr.astype(np.float32) - 128.0) / 128.0
    if arr.dtype.kind == "i":
        return arr.astype(np.float32) / float(2 ** (8 * arr.dtype.itemsize - 1))
    return arr.astype(np.float32)


@functools.lru_cache(maxsize=2)
def _load(path: str, name: str, _size: int, _mtime: int, stream: int) -> StreamAudio:
    chunks: list[np.ndarray] = []
    start = None
    next_sample = 0  # in input samples since `start`
    gap_samples = 0
    rate = channels = None
    codec = None
    try:
        with av.open(path) as container:
            a = container.streams[stream]
            codec = a.codec_context.name
            resampler = None
            for frame in container.decode(a):
                if frame.samples == 0:
                    continue
                if rate is None:
                    rate, channels = frame.sample_rate, frame.layout.nb_channels
                    start = Fraction(frame.pts if frame.pts is not None else 0) * frame.time_base
                    resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
                mono = _to_float_channels(frame).mean(axis=0)
                if frame.pts is not None:
                    at = round_half_up((Fraction(frame.pts) * frame.time_base - start) * rate)
                    if at > next_sample + rate // 1000:  # a gap of more than 1 ms: silence
                        zeros = at - next_sample
                        gap_samples += zeros
                        chunks.append(resampler.resample_chunk(np.zeros(zeros, np.float32)))
                        next_sample = at
                    elif at < next_sample - rate // 1000:  # overlap: drop what was already played
                        mono = mono[min(len(mono), next_sample - at):]
                if len(mono):
                    chunks.append(resampler.resample_chunk(np.ascontiguousarray(mono, np.float32)))
                    next_sample += len(mono)
            if resampler is not None:
                chunks.append(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
    except av.FFmpegError as exc:
        raise SourceError(f"{name}: audio stream could not be decoded ({exc})") from None
    if start is None:
        raise SourceError(f"{name}: the audio stream holds no samples")
    mono16 = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    samples = np.clip(np.round(mono16 * 32768.0), -32768, 32767).astype(np.int16)
    samples.setflags(write=False)
    return StreamAudio(samples, start, {
        "kind": "stream", "codec": codec, "sample_rate": int(rate), "channels": int(channels),
        "start_time": float(start), "duration_s": round(next_sample / rate, 6), "gap_samples_filled": int(gap_samples),
        "resampled": rate != SAMPLE_RATE, "downmixed": channels != 1,
    })


def cut_stream_audio(audio: StreamAudio | None, v0: Fraction, start_frame: int, n_real: int, fps,
                     pad_frames: int = 0) -> tuple[np.ndarray, int, int, int]:
    """A clip's samples by container time: ``(int16 samples, audio_start_sample, zeros before, zeros after)``.

    ``audio_start_sample`` counts from the video's first frame (v0), as for frame directories:
    ``round(start_frame / fps * 16000)``. Sample j of the clip is at container time
    ``v0 + (audio_start_sample + j) / 16000``; where the stream has no sample there (it starts
    later or ends earlier than the clip, or there is no audio stream: ``audio`` None) it is zero,
    and the zeros are counted. Padded frames (tail policy 'pad') get zeros, not counted as missing.
    """
    a, b_real = audio_sample_range(start_frame, start_frame + n_real, fps)
    _, b = audio_sample_range(start_frame, start_frame + n_real + pad_frames, fps)
    out = np.zeros(b - a, np.int16)
    if audio is None:
        return out, a, b_real - a, 0
    shift = round_half_up((v0 - audio.start) * SAMPLE_RATE)  # index in audio.samples of video-time sample 0
    lo, hi = a + shift, b_real + shift
    src_lo, src_hi = max(lo, 0), min(hi, len(audio.samples))
    if src_hi > src_lo:
        out[src_lo - lo:src_hi - lo] = audio.samples[src_lo:src_hi]
    before = min(b_real - a, max(0, -lo))
    after = (b_real - a) - before - max(0, src_hi - src_lo)
    return out, a, before, after

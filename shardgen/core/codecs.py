"""Member bytes ↔ arrays: the ``.npy`` label arrays and the wav / flac audio of the sample format.

:mod:`.format` says which members a clip has and what they hold; this module turns those
members into bytes and back, refusing (as :class:`~.format.FormatError`) anything that is not
what the format defines — never unpickling, never allocating what a header merely declares.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import soundfile as sf

from .format import AUDIO_EXTS, SAMPLE_RATE, FormatError

# --------------------------------------------------------------------------- arrays


def encode_npy(array: np.ndarray) -> bytes:
    """``.npy`` bytes of a plain numeric array (never object dtype: the loader refuses pickles)."""
    array = np.ascontiguousarray(array)
    if array.dtype.hasobject:
        raise FormatError("object arrays cannot be stored: they would need pickle")
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def decode_npy(data: bytes, *, name: str, dtype: str, ndim: int, max_bytes: int = 1 << 30) -> np.ndarray:
    """Decode ``.npy`` bytes without pickle and check dtype and rank; errors name the member."""
    if len(data) > max_bytes:
        raise FormatError(f"{name}: {len(data)} bytes exceeds the {max_bytes}-byte limit for a label array")
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # ValueError for pickles, others for garbage
        raise FormatError(f"{name}: not a valid .npy array ({exc})") from None
    if arr.dtype != np.dtype(dtype) or arr.ndim != ndim:
        raise FormatError(f"{name}: expected {dtype} with {ndim} dims, got {arr.dtype} {arr.shape}")
    return arr


# --------------------------------------------------------------------------- audio


def encode_wav(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """A canonical 44-byte-header PCM16 mono WAV (written by hand so the bytes never vary)."""
    pcm = np.ascontiguousarray(samples, dtype="<i2").tobytes()
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + len(pcm), b"WAVE", b"fmt ", 16, 1, 1,
        sample_rate, sample_rate * 2, 2, 16, b"data", len(pcm),
    )
    return header + pcm


def wav_size(n_samples: int) -> int:
    return 44 + 2 * n_samples


def encode_flac(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.ascontiguousarray(samples, dtype=np.int16), sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def encode_audio(samples: np.ndarray, ext: str, sample_rate: int = SAMPLE_RATE) -> bytes:
    if ext == "wav":
        return encode_wav(samples, sample_rate)
    if ext == "flac":
        return encode_flac(samples, sample_rate)
    raise FormatError(f"unknown audio format {ext!r}; use one of {AUDIO_EXTS}")


def decode_audio(data: bytes, ext: str, *, name: str = "audio") -> tuple[np.ndarray, int]:
    """Audio member bytes → (int16 mono samples, sample rate).

    Our own canonical WAV is parsed directly (a header check and ``np.frombuffer``, no copy
    through libsndfile); anything else goes through soundfile.
    """
    if ext == "wav" and len(data) >= 44 and data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt ":
        (fmt_len, tag, ch, sr, _br, _ba, bits) = struct.unpack("<IHHIIHH", data[16:36])
        if fmt_len == 16 and tag == 1 and ch == 1 and bits == 16 and data[36:40] == b"data":
            (n,) = struct.unpack("<I", data[40:44])
            if n % 2 or 44 + n > len(data):
                raise FormatError(f"{name}: WAV data chunk of {n} bytes does not fit in {len(data)} bytes")
            return np.frombuffer(data, dtype="<i2", count=n // 2, offset=44), sr
    if ext not in AUDIO_EXTS:
        raise FormatError(f"{name}: unknown audio format {ext!r}")
    try:
        samples, sr = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)
    except Exception as exc:
        raise FormatError(f"{name}: unreadable {ext} audio ({exc})") from None
    return samples[:, 0].copy() if samples.shape[1] == 1 else samples.mean(axis=1).astype(np.int16), sr

"""A clip read back from a shard: its members checked against the format, its arrays decoded.

:mod:`.format` defines what a clip's members are; :class:`ClipSample` is the reader's side of
that definition, shared by the loader and the tools (verify, inspect, preview).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .codecs import decode_audio, decode_npy
from .format import (AUDIO_EXTS, BOXES_EXT, LABEL_EXTS, META_EXT, SPEAKING_EXT, VISIBLE_EXT, VOICE_EXT, FormatError,
                     crop_ext, decode_metadata, frame_ext, gray_ext)


class ClipSample:
    """A clip's members, checked against the format: metadata, audio, label arrays, frame bytes.

    Built from the ``{ext: bytes}`` dict of one key (what a tar reader groups). Checking is
    cheap (no JPEG decoding): member set, dtypes, shapes agree with ``n_frames`` and the number
    of persons, frames are numbered 1..T without holes. Errors name the clip key.
    """

    __slots__ = ("key", "meta", "fields", "visible", "voice", "boxes", "speaking", "audio_ext", "_audio")

    def __init__(self, key: str, fields: Mapping[str, bytes], *, partial: bool = False, audio: bool = True):
        """``partial``: the caller read only some frame members (one face track's, say) and checks
        those itself; metadata, audio and label arrays are checked as always. ``audio=False`` (with
        ``partial``): the caller read no audio either, only metadata and labels (a clip's summary)."""
        self.key = key
        self.fields = fields
        if META_EXT not in fields:
            raise FormatError(f"{key}: no .json metadata member")
        meta = decode_metadata(fields[META_EXT], name=f"{key}.json")
        if meta["key"] != key:
            raise FormatError(f"{key}: metadata names another clip ({meta['key']!r})")
        self.meta = meta
        T = meta["n_frames"]
        P = len(meta["persons"])
        self.audio_ext = meta["audio_format"]
        if self.audio_ext not in AUDIO_EXTS or (audio and self.audio_ext not in fields):
            raise FormatError(f"{key}: audio member .{self.audio_ext} missing")
        for ext in LABEL_EXTS:
            if ext not in fields:
                raise FormatError(f"{key}: label member .{ext} missing")
        self.visible = decode_npy(fields[VISIBLE_EXT], name=f"{key}.{VISIBLE_EXT}", dtype="uint8", ndim=1)
        self.voice = decode_npy(fields[VOICE_EXT], name=f"{key}.{VOICE_EXT}", dtype="uint8", ndim=1)
        self.boxes = decode_npy(fields[BOXES_EXT], name=f"{key}.{BOXES_EXT}", dtype="float32", ndim=3)
        self.speaking = decode_npy(fields[SPEAKING_EXT], name=f"{key}.{SPEAKING_EXT}", dtype="uint8", ndim=2)
        if self.visible.shape != (T,) or self.voice.shape != (T,):
            raise FormatError(f"{key}: visible/voice arrays are not [{T}]")
        if self.boxes.shape != (P, T, 4) or self.speaking.shape != (P, T):
            raise FormatError(f"{key}: boxes {self.boxes.shape} / speaking {self.speaking.shape} do not match [{P},{T}]")
        if partial:
            return
        if meta.get("originals", True):
            for i in range(1, T + 1):
                if frame_ext(i) not in fields:
                    raise FormatError(f"{key}: frame member {frame_ext(i)} missing (clip has {T} frames)")
        if "g" in meta.get("derived", ()):
            for i in range(1, T + 1):
                if gray_ext(i) not in fields:
                    raise FormatError(f"{key}: derived gray member {gray_ext(i)} missing")

    @property
    def n_frames(self) -> int:
        return self.meta["n_frames"]

    def frame(self, i: int) -> bytes:
        """Original JPEG bytes of clip frame i (0-based)."""
        return self.fields[frame_ext(i + 1)]

    def gray(self, i: int) -> bytes | None:
        return self.fields.get(gray_ext(i + 1))

    def crop(self, person: int, i: int) -> bytes | None:
        return self.fields.get(crop_ext(person, i + 1))

    def audio(self) -> tuple[np.ndarray, int]:
        """The clip's samples (int16, read-only) and rate, decoded once: the tracks of one clip, and the
        noise mix of an augmented batch, all take their audio from here."""
        if getattr(self, "_audio", None) is None:
            samples, sr = decode_audio(self.fields[self.audio_ext], self.audio_ext, name=f"{self.key}.{self.audio_ext}")
            if sr != self.meta["sample_rate"] or len(samples) != self.meta.get("audio_samples", len(samples)):
                raise FormatError(f"{self.key}: audio has {len(samples)} samples at {sr} Hz, metadata says "
                                  f"{self.meta.get('audio_samples')} at {self.meta['sample_rate']} Hz")
            samples.setflags(write=False)
            self._audio = (samples, sr)
        return self._audio

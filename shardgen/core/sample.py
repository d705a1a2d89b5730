"""A clip read back from a shard: its members checked against the format, its arrays decoded.

:mod:`.format` defines what a clip's members are; :class:`ClipSample` is the reader's side of
that definition, shared by the loader and the tools (verify, inspect, preview, report, eval-gt).
:class:`Members` says which of a clip's members a read takes, so that a reader needing the labels
of every clip, or a few frames of one face track, does not read every frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import numpy as np

from .codecs import decode_audio, decode_npy
from .format import (AUDIO_EXTS, BOXES_EXT, LABEL_EXTS, META_EXT, SPEAKING_EXT, VISIBLE_EXT, VOICE_EXT, FormatError,
                     crop_ext, decode_metadata, frame_ext, gray_ext)


@dataclass(frozen=True)
class Members:
    """Which members of a clip a read takes; the others' data is passed over (seeked past on a local
    file), their tar headers still read and checked.

    The metadata is always taken: it is the clip's first member and says what else the clip holds.
    ``audio`` takes the audio member, ``labels`` the four label arrays, and ``frames(meta)`` names the
    picture members wanted (extensions: ``f000001.jpg``, ``g000001.jpg``, ``c00.000001.jpg``) once the
    metadata is known — see :func:`frame_members`. Reading every member is ``members=None``.
    """

    audio: bool = True
    labels: bool = True
    frames: Callable[[dict], Iterable[str]] | None = None

    def wanted(self, meta: dict) -> frozenset[str]:
        """The members (extensions, besides the metadata) a read must return for a clip with this metadata."""
        names: set[str] = set()
        if self.audio:
            names.add(meta["audio_format"])
        if self.labels:
            names.update(LABEL_EXTS)
        if self.frames is not None:
            names.update(self.frames(meta))
        return frozenset(names)


#: the metadata and the label arrays (what ``shardgen report`` and ``eval-gt`` read of every clip)
LABELS = Members(audio=False)


def frame_members(indices: Iterable[int]) -> Callable[[dict], set[str]]:
    """For :class:`Members`: the pictures of clip frames ``indices`` (0-based) — the original JPEGs, or the
    derived 112x112 gray frames of a clip built without originals (``--no-originals``)."""
    indices = tuple(int(i) for i in indices)

    def frames(meta: dict) -> set[str]:
        name = frame_ext if meta.get("originals", True) else gray_ext
        return {name(i + 1) for i in indices}

    return frames


class ClipSample:
    """A clip's members, checked against the format: metadata, audio, label arrays, frame bytes.

    Built from the ``{ext: bytes}`` dict of one key (what :func:`shardgen.core.clip_reader.iter_clips`
    groups). Checking is cheap (no JPEG decoding): member set, dtypes, shapes agree with ``n_frames``
    and the number of persons, frames are numbered 1..T without holes. Errors name the clip key.
    """

    __slots__ = ("key", "meta", "fields", "visible", "voice", "boxes", "speaking", "audio_ext", "_audio")

    def __init__(self, key: str, fields: Mapping[str, bytes], *, members: Members | None = None):
        """``members``: the read took only these (:class:`Members`); each of them must be here and is checked,
        and what was not taken is absent (``visible`` … ``speaking`` are None without the labels).
        ``None``: the whole clip was read, and every member the format requires must be here."""
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
        self._audio = None
        if self.audio_ext not in AUDIO_EXTS:
            raise FormatError(f"{key}: audio member .{self.audio_ext} missing")
        if members is not None:
            try:
                wanted = members.wanted(meta)
            except FormatError as exc:
                raise FormatError(f"{key}: {exc}") from None
            missing = sorted(wanted.difference(fields))
            if missing:
                raise FormatError(f"{key}: member .{missing[0]} missing")
        if (members is None or members.audio) and self.audio_ext not in fields:
            raise FormatError(f"{key}: audio member .{self.audio_ext} missing")
        self.visible = self.voice = self.boxes = self.speaking = None
        if members is None or members.labels:
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
        if members is not None:
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
        if self._audio is None:
            if self.audio_ext not in self.fields:
                raise FormatError(f"{self.key}: the audio member was not read")
            samples, sr = decode_audio(self.fields[self.audio_ext], self.audio_ext, name=f"{self.key}.{self.audio_ext}")
            if sr != self.meta["sample_rate"] or len(samples) != self.meta.get("audio_samples", len(samples)):
                raise FormatError(f"{self.key}: audio has {len(samples)} samples at {sr} Hz, metadata says "
                                  f"{self.meta.get('audio_samples')} at {self.meta['sample_rate']} Hz")
            samples.setflags(write=False)
            self._audio = (samples, sr)
        return self._audio

"""The avshards sample format: the one place that defines what a clip looks like in a shard.

Both halves import this module: the builder (``shardgen``) to encode a clip into tar members,
the loader (``loaders``) to check and decode them. Change the format here, bump
:data:`SCHEMA_VERSION`, and both sides follow.

A clip with key ``<video_id>/clip_f<start:06d>`` is stored as consecutive tar members::

    <video_id>/clip_f000450.json          metadata (see :func:`make_metadata`)
    <video_id>/clip_f000450.wav           16 kHz mono int16 audio (or .flac)
    <video_id>/clip_f000450.visible.npy   uint8 [T]      any face box in the frame
    <video_id>/clip_f000450.voice.npy     uint8 [T]      any voice segment covers the frame
    <video_id>/clip_f000450.boxes.npy     float32 [P,T,4] x,y,w,h (top-left, source pixels), NaN = absent
    <video_id>/clip_f000450.speaking.npy  uint8 [P,T]    person p's voice segment covers the frame
    <video_id>/clip_f000450.f000001.jpg   frame 1 of the clip: original JPEG bytes, never re-encoded
    ...
    <video_id>/clip_f000450.f000450.jpg
    <video_id>/clip_f000450.g000001.jpg   optional derived: 112x112 gray JPEG of the whole frame
    <video_id>/clip_f000450.c00.000001.jpg  optional derived: 112x112 TalkNet crop of person 0

WebDataset groups members by the part of the basename before its first dot, so the key is
``<video_id>/clip_fNNNNNN`` and the extensions above are the sample's fields; a video id may
contain dots (they sit in the directory part) but never ``/``.

Frame numbering: the clip's ``start_frame`` is the 0-based source frame index (Ego4D's
numbering); member ``f000001.jpg`` is source file ``img_{start_frame+1:05d}.jpg`` and shows
the instant ``start_frame / fps`` seconds into the video. Frame i (0-based in the clip) is at
``(start_frame + i) / fps``. Audio sample j is at ``(audio_start_sample + j) / sample_rate``
with ``audio_start_sample = round_half_up(start_frame / fps * sample_rate)``.
"""

from __future__ import annotations

import gc
import json
import re
from fractions import Fraction
from typing import Any, Mapping

import numpy as np

SCHEMA = "avshards/clip"
SCHEMA_VERSION = 1
SAMPLE_RATE = 16000
DERIVED_SIZE = 112  # derived g/c members are DERIVED_SIZE x DERIVED_SIZE gray JPEGs

META_EXT = "json"
AUDIO_EXTS = ("wav", "flac")
VISIBLE_EXT = "visible.npy"
VOICE_EXT = "voice.npy"
BOXES_EXT = "boxes.npy"
SPEAKING_EXT = "speaking.npy"
LABEL_EXTS = (VISIBLE_EXT, VOICE_EXT, BOXES_EXT, SPEAKING_EXT)

FRAME_DIGITS = 6
_FRAME_EXT_RE = re.compile(r"^f(\d{6})\.jpg$")
_GRAY_EXT_RE = re.compile(r"^g(\d{6})\.jpg$")
_CROP_EXT_RE = re.compile(r"^c(\d{2})\.(\d{6})\.jpg$")
_VIDEO_ID_RE = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$")
_KEY_RE = re.compile(r"^([A-Za-z0-9_\-][A-Za-z0-9_.\-]*)/clip_f(\d{6,})$")
MAX_PERSONS = 100  # crop member names give the person row two digits: c00 .. c99

# Fixed tar header fields so that the same clip always yields the same bytes.
TAR_MTIME = 0
TAR_MODE = 0o444
TAR_UID = TAR_GID = 0


class FormatError(ValueError):
    """A member or sample that does not follow this format (named in the message)."""


# --------------------------------------------------------------------------- names


def validate_video_id(video_id: str) -> str:
    """Video ids become tar directory names: refuse anything that could escape or confuse them."""
    if not isinstance(video_id, str) or not _VIDEO_ID_RE.match(video_id) or ".." in video_id:
        raise FormatError(
            f"video id {video_id!r} is not usable as a shard key: use letters, digits, '_', '-', '.' "
            "(not starting with '.', no '..', no '/')"
        )
    return video_id


def clip_key(video_id: str, start_frame: int) -> str:
    """``<video_id>/clip_f<start:06d>``: the clip's sample key, from its 0-based first source frame."""
    return f"{validate_video_id(video_id)}/clip_f{int(start_frame):06d}"


def parse_clip_key(key: str) -> tuple[str, int]:
    """Inverse of :func:`clip_key`; raises :class:`FormatError` for anything else."""
    m = _KEY_RE.match(key)
    if not m or ".." in key:
        raise FormatError(f"{key!r} is not a clip key of the form <video_id>/clip_fNNNNNN")
    return m.group(1), int(m.group(2))


def frame_ext(index: int) -> str:
    """Extension of the original JPEG of clip frame ``index`` (1-based)."""
    return f"f{index:0{FRAME_DIGITS}d}.jpg"


def gray_ext(index: int) -> str:
    """Extension of the derived 112x112 gray JPEG of clip frame ``index`` (1-based)."""
    return f"g{index:0{FRAME_DIGITS}d}.jpg"


def crop_ext(person: int, index: int) -> str:
    """Extension of the derived 112x112 TalkNet crop of ``person`` (0-based row) at frame ``index``.

    A clip's crops name persons 0..99 (:data:`MAX_PERSONS`): a clip with more persons cannot store crops
    (``c100.000001.jpg`` would not be a crop member to any reader), so asking for one is an error."""
    if not 0 <= person < MAX_PERSONS:
        raise FormatError(f"person row {person}: crop members name at most {MAX_PERSONS} persons a clip (c00..c99)")
    return f"c{person:02d}.{index:0{FRAME_DIGITS}d}.jpg"


def parse_frame_ext(ext: str) -> int | None:
    m = _FRAME_EXT_RE.match(ext)
    return int(m.group(1)) if m else None


def parse_gray_ext(ext: str) -> int | None:
    m = _GRAY_EXT_RE.match(ext)
    return int(m.group(1)) if m else None


def parse_crop_ext(ext: str) -> tuple[int, int] | None:
    m = _CROP_EXT_RE.match(ext)
    return (int(m.group(1)), int(m.group(2))) if m else None


def split_member_name(name: str, key: str | None = None) -> tuple[str, str]:
    """Split a tar member name into (clip key, extension), refusing unsafe names.

    The loader never trusts names from a tar: absolute paths, ``..`` parts, backslashes and
    anything that is not ``<video_id>/clip_fNNNNNN.<ext>`` are rejected with a FormatError.

    ``key``: a clip key already checked (the clip being read), whose members most names are. For a
    name ``<key>.<ext>`` the outcome is then decided without re-parsing the key — every check
    below passes for the key's part, so it is ``ext`` not empty and free of ``/``, ``\\`` and NUL
    — ~15x faster for the hundreds of members a clip's read walks; any other name takes the full
    path below. The result is the same either way (tests/test_one_read_path.py checks both on
    hostile names).
    """
    if key is not None and isinstance(name, str) and name.startswith(key) and name[len(key):len(key) + 1] == ".":
        ext = name[len(key) + 1:]
        if ext and "/" not in ext and "\\" not in ext and "\x00" not in ext:
            return key, ext
    if not isinstance(name, str) or not name or name.startswith("/") or "\\" in name or "\x00" in name:
        raise FormatError(f"unsafe member name {name!r}")
    parts = name.split("/")
    if len(parts) != 2 or any(p in ("", ".", "..") for p in parts):
        raise FormatError(f"unsafe member name {name!r}: expected <video_id>/clip_fNNNNNN.<ext>")
    base, dot, ext = parts[1].partition(".")
    if not dot or not ext:
        raise FormatError(f"member {name!r} has no extension")
    key = f"{parts[0]}/{base}"
    parse_clip_key(key)
    return key, ext


def member_order(ext: str) -> tuple:
    """Sort order of a clip's members: metadata, audio, labels, frames, derived members."""
    if ext == META_EXT:
        return (0, 0, ext)
    if ext in AUDIO_EXTS:
        return (1, 0, ext)
    if ext in LABEL_EXTS:
        return (2, LABEL_EXTS.index(ext), ext)
    if parse_frame_ext(ext) is not None:
        return (3, 0, ext)
    if parse_gray_ext(ext) is not None:
        return (4, 0, ext)
    return (5, 0, ext)


# --------------------------------------------------------------------------- audio timing


def round_half_up(x: Fraction | float) -> int:
    """Round to nearest, halves up, exactly (Fractions avoid float ties drifting)."""
    x = Fraction(x)
    return int((x + Fraction(1, 2)).__floor__())


def fps_fraction(fps: float | str | Fraction) -> Fraction:
    """Exact fps: 30 → 30, 29.97 → 2997/100, "30000/1001" → 30000/1001."""
    return Fraction(str(fps)) if not isinstance(fps, Fraction) else fps


def audio_sample_range(start_frame: int, end_frame: int, fps, sample_rate: int = SAMPLE_RATE) -> tuple[int, int]:
    """Samples [a, b) that cover frames [start_frame, end_frame): a = round(s/fps*sr), b = round(e/fps*sr)."""
    f = fps_fraction(fps)
    return (
        round_half_up(Fraction(start_frame) * sample_rate / f),
        round_half_up(Fraction(end_frame) * sample_rate / f),
    )


# --------------------------------------------------------------------------- metadata


def make_metadata(
    *,
    key: str,
    video_id: str,
    split: str,
    start_frame: int,
    n_frames: int,
    fps,
    frame_size: tuple[int, int] | None,
    audio_ext: str,
    audio_start_sample: int,
    audio_samples: int,
    audio_padded_samples: int,
    audio_source: Mapping[str, Any],
    labels: Mapping[str, Any],
    persons: list[Mapping[str, Any]],
    pad_frames: int = 0,
    derived: list[str] | tuple[str, ...] = (),
    source: Mapping[str, Any] | None = None,
) -> dict:
    """The ``.json`` member. Every field a consumer needs to place the clip in time and space.

    ``source`` is given for clips decoded from a video file (see :data:`VIDEO_SOURCE_KEYS`): it is
    stored as ``meta["source"]`` and the time basis says container time. Clips of frame
    directories have no ``source`` key, so their bytes are what they always were.
    """
    f = fps_fraction(fps)
    meta = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "key": key,
        "video_id": video_id,
        "split": split,
        "start_frame": int(start_frame),
        "n_frames": int(n_frames),
        "pad_frames": int(pad_frames),
        "source_images": [int(start_frame) + 1, int(start_frame) + int(n_frames) - int(pad_frames)],
        "fps": float(f),
        "fps_exact": f"{f.numerator}/{f.denominator}",
        "clip_start_time": float(Fraction(start_frame) / f),
        "frame_size": list(frame_size) if frame_size else None,
        "time_basis": (
            "seconds from the start of the source video; clip frame i (0-based) is at "
            "(start_frame + i) / fps and is source image img_{start_frame+i+1:05d}.jpg "
            "(Ego4D 0-based frame start_frame+i); audio sample j is at (audio_start_sample + j) / sample_rate"
        ),
        "sample_rate": SAMPLE_RATE,
        "audio_format": audio_ext,
        "audio_start_sample": int(audio_start_sample),
        "audio_samples": int(audio_samples),
        "audio_padded_samples": int(audio_padded_samples),
        "audio_source": dict(audio_source),
        "labels": dict(labels),
        "persons": [dict(p) for p in persons],
        "derived": list(derived),
    }
    if source is not None:  # frames of a video file: there are no source images to name
        meta["source"] = dict(source)
        meta["time_basis"] = VIDEO_TIME_BASIS
        del meta["source_images"]
    return meta


#: what ``meta["source"]`` holds for a clip decoded from a video file
VIDEO_SOURCE_KEYS = (
    "kind",                        # "video_file"
    "file",                        # the file, relative to the source directory when inside it
    "container", "codec", "pix_fmt", "size",   # FFmpeg's demuxer and decoder names, coded [width, height]
    "native_fps",                  # the stream's average frame rate, exact "num/den"
    "video_start_time",            # container time of the video stream's first frame (v0), seconds
    "audio_start_time", "audio_codec",  # the audio stream's start (seconds) and codec; None without one
    "audio_from",                  # "stream" (by container time), "wav" (wav/<id>.wav) or "none" (zeros)
    "audio_padded_start_samples",  # zeros before the audio stream's first sample (the rest of audio_padded_samples is at the end)
    "jpeg_quality", "max_side",    # how frames were encoded (max_side None: full resolution)
)
VIDEO_TIME_BASIS = (
    "clip frame i (0-based) is frame start_frame+i of ffmpeg's fps filter (-vf fps=<fps>) on the video stream, "
    "shown at container time source.video_start_time + (start_frame + i) / fps; audio sample j is at container "
    "time source.video_start_time + (audio_start_sample + j) / sample_rate"
)


def encode_metadata(meta: Mapping[str, Any]) -> bytes:
    """Sorted keys, fixed separators: the same metadata always gives the same bytes."""
    return (json.dumps(meta, sort_keys=True, indent=1, ensure_ascii=True, allow_nan=False) + "\n").encode()


_REQUIRED_META = {
    "schema": str, "schema_version": int, "key": str, "video_id": str, "start_frame": int,
    "n_frames": int, "fps": (int, float), "sample_rate": int, "audio_format": str,
    "audio_start_sample": int, "persons": list, "labels": dict,
}


def untrusted_json(data: bytes | str):
    """``json.loads`` of bytes from a shard or a server, with the cyclic garbage collector held off meanwhile.

    Why: a hostile document nested ~1,000 deep takes json's C parser to the interpreter's recursion limit
    before it raises (a RecursionError the caller names). A collection that happens to run down there runs
    finalizers (a suspended generator's ``finally``) with no recursion left: they fail as "unraisable"
    errors, reported far from here — a CI run failed on exactly that. Nothing collectable is made by a parse
    that finishes, so holding the collector off for it costs nothing."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return json.loads(data)
    finally:
        if enabled:
            gc.enable()


def load_versioned_json(data: bytes, *, name: str, schema: str, what: str, record: str,
                        version: int = SCHEMA_VERSION, older: str = "") -> dict:
    """JSON bytes of one of our records (a clip's metadata, a manifest) → dict; another schema or
    ``version`` is refused saying to rebuild or upgrade (``older``: what to say of an older version).
    ``what`` / ``record`` word the errors."""
    try:
        obj = untrusted_json(data)
    except Exception as exc:
        raise FormatError(f"{name}: {what} is not JSON ({exc})") from None
    if not isinstance(obj, dict) or obj.get("schema") != schema:
        raise FormatError(f"{name}: not an {schema} {record}")
    found = obj.get("schema_version")
    if older and isinstance(found, int) and not isinstance(found, bool) and found < version:
        raise FormatError(f"{name}: {what} schema_version {found} is older than this avshards reads ({version}): {older}")
    if found != version:
        raise FormatError(
            f"{name}: {'' if what == 'metadata' else what + ' '}schema_version {obj.get('schema_version')!r} is not "
            f"supported (this avshards reads version {version}); rebuild the shards or upgrade avshards"
        )
    return obj


def decode_metadata(data: bytes, *, name: str = "json", max_bytes: int = 16 << 20) -> dict:
    """Parse and check a ``.json`` member: schema, version and the fields the loader relies on."""
    if len(data) > max_bytes:
        raise FormatError(f"{name}: metadata of {len(data)} bytes exceeds {max_bytes}")
    meta = load_versioned_json(data, name=name, schema=SCHEMA, what="metadata", record="metadata record")
    for field, typ in _REQUIRED_META.items():
        if not isinstance(meta.get(field), typ) or isinstance(meta.get(field), bool):
            raise FormatError(f"{name}: metadata field {field!r} missing or not {typ}")
    if meta["n_frames"] <= 0 or meta["fps"] <= 0 or meta["sample_rate"] <= 0:
        raise FormatError(f"{name}: n_frames, fps and sample_rate must be positive")
    # hostile values that would otherwise fail deep inside decoding (NaN/inf fps, absurd sizes and offsets)
    if not 1e-3 <= meta["fps"] <= 1000 or not 1000 <= meta["sample_rate"] <= 1_000_000:
        raise FormatError(f"{name}: fps {meta['fps']!r} or sample_rate {meta['sample_rate']!r} out of range")
    if not 0 <= meta["start_frame"] < 1 << 40 or not 0 <= meta["audio_start_sample"] < 1 << 48:
        raise FormatError(f"{name}: start_frame / audio_start_sample negative or out of range")
    size = meta.get("frame_size")
    if size is not None and not (isinstance(size, list) and len(size) == 2
                                 and all(type(v) is int and 0 < v <= 65535 for v in size)):
        raise FormatError(f"{name}: frame_size {size!r} is not [width, height] in pixels")
    if not all(isinstance(p, dict) and isinstance(p.get("person_id"), str) for p in meta["persons"]):
        raise FormatError(f"{name}: every entry of 'persons' must be an object with a string person_id")
    derived = meta.get("derived", [])
    if not (isinstance(derived, list) and all(isinstance(d, str) for d in derived)):
        raise FormatError(f"{name}: 'derived' {derived!r} is not a list of member kinds")
    return meta


# --------------------------------------------------------------------------- person tracks

TRACK_MAX_GAP = 15  # frames: a person unseen for longer than this starts a new track


def person_tracks(boxes: np.ndarray, max_gap: int = TRACK_MAX_GAP) -> list[tuple[int, int, int]]:
    """The face tracks of a clip: ``(person_row, first_frame, n_frames)`` in person, then time order.

    A person's frames with a box form one track until the person is unseen for more than
    ``max_gap`` frames; shorter gaps lie inside the track (the loader interpolates the box
    there). The clip index (``clips.idx``) stores these spans so the loader can plan ``asd-tracks`` epochs —
    one sample per track, equal counts per rank — without reading the shards.
    """
    out: list[tuple[int, int, int]] = []
    for p in range(boxes.shape[0]):
        frames = np.flatnonzero(~np.isnan(boxes[p, :, 0]))
        if frames.size == 0:
            continue
        breaks = np.flatnonzero(np.diff(frames) > max_gap + 1)
        starts = np.concatenate([[0], breaks + 1])
        ends = np.concatenate([breaks, [frames.size - 1]])
        for s, e in zip(starts, ends):
            out.append((p, int(frames[s]), int(frames[e] - frames[s] + 1)))
    return out

"""A clip as the player takes it: the page's data (timing, labels, boxes) and each member it fetches.

The player draws frame ``i`` of a clip at ``i / fps`` seconds from the clip's start and plays
the clip's audio from its first sample, which the format places at the same instant to within half
a sample (``audio_start_sample = round(start_frame / fps * sample_rate)``,
:mod:`shardgen.core.format`); so the audio element's ``currentTime`` is the clip time, and the
frame shown is ``round(currentTime * fps)``. Boxes are in the frame's pixels (``frame_size``);
a build without the original frames shows its 112x112 gray frames with the boxes scaled to them.
"""

from __future__ import annotations

import math
from urllib.parse import quote

from shardgen.core.format import DERIVED_SIZE, crop_ext, frame_ext, gray_ext
from shardgen.core.sample import ClipSample

from .catalog import Split

AUDIO_TYPES = {"wav": "audio/wav", "flac": "audio/flac"}


def shows_originals(sample: ClipSample) -> bool:
    """True when the clip has its original frames (else the player shows the derived gray frames)."""
    return bool(sample.meta.get("originals", True))


def has_crops(sample: ClipSample) -> bool:
    return "c" in sample.meta.get("derived", ())


def media_url(key: str, *parts: str) -> str:
    return "/media/" + quote(key) + "".join("/" + quote(p) for p in parts)


def clip_data(split: Split, row: int, sample: ClipSample) -> dict:
    """Everything the player script needs, as JSON: timing, frame and audio URLs, labels and boxes."""
    m = sample.meta
    clips = split.index.clips
    ref = clips.ref(row)
    shard = split.index.shards[ref.shard]
    originals = shows_originals(sample)
    size = m.get("frame_size") or [DERIVED_SIZE, DERIVED_SIZE]
    n = len(clips)
    return {
        "key": sample.key,
        "split": split.name,
        "shard": shard.name,
        "fps": float(m["fps"]),
        "frames": sample.n_frames,
        "start_frame": int(m["start_frame"]),
        "start_time": float(m.get("clip_start_time", m["start_frame"] / m["fps"])),
        "frame_size": [int(size[0]), int(size[1])],
        "picture": "original" if originals else "gray",
        "frame_url": media_url(sample.key, "frame") + "/",
        "member_prefix": sample.key + ".",
        "member_kind": "f" if originals else "g",
        "crop_url": media_url(sample.key, "crop") + "/" if has_crops(sample) else None,
        "persons": [{"id": str(p["person_id"]), "wearer": bool(p.get("camera_wearer"))} for p in m["persons"]],
        "boxes": [[_box(b) for b in person] for person in sample.boxes.tolist()],
        "speaking": sample.speaking.tolist(),
        "visible": sample.visible.tolist(),
        "voice": sample.voice.tolist(),
        "audio": {"url": media_url(sample.key, "audio"), "ext": sample.audio_ext, "rate": int(m["sample_rate"]),
                  "samples": int(m.get("audio_samples", 0)), "padded": int(m.get("audio_padded_samples", 0))},
        "pad_frames": int(m.get("pad_frames", 0)),
        "prev": clips.key(row - 1) if row > 0 else None,
        "next": clips.key(row + 1) if row + 1 < n else None,
    }


def _box(b: list[float]) -> list[float] | None:
    return None if not all(math.isfinite(v) for v in b) else b


def picture(sample: ClipSample, i: int) -> bytes | None:
    """The picture the player shows for clip frame ``i`` (0-based): the original JPEG, else the gray one."""
    if not 0 <= i < sample.n_frames:
        return None
    return sample.fields.get(frame_ext(i + 1) if shows_originals(sample) else gray_ext(i + 1))


def gray(sample: ClipSample, i: int) -> bytes | None:
    return sample.fields.get(gray_ext(i + 1)) if 0 <= i < sample.n_frames else None


def crop(sample: ClipSample, person: int, i: int) -> bytes | None:
    ok = 0 <= i < sample.n_frames and 0 <= person < len(sample.meta["persons"])
    return sample.fields.get(crop_ext(person, i + 1)) if ok else None


def audio(sample: ClipSample) -> tuple[bytes, str]:
    return sample.fields[sample.audio_ext], AUDIO_TYPES[sample.audio_ext]

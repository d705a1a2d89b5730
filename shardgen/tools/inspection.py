"""``shardgen inspect``: what is in a shard or a split — clips, members, label balance.

For a split (its ``manifest.json``, directory or prefix) the head shows the manifest's totals and
parameters and a summary of its clip index (``clips.idx``: clips, face tracks, videos, bytes),
read and checked as the loader reads it; an index that is missing or damaged is said on that
line (``shardgen verify`` says more) and the shards are still listed. The clips below are read
from the shards themselves, local or remote.
"""

from __future__ import annotations

import os
from collections import Counter

from ..core.clip_reader import iter_clips
from ..core.format import FormatError
from ..core.manifest import read_index, read_manifest
from ..core.sources import find_manifest
from ..core.storage import TransportOptions, join, object_size, open_range, parent


def inspect_path(source: str | os.PathLike, *, max_clips: int | None = None,
                 remote_options: TransportOptions | dict | None = None) -> str:
    """Describe a shard (``.tar``), a manifest, or a split directory / prefix — local or ``http(s)://`` / ``s3://``."""
    options = TransportOptions.coerce(remote_options)
    path = os.fspath(source)
    if not path.endswith(".tar"):
        path = find_manifest(path, options=options)
        manifest = read_manifest(path, options)
        shards = [(join(parent(path), s["name"]), s["name"]) for s in manifest["shards"]]
        t = manifest["totals"]
        head = [f"{path}: split {manifest['split']}, {t['shards']} shards, {t['clips']} clips, "
                f"{t['frames']} frames, {t['hours']:.3f} h, {t['bytes'] / 1e6:.1f} MB",
                _index_line(manifest, path, options), f"params: {manifest['params']}"]
    else:
        size = object_size(path, options)
        if size is None:
            raise FileNotFoundError(f"{path}: no such shard")
        shards = [(path, path.rstrip("/").rsplit("/", 1)[-1])]
        head = [f"{path}: {size / 1e6:.1f} MB"]
    n = frames = 0
    members = Counter()
    sums = Counter()
    lines = []
    for url, name in shards:
        with open_range(url, options) as fh:
            for clip in iter_clips(fh, source=name):
                try:
                    s, key, fields = clip.sample(), clip.key, clip.fields
                except FormatError as exc:
                    raise FormatError(f"{name}: {exc}") from None
                n += 1
                frames += s.n_frames
                members.update(_member_kind(ext) for ext in fields)
                sums["visible"] += int(s.visible.sum())
                sums["voice"] += int(s.voice.sum())
                sums["speaking"] += int(s.speaking.sum())
                sums["person_frames"] += int(s.speaking.size)
                if max_clips is None or len(lines) < max_clips:
                    lines.append(f"  {key}  @{clip.offset}  T={s.n_frames} P={len(s.meta['persons'])} "
                                 f"visible={s.visible.mean():.2f} voice={s.voice.mean():.2f} members={len(fields)}")
    body = [f"{n} clips, {frames} frames"]
    if frames:
        body.append(f"label balance: visible {sums['visible'] / frames:.3f}, voice {sums['voice'] / frames:.3f}, "
                    f"speaking {sums['speaking'] / max(sums['person_frames'], 1):.3f} (of person-frames)")
    body.append("members: " + ", ".join(f"{k} ×{v}" for k, v in sorted(members.items())))
    return "\n".join(head + body + ["clips:"] + lines + ([f"  ... {n - len(lines)} more"] if n > len(lines) else []))


def _index_line(manifest: dict, path: str, options: TransportOptions) -> str:
    """The clip index's summary, from the index itself (its size, counts and columns checked against the manifest)."""
    name = manifest["index"]["name"]
    try:
        index = read_index(manifest, path, options)
    except FileNotFoundError:
        return f"index: {name} is missing (the manifest names it; shardgen verify checks it)"
    except (FormatError, ValueError) as exc:
        msg = str(exc)
        url = join(parent(path), name)
        msg = msg[len(url) + 2:] if msg.startswith(f"{url}: ") else msg
        return f"index: {name} is unusable: {msg}"
    videos = len(index.columns["video_offsets"]) - 1
    return (f"index: {name}, {len(index)} clips, {index.n_tracks} face tracks, {videos} videos, "
            f"{manifest['index']['bytes']} bytes")


def _member_kind(ext: str) -> str:
    if ext.startswith("f") and ext.endswith(".jpg"):
        return "f*.jpg (frames)"
    if ext.startswith("g") and ext.endswith(".jpg"):
        return "g*.jpg (112px gray)"
    if ext.startswith("c") and ext.endswith(".jpg"):
        return "c*.jpg (crops)"
    return ext


__all__ = ["inspect_path"]

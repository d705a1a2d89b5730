"""``shardgen verify``: prove a build is intact — sizes, sha256, and that every clip decodes.

A damaged shard is reported by name, and the damaged clip by key: the split's clip index
(``clips.idx``, named by the manifest) keeps each clip's byte range and sha256, so a flipped
byte is traced to the clip that holds it. The index itself is checked first, against the size
and sha256 the manifest records for it; a missing, cut or altered index is a problem naming
``clips.idx`` (the shards are still checked against the manifest's sizes and hashes, but a
damaged one can then not be traced to a clip). The build may be local or remote (``http(s)://``,
``s3://``): each shard is streamed once (hashed while its clips are decoded), and only a shard
whose hash is wrong is read again, clip by clip, through ranged requests — the same messages
and exit codes either way. Clips are taken from the index one shard at a time: no Python object
per clip of the split is made.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from ..core.clip_index import ClipIndex
from ..core.clip_reader import iter_clips
from ..core.decode import decode_gray
from ..core.format import FormatError
from ..core.sample import ClipSample
from ..core.manifest import read_index, read_manifest
from ..core.sources import find_manifest
from ..core.storage import TransportOptions, join, object_size, open_range, parent
from ..core.tario import TarError


@dataclass
class VerifyResult:
    shards: int = 0
    clips: int = 0
    frames: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class _HashingReader:
    """Passes reads through, hashing every byte; :meth:`drain` reads the rest so the hash covers the whole object."""

    def __init__(self, raw):
        self.raw, self.sha = raw, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha.update(data)
        return data

    def drain(self) -> str:
        while self.read(1 << 20):
            pass
        return self.sha.hexdigest()


def verify_manifest(source: str | os.PathLike, *, decode: bool = True,
                    remote_options: TransportOptions | dict | None = None) -> VerifyResult:
    """Check the clip index and every shard of a manifest (or of the split directory / prefix holding one)."""
    options = TransportOptions.coerce(remote_options)
    url = find_manifest(source, options=options)
    manifest = read_manifest(url, options)
    base = parent(url)
    res = VerifyResult()
    index = _read_index(manifest, url, options, res)
    bounds = index.shard_bounds(len(manifest["shards"])) if index is not None else None
    for s, shard in enumerate(manifest["shards"]):
        res.shards += 1
        name, shard_url = shard["name"], join(base, shard["name"])
        rows = range(int(bounds[s]), int(bounds[s + 1])) if bounds is not None else None
        if rows is not None and shard.get("clips", len(rows)) != len(rows):
            res.problems.append(f"{name}: the clip index lists {len(rows)} clips, the manifest {shard.get('clips')}")
        size = object_size(shard_url, options)
        if size is None:
            res.problems.append(f"{name}: missing")
            continue
        if size != shard["bytes"]:
            res.problems.append(f"{name}: {size} bytes, manifest says {shard['bytes']}")
        with open_range(shard_url, options) as raw:
            stream = _HashingReader(raw)
            decoded = _decode_clips(stream, name, res) if decode else None
            sha = stream.drain()
        if sha != shard["sha256"]:
            if rows is None:
                where = f"unknown (no usable {manifest['index']['name']} to trace it to a clip)"
            else:
                bad = _damaged_clips(shard_url, index, rows, options)
                where = ", ".join(bad) if bad else "outside every clip (tar end blocks)"
            res.problems.append(f"{name}: sha256 mismatch; damaged: {where}")
        if decoded is None or rows is None:
            continue
        seen, problems = decoded
        res.problems += problems
        expected = [index.key(r) for r in rows]  # one shard's keys at a time
        if seen != expected and not any(p.startswith(name) for p in res.problems):
            res.problems.append(f"{name}: clips {seen[:3]}... differ from the clip index's {expected[:3]}...")
    return res


def _read_index(manifest: dict, url: str, options: TransportOptions, res: VerifyResult) -> ClipIndex | None:
    """The split's clip index, its size, counts, sha256 and columns checked against the manifest; a missing or
    damaged one is a problem naming it (→ None: the shards are then checked without their clips' rows)."""
    name = manifest["index"]["name"]
    index_url = join(parent(url), name)
    try:
        return read_index(manifest, url, options, check_sha256=True)
    except (FormatError, ValueError, FileNotFoundError) as exc:
        if isinstance(exc, FileNotFoundError):  # the same line for a local and a remote copy
            msg = "missing (the manifest names it: copy it with the manifest, or rebuild the split)"
        else:
            msg = str(exc)
            if msg.startswith(f"{index_url}: "):
                msg = msg[len(index_url) + 2:]
        res.problems.append(f"{name}: {msg}")
        return None


def _decode_clips(stream, name: str, res: VerifyResult) -> tuple[list[str], list[str]]:
    """Decode every clip of a shard stream; → (keys seen, problems). Counts go into ``res``."""
    seen, problems = [], []
    try:
        for clip in iter_clips(stream, source=name):
            key = clip.key
            seen.append(key)
            try:
                sample = clip.sample()
                sample.audio()
                _decode_frames(sample)
                res.clips += 1
                res.frames += sample.n_frames
            except (FormatError, ValueError) as exc:
                problems.append(f"{name}: clip {key} does not decode: {exc}")
    except TarError as exc:
        problems.append(f"{name}: {exc}")
    return seen, problems


def _decode_frames(sample: ClipSample) -> None:
    """Every JPEG member decodes — originals and derived ``g``/``c`` members — with the loader's decoder."""
    for ext, data in sample.fields.items():
        if ext.endswith(".jpg"):
            decode_gray(data, 16, 16, name=f"{sample.key}.{ext}")


def _damaged_clips(shard_url: str, index: ClipIndex, rows: range, options: TransportOptions) -> list[str]:
    """The clips (index ``rows`` of one shard) whose bytes no longer hash to the index's sha256 (one ranged read each)."""
    bad = []
    offsets, sizes = index.columns["offset"], index.columns["bytes"]
    for r in rows:
        start, length = int(offsets[r]), int(sizes[r])
        with open_range(shard_url, options, start=start, end=start + length) as fh:
            data = fh.read(length)
        if hashlib.sha256(data).hexdigest() != index.sha256(r):
            bad.append(f"clip {index.key(r)} (bytes {start}..{start + length})")
    return bad

"""``shardgen verify``: prove a build is intact — sizes, sha256, and that every clip decodes.

A damaged shard is reported by name, and the damaged clip by key: the manifest keeps each
clip's byte range and sha256, so a flipped byte is traced to the clip that holds it. The build
may be local or remote (``http(s)://``, ``s3://``): each shard is streamed once (hashed while its
clips are decoded), and only a shard whose hash is wrong is read again, clip by clip, through
ranged requests — the same messages and exit codes either way.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from .core.decode import decode_gray
from .core.format import FormatError
from .core.sample import ClipSample
from .core.manifest import manifest_url, read_manifest
from .core.storage import TransportOptions, join, object_size, open_range, parent
from .core.tario import TarError, iter_samples, iter_tar


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
    """Check every shard of a manifest (or of the split directory / prefix holding one)."""
    options = TransportOptions.coerce(remote_options)
    url = manifest_url(source)
    manifest = read_manifest(url, options)
    base = parent(url)
    res = VerifyResult()
    clips_by_shard: dict[int, list[dict]] = {}
    for c in manifest["clips"]:
        clips_by_shard.setdefault(c["shard"], []).append(c)
    for index, shard in enumerate(manifest["shards"]):
        res.shards += 1
        name, shard_url = shard["name"], join(base, shard["name"])
        size = object_size(shard_url, options)
        if size is None:
            res.problems.append(f"{name}: missing")
            continue
        if size != shard["bytes"]:
            res.problems.append(f"{name}: {size} bytes, manifest says {shard['bytes']}")
        clips = clips_by_shard.get(index, [])
        with open_range(shard_url, options) as raw:
            stream = _HashingReader(raw)
            decoded = _decode_clips(stream, name, res) if decode else None
            sha = stream.drain()
        if sha != shard["sha256"]:
            bad = _damaged_clips(shard_url, clips, options)
            where = ", ".join(bad) if bad else "outside every clip (tar end blocks)"
            res.problems.append(f"{name}: sha256 mismatch; damaged: {where}")
        if decoded is None:
            continue
        seen, problems = decoded
        res.problems += problems
        expected = [c["key"] for c in clips]
        if seen != expected and not any(p.startswith(name) for p in res.problems):
            res.problems.append(f"{name}: clips {seen[:3]}... differ from the manifest's {expected[:3]}...")
    return res


def _decode_clips(stream, name: str, res: VerifyResult) -> tuple[list[str], list[str]]:
    """Decode every clip of a shard stream; → (keys seen, problems). Counts go into ``res``."""
    seen, problems = [], []
    try:
        for key, fields, _ in iter_samples(iter_tar(stream, source=name), source=name):
            seen.append(key)
            try:
                sample = ClipSample(key, fields)
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


def _damaged_clips(shard_url: str, clips: list[dict], options: TransportOptions) -> list[str]:
    """The clips whose bytes no longer hash to the manifest's sha256 (one ranged read each)."""
    bad = []
    for c in clips:
        start, end = c["offset"], c["offset"] + c["bytes"]
        with open_range(shard_url, options, start=start, end=end) as fh:
            data = fh.read(c["bytes"])
        if hashlib.sha256(data).hexdigest() != c.get("sha256"):
            bad.append(f"clip {c['key']} (bytes {start}..{end})")
    return bad

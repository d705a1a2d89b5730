"""What to read: a source spec → the list of shards and, for each, its clips' byte ranges.

Accepted sources (each local or as an ``http(s)://`` / ``s3://`` URL):

* a manifest (``.../manifest.json``) or a split directory / prefix holding one;
* a shard (``.../train-000000.tar``), a brace pattern (``train-{000000..000041}.tar``);
* a list or tuple of any of these.

Clip byte ranges come from the manifest (the builder writes one per split). Shards named
without a manifest use the ``manifest.json`` beside them when there is one; otherwise local
shards are indexed by reading their tar headers, and remote ones need a manifest.

Opening bytes is separate from deciding what to read: :func:`open_range` is the one place a
transport is chosen, so a new one (``gs://``, say) plugs in there.
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Sequence

from shardgen.format import BOXES_EXT, decode_npy, person_tracks, split_member_name
from shardgen.manifest import MANIFEST_NAME, load_manifest

from .sharding import ClipRef
from .tario import discard

REMOTE_SCHEMES = ("http://", "https://", "s3://")


def is_remote(url: str) -> bool:
    return str(url).startswith(REMOTE_SCHEMES)


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}" if is_remote(base) else str(Path(base) / name)


def _parent(url: str) -> str:
    return url.rsplit("/", 1)[0] if is_remote(url) else str(Path(url).parent)


@dataclass
class ShardInfo:
    url: str
    name: str
    bytes: int | None = None
    sha256: str | None = None
    clips: list[ClipRef] = field(default_factory=list)


@dataclass
class SourceIndex:
    shards: list[ShardInfo]
    manifests: list[dict] = field(default_factory=list)

    @property
    def n_clips(self) -> int:
        return sum(len(s.clips) for s in self.shards)

    def shard_clips(self) -> list[list[ClipRef]]:
        return [s.clips for s in self.shards]


def resolve(source, *, remote_options: dict | None = None) -> SourceIndex:
    """Turn any accepted source spec into a :class:`SourceIndex`."""
    specs: Sequence = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    shards: list[ShardInfo] = []
    manifests: list[dict] = []
    manifest_cache: dict[str, dict | None] = {}
    for spec in specs:
        spec = str(spec)
        for url in _expand(spec):
            if url.endswith(".json"):
                m = _read_manifest(url, remote_options)
                manifests.append(m)
                shards += _from_manifest(m, _parent(url), len(shards))
            elif url.endswith(".tar"):
                parent = _parent(url)
                if parent not in manifest_cache:
                    manifest_cache[parent] = _try_manifest(_join(parent, MANIFEST_NAME), remote_options)
                shards.append(_single_shard(url, manifest_cache[parent], len(shards), remote_options))
            else:  # a split directory or prefix
                m = _read_manifest(_join(url, MANIFEST_NAME), remote_options)
                manifests.append(m)
                shards += _from_manifest(m, url, len(shards))
    if not shards:
        raise ValueError(f"source {source!r} names no shards")
    return SourceIndex(shards, manifests)


def _expand(spec: str) -> list[str]:
    if "{" in spec:
        import braceexpand

        return list(braceexpand.braceexpand(spec))
    return [spec]


def _read_manifest(url: str, remote_options: dict | None) -> dict:
    if is_remote(url):
        from .remote import read_bytes

        return load_manifest(url, read_bytes(url, **transport_options(remote_options)))
    if not Path(url).is_file():
        raise FileNotFoundError(f"{url}: no manifest there (build with shardgen, or name the .tar shards)")
    return load_manifest(url)


def _try_manifest(url: str, remote_options: dict | None) -> dict | None:
    try:
        return _read_manifest(url, remote_options)
    except (FileNotFoundError, OSError, ValueError):
        return None


def _from_manifest(m: dict, base: str, first_index: int) -> list[ShardInfo]:
    out = [ShardInfo(_join(base, s["name"]), s["name"], s["bytes"], s["sha256"]) for s in m["shards"]]
    for c in m["clips"]:
        i = c["shard"]
        out[i].clips.append(ClipRef(first_index + i, c["key"], c["offset"], c["bytes"], _tracks(c)))
    return out


def _single_shard(url: str, manifest: dict | None, index: int, remote_options: dict | None) -> ShardInfo:
    name = url.rsplit("/", 1)[-1]
    if manifest is not None:
        for i, s in enumerate(manifest["shards"]):
            if s["name"] == name:
                info = ShardInfo(url, name, s["bytes"], s["sha256"])
                info.clips = [ClipRef(index, c["key"], c["offset"], c["bytes"], _tracks(c))
                              for c in manifest["clips"] if c["shard"] == i]
                return info
    if is_remote(url):
        raise ValueError(f"{url}: remote shards need the manifest.json that shardgen writes beside them")
    return scan_local_shard(url, index)


def _tracks(clip_record: dict) -> tuple:
    return tuple(tuple(t) for t in clip_record.get("tracks", ()))


def scan_local_shard(path: str, index: int = 0) -> ShardInfo:
    """Index a local shard without a manifest: clip keys, byte ranges and face tracks from the tar."""
    clips: list[ClipRef] = []
    start = end = 0
    key = None
    tracks: tuple = ()
    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                k, ext = split_member_name(info.name)
                if k != key:
                    if key is not None:
                        clips.append(ClipRef(index, key, start, info.offset - start, tracks))
                    key, start, tracks = k, info.offset, ()
                if ext == BOXES_EXT:
                    boxes = decode_npy(tar.extractfile(info).read(), name=info.name, dtype="float32", ndim=3)
                    tracks = tuple(person_tracks(boxes))
                end = info.offset_data + (info.size + 511) // 512 * 512
        with open(path, "rb") as fh:  # tarfile takes EOF at a member boundary for the end: a cut shard would look short
            fh.seek(end)
            if fh.read(512) != bytes(512):
                raise tarfile.TarError(f"no end-of-archive marker after byte {end} (truncated shard?)")
    except (tarfile.TarError, OSError, ValueError) as exc:  # ValueError: FormatError from an unsafe member name
        raise ValueError(f"{path}: cannot index shard ({exc})") from None
    if key is not None:
        clips.append(ClipRef(index, key, start, end - start, tracks))
    return ShardInfo(str(path), Path(path).name, os.path.getsize(path), None, clips)


class _Window(io.RawIOBase):
    """Read at most ``length`` bytes of an underlying stream.

    ``local``: the stream is a file on this machine, where a skip is a seek. A remote stream
    (whose seek would drop the connection and open a new ranged request) skips by reading.
    """

    def __init__(self, raw: BinaryIO, length: int, *, local: bool = False):
        self._raw, self._left, self._local = raw, length, local

    def readable(self):
        return True

    def read(self, n=-1):
        if self._left <= 0:
            return b""
        n = self._left if n is None or n < 0 else min(n, self._left)
        b = self._raw.read(n)
        self._left -= len(b)
        return b

    def skip(self, n: int) -> int:
        """Pass over ``n`` bytes of the window: a seek on a local file, else read and discard."""
        if not self._local:
            return discard(self, n)
        n = min(n, self._left)
        self._raw.seek(n, io.SEEK_CUR)
        self._left -= n
        return n

    def close(self):
        try:
            self._raw.close()
        finally:
            super().close()


CACHE_KEYS = ("cache_dir", "cache_bytes")
_caches: dict = {}


def transport_options(remote_options: dict | None) -> dict:
    """The options that go to the HTTP/S3 transport (``cache_*`` keys are the loader's own)."""
    return {k: v for k, v in (remote_options or {}).items() if k not in CACHE_KEYS}


def _cache(remote_options: dict):
    from .remote import ShardCache

    key = (str(remote_options["cache_dir"]), int(remote_options.get("cache_bytes") or 10 << 30), os.getpid())
    if key not in _caches:
        _caches[key] = ShardCache(key[0], key[1], **transport_options(remote_options))
    return _caches[key]


def open_range(url: str, offset: int, length: int, *, remote_options: dict | None = None,
               expected_sha256: str | None = None, expected_size: int | None = None, sparse: bool = False) -> BinaryIO:
    """A stream of bytes ``[offset, offset+length)`` of a shard, local or remote.

    Remote shards stream through a Range request (resumed from the byte reached if the
    connection drops); with ``cache_dir`` in ``remote_options`` the whole shard is fetched into
    a size-bounded LRU cache first, verified against the manifest's sha256, and read from disk
    (so later epochs read locally). ``sparse``: the caller will skip most of the range (one
    track's frames of a clip), so a local file is opened unbuffered: a skip is one seek and a
    header one 512-byte read, instead of refilling a 1 MiB buffer with bytes nobody wants.
    """
    if is_remote(url):
        if remote_options and remote_options.get("cache_dir"):
            fh = _cache(remote_options).open(url, expected_sha256=expected_sha256, expected_size=expected_size)
            fh.seek(offset)
            return _Window(fh, length, local=True)
        from .remote import open_shard

        raw = open_shard(url, start=offset, end=offset + length, **transport_options(remote_options))
        return _Window(raw, length)
    fh = open(url[7:] if url.startswith("file://") else url, "rb", buffering=0 if sparse else 1 << 20)
    fh.seek(offset)
    return _Window(fh, length, local=True)

"""What to read: a source spec → the list of shards and, for each, its clips' byte ranges.

Accepted sources (each local or as an ``http(s)://`` / ``s3://`` URL):

* a manifest (``.../manifest.json``) or a split directory / prefix holding one;
* a shard (``.../train-000000.tar``), a brace pattern (``train-{000000..000041}.tar``);
* a list or tuple of any of these.

Clip byte ranges come from the manifest (the builder writes one per split). Shards named
without a manifest use the ``manifest.json`` beside them when there is one; otherwise local
shards are indexed by reading their tar headers, and remote ones need a manifest.

Opening bytes is separate from deciding what to read: :func:`open_clips` hands the byte range
to :mod:`shardgen.core.storage`, where the one address parser chooses the backend.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

import braceexpand

from .codecs import decode_npy
from .format import BOXES_EXT, FormatError, person_tracks, split_member_name
from .manifest import MANIFEST_NAME, read_manifest
from .storage import ShardCache, TransportOptions, Window, is_remote, join, open_range, parent
from .tario import DEFAULT_MAX_MEMBER, TarError, iter_tar


@dataclass(frozen=True)
class ClipRef:
    """One clip as the manifest places it: which shard, its key and its byte range."""

    shard: int  # index into the source's shard list
    key: str
    offset: int
    bytes: int
    tracks: tuple = ()  # ((person_row, first_frame, n_frames), ...) from the manifest


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

    def shard_clips(self) -> list[list[ClipRef]]:
        """Each shard's clips, in shard order."""
        return [s.clips for s in self.shards]


def resolve(source, *, remote_options: TransportOptions | dict | None = None) -> SourceIndex:
    """Turn any accepted source spec into a :class:`SourceIndex`."""
    remote_options = TransportOptions.coerce(remote_options)
    specs: Sequence = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    shards: list[ShardInfo] = []
    manifests: list[dict] = []
    manifest_cache: dict[str, dict | None] = {}
    for spec in specs:
        spec = str(spec)
        for url in _expand(spec):
            if url.endswith(".json"):
                m = read_manifest(url, remote_options)
                manifests.append(m)
                shards += _from_manifest(m, parent(url), len(shards))
            elif url.endswith(".tar"):
                folder = parent(url)
                if folder not in manifest_cache:
                    manifest_cache[folder] = _try_manifest(join(folder, MANIFEST_NAME), remote_options)
                shards.append(_single_shard(url, manifest_cache[folder], len(shards), remote_options))
            else:  # a split directory or prefix
                m = read_manifest(join(url, MANIFEST_NAME), remote_options)
                manifests.append(m)
                shards += _from_manifest(m, url, len(shards))
    if not shards:
        raise ValueError(f"source {source!r} names no shards")
    return SourceIndex(shards, manifests)


def _expand(spec: str) -> list[str]:
    if "{" in spec:
        return list(braceexpand.braceexpand(spec))
    return [spec]


def _try_manifest(url: str, remote_options: TransportOptions) -> dict | None:
    try:
        return read_manifest(url, remote_options)
    except (FileNotFoundError, OSError, ValueError):
        return None


def _from_manifest(m: dict, base: str, first_index: int) -> list[ShardInfo]:
    out = [ShardInfo(join(base, s["name"]), s["name"], s["bytes"], s["sha256"]) for s in m["shards"]]
    for c in m["clips"]:
        i = c["shard"]
        out[i].clips.append(ClipRef(first_index + i, c["key"], c["offset"], c["bytes"], _tracks(c)))
    return out


def _single_shard(url: str, manifest: dict | None, index: int, remote_options: TransportOptions) -> ShardInfo:
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


_caches: dict[tuple, ShardCache] = {}


def shard_cache(options: TransportOptions) -> ShardCache:
    """The process's cache for ``options.cache_dir`` (one per directory, size and process)."""
    key = (str(options.cache_dir), int(options.cache_bytes), os.getpid())
    if key not in _caches:
        _caches[key] = ShardCache(key[0], key[1], options)
    return _caches[key]


def open_clips(shard: ShardInfo, offset: int, length: int, options: TransportOptions | None = None, *,
               sparse: bool = False) -> BinaryIO:
    """A stream of bytes ``[offset, offset+length)`` of a shard, local or remote.

    Remote shards stream through a Range request (resumed from the byte reached if the
    connection drops); with ``options.cache_dir`` the whole shard is fetched into a size-bounded
    LRU cache first, verified against the manifest's sha256 and size, and read from disk (so
    later epochs read locally). ``sparse``: the caller will skip most of the range (one track's
    frames of a clip), so a local file is opened unbuffered: a skip is one seek and a header one
    512-byte read, instead of refilling a 1 MiB buffer with bytes nobody wants.
    """
    options = TransportOptions.coerce(options)
    if is_remote(shard.url) and options.cache_dir:
        fh = shard_cache(options).open(shard.url, expected_sha256=shard.sha256, expected_size=shard.bytes)
        fh.seek(offset)
        return Window(fh, length, local=True)
    fh = open_range(shard.url, options, start=offset, end=offset + length, sparse=sparse)
    return Window(fh, length, local=not is_remote(shard.url))


def read_clip_members(shard: ShardInfo, clip: ClipRef, options: TransportOptions | None = None, *,
                      wanted: Callable[[str, dict], bool], complete: Callable[[dict], bool],
                      max_member_bytes: int = DEFAULT_MAX_MEMBER) -> dict[str, bytes]:
    """Some members of one clip, ``{ext: bytes}``, read sparsely: every header is read and checked, the
    data of members ``wanted(ext, fields_so_far)`` declines is passed over (seeked past on a local file),
    and reading stops once ``complete(fields)``. A member of another clip inside the byte range, or a
    repeated one, is a :class:`TarError` naming the shard and byte — whether it was wanted or not.
    """
    fields: dict[str, bytes] = {}

    def want(name: str) -> bool:
        try:
            key, ext = split_member_name(name)
        except FormatError:
            return True  # read it, so that the check below names it
        return key != clip.key or wanted(ext, fields)  # another clip's member: read it, so it is named below

    stream = open_clips(shard, clip.offset, clip.bytes, options, sparse=True)
    try:
        for m in iter_tar(stream, source=shard.url, length=clip.bytes, base_offset=clip.offset,
                          max_member_bytes=max_member_bytes, want=want):
            try:
                key, ext = split_member_name(m.name)
            except FormatError as exc:
                raise TarError(f"{shard.url} at byte {m.offset}: {exc}") from None
            if key != clip.key:
                raise TarError(f"{shard.url} at byte {m.offset}: found clip {key} inside the byte range of "
                               f"{clip.key} (shard and manifest disagree)")
            if ext in fields:
                raise TarError(f"{shard.url} at byte {m.offset}: clip {key} has two .{ext} members")
            fields[ext] = m.data
            if complete(fields):
                break
    finally:
        stream.close()
    return fields

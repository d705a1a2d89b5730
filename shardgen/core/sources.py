"""What to read: a source spec → the list of shards and, for each, its clips' byte ranges.

Accepted sources (each local or as an ``http(s)://`` / ``s3://`` URL):

* a manifest (``.../manifest.json``) or a split directory / prefix holding one;
* a shard (``.../train-000000.tar``), a brace pattern (``train-{000000..000041}.tar``);
* a list or tuple of any of these.

Clip byte ranges come from the split's clip index (:mod:`.clip_index`, named by its manifest):
for a split directory or manifest, the memory-mapped file itself; for shards named one by one, a
brace pattern or several sources, their rows concatenated in memory. Never a Python object per clip. Shards named
without a manifest use the ``manifest.json`` beside them when there is one; otherwise local
shards are indexed by reading their tar headers, and remote ones need a manifest.

Opening bytes is separate from deciding what to read: :func:`open_clips` hands the byte range
to :mod:`shardgen.core.storage`, where the one address parser chooses the backend.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

import braceexpand
import numpy as np

from .clip_index import ClipIndex, ClipIndexWriter, ClipRef, concat_indexes
from .codecs import decode_npy
from .format import BOXES_EXT, FormatError, person_tracks, split_member_name
from .manifest import MANIFEST_NAME, read_index, read_manifest
from .sample import ClipSample
from .storage import ShardCache, TransportOptions, Window, is_remote, join, open_range, parent
from .tario import DEFAULT_MAX_MEMBER, TarError, iter_tar


@dataclass
class ShardInfo:
    url: str
    name: str
    bytes: int | None = None
    sha256: str | None = None


@dataclass
class ResolvedSource:
    """What a source names: its shards, and one clip index over all of them (shard numbers index ``shards``)."""

    shards: list[ShardInfo]
    clips: ClipIndex
    manifests: list[dict] = field(default_factory=list)

    @functools.cached_property
    def bounds(self) -> np.ndarray:
        """``[S+1]``: shard ``s``'s clips are index rows ``bounds[s]:bounds[s+1]``."""
        return self.clips.shard_bounds(len(self.shards))

    def shard_rows(self, shard: int) -> range:
        return range(int(self.bounds[shard]), int(self.bounds[shard + 1]))

    def shard_refs(self, shard: int) -> list[ClipRef]:
        """One shard's clips as :class:`ClipRef` (a shard at a time: tools that walk every clip)."""
        return self.clips.refs(self.shard_rows(shard))

    def shard_clips(self) -> list[list[ClipRef]]:
        """Each shard's clips, in shard order (small sources only: a Python object per clip)."""
        return [self.shard_refs(s) for s in range(len(self.shards))]


def resolve(source, *, remote_options: TransportOptions | dict | None = None) -> ResolvedSource:
    """Turn any accepted source spec into a :class:`ResolvedSource`."""
    remote_options = TransportOptions.coerce(remote_options)
    specs: Sequence = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    shards: list[ShardInfo] = []
    parts: list[tuple[ClipIndex, int]] = []
    manifests: list[dict] = []
    beside: dict[str, tuple | None] = {}  # folder → (manifest, its index) for shards named one by one
    for spec in specs:
        spec = str(spec)
        for url in _expand(spec):
            if url.endswith(".tar"):
                folder = parent(url)
                if folder not in beside:
                    beside[folder] = _try_manifest(join(folder, MANIFEST_NAME), remote_options)
                info, index = _single_shard(url, beside[folder], remote_options)
            else:  # a manifest, or a split directory or prefix holding one
                murl = url if url.endswith(".json") else join(url, MANIFEST_NAME)
                m = read_manifest(murl, remote_options)
                manifests.append(m)
                info = [ShardInfo(join(parent(murl), s["name"]), s["name"], s["bytes"], s["sha256"]) for s in m["shards"]]
                index = read_index(m, murl, remote_options)
            infos = info if isinstance(info, list) else [info]
            parts.append((index, len(shards)))
            shards += infos
    if not shards:
        raise ValueError(f"source {source!r} names no shards")
    return ResolvedSource(shards, concat_indexes(parts), manifests)


def _expand(spec: str) -> list[str]:
    if "{" in spec:
        return list(braceexpand.braceexpand(spec))
    return [spec]


def _try_manifest(url: str, remote_options: TransportOptions) -> tuple | None:
    """The manifest beside a shard and its index, or None when there is none (a manifest there that is
    damaged or from an older avshards is an error, not a reason to index the shard by hand)."""
    try:
        m = read_manifest(url, remote_options)
    except FileNotFoundError:
        return None
    except FormatError:
        raise
    except (OSError, ValueError):
        return None
    index = read_index(m, url, remote_options)
    return m, index, index.shard_bounds(len(m["shards"]))  # bounds once: shards named one by one reuse them


def _single_shard(url: str, beside: tuple | None, remote_options: TransportOptions) -> tuple[ShardInfo, ClipIndex]:
    name = url.rsplit("/", 1)[-1]
    if beside is not None:
        manifest, index, bounds = beside
        for i, s in enumerate(manifest["shards"]):
            if s["name"] == name:
                return ShardInfo(url, name, s["bytes"], s["sha256"]), index.slice(int(bounds[i]), int(bounds[i + 1]))
    if is_remote(url):
        raise ValueError(f"{url}: remote shards need the manifest.json that shardgen writes beside them")
    return scan_local_shard(url)


def scan_local_shard(path: str) -> tuple[ShardInfo, ClipIndex]:
    """Index a local shard without a manifest: clip keys, byte ranges and face tracks from the tar."""
    rows: list[tuple] = []
    start = end = 0
    key = None
    tracks: tuple = ()
    members = 0
    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                k, ext = split_member_name(info.name)
                if k != key:
                    if key is not None:
                        rows.append((key, start, info.offset - start, members, tracks))
                    key, start, tracks, members = k, info.offset, (), 0
                members += 1
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
        rows.append((key, start, end - start, members, tracks))
    writer = ClipIndexWriter()
    # n_frames is not known without the metadata: a track's end bounds it (no sha256: nothing to check against)
    writer.add_shard(0, [(k, o, b, "", m, max([f + n for _, f, n in t] or [0]), 0, t) for k, o, b, m, t in rows])
    return ShardInfo(str(path), Path(path).name, os.path.getsize(path), None), writer.index()


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
                      max_member_bytes: int = DEFAULT_MAX_MEMBER, digest=None) -> dict[str, bytes]:
    """Some members of one clip, ``{ext: bytes}``, read sparsely: every header is read and checked, the
    data of members ``wanted(ext, fields_so_far)`` declines is passed over (seeked past on a local file),
    and reading stops once ``complete(fields)``. A member of another clip inside the byte range, or a
    repeated one, is a :class:`TarError` naming the shard and byte — whether it was wanted or not.

    ``digest``: a ``hashlib`` object fed every byte of the range as it is read (nothing is seeked past
    then), so a caller that reads the whole clip can compare it with the clip index's sha256.
    """
    fields: dict[str, bytes] = {}

    def want(name: str) -> bool:
        try:
            key, ext = split_member_name(name)
        except FormatError:
            return True  # read it, so that the check below names it
        return key != clip.key or wanted(ext, fields)  # another clip's member: read it, so it is named below

    stream = open_clips(shard, clip.offset, clip.bytes, options, sparse=digest is None)
    try:
        for m in iter_tar(stream if digest is None else _Digesting(stream, digest), source=shard.url, length=clip.bytes, base_offset=clip.offset,
                          max_member_bytes=max_member_bytes, want=want):
            try:
                key, ext = split_member_name(m.name)
            except FormatError as exc:
                raise TarError(f"{shard.url} at byte {m.offset}: {exc}") from None
            if key != clip.key:
                raise TarError(f"{shard.url} at byte {m.offset}: found clip {key} inside the byte range of "
                               f"{clip.key} (shard and clip index disagree)")
            if ext in fields:
                raise TarError(f"{shard.url} at byte {m.offset}: clip {key} has two .{ext} members")
            fields[ext] = m.data
            if complete(fields):
                break
    finally:
        stream.close()
    return fields


class _Digesting:
    """A stream's bytes fed to a hash as they are read (no ``skip``: the tar reader reads what it passes over)."""

    def __init__(self, stream: BinaryIO, digest):
        self._stream = stream
        self._digest = digest

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self._digest.update(data)
        return data


def read_clip(index: ResolvedSource, row: int, options: TransportOptions | None = None, *,
              max_member_bytes: int = DEFAULT_MAX_MEMBER) -> ClipSample:
    """Clip ``row`` of ``index`` whole, checked: every member read through the safe tar reader, checked
    against the format (an error names the shard and the member), then the clip's bytes compared with
    the sha256 its index row records (an index written without one, by scanning a bare shard, skips that).
    A tool that shows one clip reads it with this; the loader reads runs of clips (``loaders.reader``).
    """
    clip = index.clips.ref(row)
    shard = index.shards[clip.shard]
    expected = index.clips.sha256(row)
    digest = hashlib.sha256()
    fields = read_clip_members(shard, clip, options, wanted=lambda ext, fields: True, complete=lambda fields: False,
                               max_member_bytes=max_member_bytes, digest=digest)
    try:
        sample = ClipSample(clip.key, fields)
        sample.audio()
    except FormatError as exc:
        raise FormatError(f"{shard.url}: {exc}") from None
    if expected != _NO_DIGEST and digest.hexdigest() != expected:
        raise TarError(f"{shard.url}: clip {clip.key} (bytes {clip.offset}-{clip.offset + clip.bytes}) differs from "
                       f"the sha256 its clip index records: the shard is damaged (shardgen verify names every such clip)")
    return sample


_NO_DIGEST = "0" * 64

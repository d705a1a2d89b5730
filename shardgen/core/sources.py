"""A source spec → its manifest, shards and clip index; and one clip of it, read and checked.

Every tool and the loader turn what a user names into data here, in two steps:

* :func:`find_manifests` / :func:`find_manifest` — the one place a source becomes a manifest URL:
  a ``manifest.json``; a split directory or prefix holding one; a build directory
  (``shardgen build --out``) holding ``<split>/manifest.json`` — one named split, or all of them;
* :func:`resolve` — a source (any of those, or shards: ``.../train-000000.tar``, a brace pattern
  ``train-{000000..000041}.tar``, a list of any of these), local or ``http(s)://`` / ``s3://``,
  → :class:`ResolvedSource`: its shards and ONE clip index over all of them.

Clip byte ranges come from the split's clip index (:mod:`.clip_index`, named by its manifest): for a
split directory or manifest, the memory-mapped file itself; for shards named one by one, a brace
pattern or several sources, their rows concatenated in memory. Never a Python object per clip.
Shards named without a manifest use the ``manifest.json`` beside them when there is one; otherwise
local shards are indexed by reading them (:func:`scan_local_shard`), and remote ones need a manifest.

:func:`read_clip` reads one clip — by key, index row or :class:`ClipRef` — from its own byte range,
all its members or a selection (:class:`~.sample.Members`), through the one clip reader
(:func:`.clip_reader.iter_clips`). Opening bytes is :func:`open_clips`: it hands the byte range to
:mod:`shardgen.core.storage`, where the one address parser chooses the backend.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Sequence

import braceexpand
import numpy as np

from .clip_index import ClipIndex, ClipIndexWriter, ClipRef, concat_indexes
from .clip_reader import iter_clips, read_selected
from .format import FormatError, person_tracks, untrusted_json
from .manifest import MANIFEST_NAME, read_index, read_manifest
from .sample import LABELS, ClipSample, Members
from .storage import ShardCache, SparseWindow, TransportOptions, Window, is_remote, join, object_size, open_range, parent, read_bytes
from .tario import DEFAULT_MAX_MEMBER, TarError

BUILD_REPORT = "build-report.json"  # written by the builder beside the split directories


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
    manifests: list[dict] = field(default_factory=list)  # those read: named, or beside shards named one by one
    named: str = "this source"  # the source as it was named, for messages

    @functools.cached_property
    def bounds(self) -> np.ndarray:
        """``[S+1]``: shard ``s``'s clips are index rows ``bounds[s]:bounds[s+1]``."""
        return self.clips.shard_bounds(len(self.shards))

    def shard_rows(self, shard: int) -> range:
        return range(int(self.bounds[shard]), int(self.bounds[shard + 1]))

    def row(self, clip: str | int | ClipRef) -> int:
        """A clip's row in the clip index, by key, row or :class:`ClipRef` (a clip the source does not hold is
        a ValueError)."""
        if isinstance(clip, ClipRef):
            rows = self.shard_rows(clip.shard)  # a shard's rows are in byte order
            offsets = self.clips.columns["offset"][rows.start:rows.stop]
            at = rows.start + int(np.searchsorted(offsets, np.uint64(clip.offset)))
            if at < rows.stop and int(self.clips.columns["offset"][at]) == clip.offset:
                return at
            raise ValueError(f"clip {clip.key} at byte {clip.offset} of shard {clip.shard} is not in this source")
        if isinstance(clip, str):
            row = self.clips.find(clip)
            if row is None:  # name a few keys it does hold: the key's own video's first, else the source's
                near = self.clips.video_rows(clip.split("/")[0])[:6]
                if not len(near):
                    near = np.arange(min(6, len(self.clips)))
                keys = [self.clips.key(int(r)) for r in near[:5]]
                raise ValueError(f"clip {clip!r} is not in {self.named}; it has {len(self.clips)} clips, e.g. "
                                 f"{', '.join(keys)}{', ...' if len(near) > 5 else ''}")
            return row
        row = int(clip)
        if not 0 <= row < len(self.clips):
            raise ValueError(f"clip row {row} is outside this source's {len(self.clips)} clips")
        return row


# --------------------------------------------------------------------------- source → manifest


def find_manifests(source: str | os.PathLike, *, split: str | None = None,
                   options: TransportOptions | dict | None = None) -> list[str]:
    """The manifest URL(s) a source names: a ``.json`` itself; a split directory or prefix → its
    ``manifest.json``; a build directory → ``<split>/manifest.json`` of ``split``, or of every split it holds.

    Remote prefixes cannot be listed: a URL is a split prefix, or, when it holds no manifest itself (a HEAD
    request says), a build prefix — of ``split``, or of the splits its ``build-report.json`` names. A local
    path that is none of these is a FileNotFoundError saying what was expected.
    """
    s = os.fspath(source)
    if s.endswith(".json"):
        if not is_remote(s) and not Path(s).is_file() and _local_splits(Path(s).parent):
            raise ValueError(_build_directory(Path(s).parent, _local_splits(Path(s).parent)))  # <build>/manifest.json
        return [s]
    if is_remote(s):
        here = join(s, MANIFEST_NAME)
        if object_size(here, options) is not None:
            return [here]
        if split is not None:
            return [join(join(s, split), MANIFEST_NAME)]
        return [join(join(s, name), MANIFEST_NAME) for name in _reported_splits(s, here, options)]
    d = Path(s)
    if (d / MANIFEST_NAME).is_file():
        return [str(d / MANIFEST_NAME)]
    splits = _local_splits(d)
    if split is not None and split in splits:
        return [str(d / split / MANIFEST_NAME)]
    if split is None and splits:
        return [str(d / name / MANIFEST_NAME) for name in splits]
    if splits:
        raise FileNotFoundError(f"{s}: a build directory with split(s) {', '.join(splits)}, but no {split!r}")
    raise FileNotFoundError(f"{s}: not a manifest, a split directory or a build directory with split directories "
                            "(build with shardgen, or name the .tar shards)")


def _local_splits(directory: Path) -> list[str]:
    """The splits of a local build directory: its sub-directories holding a manifest."""
    return sorted(m.parent.name for m in directory.glob(f"*/{MANIFEST_NAME}")) if directory.is_dir() else []


def _build_directory(build: str | os.PathLike, splits: list[str]) -> str:
    """What to pass instead of a build directory where one split is needed."""
    b = os.fspath(build).rstrip("/")
    return (f"{b} is a build directory: pass one of its splits, e.g. {b}/{splits[0]} (it has {', '.join(splits)}), "
            f"or split={splits[0]!r}")


def read_build_report(build: str | os.PathLike, options: TransportOptions | dict | None = None) -> dict | None:
    """A build directory's or prefix's ``build-report.json`` (what the builder wrote beside the split directories:
    every split's totals and every skip with its reason), or None when there is none — it is optional: a split
    copied alone has none. A report that is not a JSON object is a FormatError naming it."""
    url = join(os.fspath(build), BUILD_REPORT)
    try:
        data = read_bytes(url, TransportOptions.coerce(options))
    except FileNotFoundError:  # a remote 404 too (RemoteNotFoundError)
        return None
    try:
        report = untrusted_json(data)
    except ValueError as exc:
        raise FormatError(f"{url}: not JSON ({exc})") from None
    if not isinstance(report, dict):
        raise FormatError(f"{url}: not a build report")
    return report


def _reported_splits(build: str, manifest: str, options) -> list[str]:
    """The splits a remote build's ``build-report.json`` names (a prefix cannot be listed over HTTP)."""
    url = join(build, BUILD_REPORT)
    report = read_build_report(build, options)
    if report is None:
        raise FileNotFoundError(f"{manifest}: no manifest there, and no {BUILD_REPORT} beside naming splits "
                                f"(name a split: {join(build, 'train')})")
    names = [s.get("split") for s in report.get("splits", []) if isinstance(s, dict)]
    if not names or not all(isinstance(n, str) and n and "/" not in n and n not in (".", "..") for n in names):
        raise FormatError(f"{url}: its 'splits' do not name split directories")
    return names


def find_manifest(source: str | os.PathLike, *, split: str | None = None,
                  options: TransportOptions | dict | None = None) -> str:
    """The one manifest a source names (see :func:`find_manifests`); a build directory of several splits
    needs ``split``."""
    found = find_manifests(source, split=split, options=options)
    if len(found) > 1:
        raise ValueError(_build_directory(source, [parent(m).rstrip("/").rsplit("/", 1)[-1] for m in found]))
    return found[0]


# --------------------------------------------------------------------------- source → shards + clip index


def resolve(source, *, split: str | None = None, remote_options: TransportOptions | dict | None = None) -> ResolvedSource:
    """Turn any accepted source spec into a :class:`ResolvedSource` (``split``: of a build directory)."""
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
                    if beside[folder] is not None:
                        manifests.append(beside[folder][0])  # the shards' split, its parameters
                info, index = _single_shard(url, beside[folder])
            else:  # a manifest, a split directory or prefix, a build directory
                murl = find_manifest(url, split=split, options=remote_options)
                m = read_manifest(murl, remote_options)
                manifests.append(m)
                info = [ShardInfo(join(parent(murl), s["name"]), s["name"], s["bytes"], s["sha256"]) for s in m["shards"]]
                index = read_index(m, murl, remote_options)
            infos = info if isinstance(info, list) else [info]
            parts.append((index, len(shards)))
            shards += infos
    if not shards:
        raise ValueError(f"source {source!r} names no shards")
    named = os.fspath(source) if isinstance(source, (str, os.PathLike)) else repr(source)
    return ResolvedSource(shards, concat_indexes(parts), manifests, named)


def _expand(spec: str) -> list[str]:
    if "{" in spec:
        return list(braceexpand.braceexpand(spec))
    return [spec]


def _try_manifest(url: str, remote_options: TransportOptions) -> tuple | None:
    """The manifest beside a shard and its index, or None when there is none (a manifest there that is
    damaged or from an older avshards is an error, not a reason to index the shard by hand)."""
    try:
        m = read_manifest(url, remote_options)
    except FileNotFoundError:  # a remote 404 too: there is none
        return None
    index = read_index(m, url, remote_options)
    return m, index, index.shard_bounds(len(m["shards"]))  # bounds once: shards named one by one reuse them


def _single_shard(url: str, beside: tuple | None) -> tuple[ShardInfo, ClipIndex]:
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
    """Index a local shard that has no manifest: each clip's key, byte range, member count, frames and face
    tracks, read from the shard through the one clip reader (the metadata and label arrays of each clip are
    read and checked as the loader checks them; frames and audio are seeked past). Any damage is a ValueError
    naming the shard."""
    shard = ShardInfo(str(path), Path(path).name, os.path.getsize(path), None)
    rows: list[tuple] = []
    try:
        stream = open_clips(shard, 0, shard.bytes, sparse=True)
        try:  # no length: the stream must end with the end-of-archive marker (a cut shard is not a short one)
            for clip in iter_clips(stream, source=shard.url, members=LABELS):
                sample = clip.sample()
                pad = sample.meta.get("pad_frames", 0)
                if type(pad) is not int or not 0 <= pad <= sample.n_frames:
                    raise FormatError(f"{clip.key}.json: pad_frames {pad!r} is not a frame count")
                rows.append((clip.key, clip.offset, clip.bytes, "", clip.count, sample.n_frames, pad,
                             person_tracks(sample.boxes)))
        finally:
            stream.close()
    except (TarError, FormatError, OSError) as exc:
        msg = str(exc)
        msg = msg[len(shard.url) + 1:] if msg.startswith(f"{shard.url} ") else msg  # "at byte N: ...", said once
        raise ValueError(f"{path}: cannot index shard ({msg})") from None
    writer = ClipIndexWriter()
    writer.add_shard(0, rows)  # no sha256: there is nothing to check it against
    return shard, writer.index()


# --------------------------------------------------------------------------- reading


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
    512-byte read, instead of refilling a 1 MiB buffer with bytes nobody wants (and headers can be
    read by offset: :class:`~.storage.stream.SparseWindow`).
    """
    options = TransportOptions.coerce(options)
    if is_remote(shard.url) and options.cache_dir:
        fh = shard_cache(options).open(shard.url, expected_sha256=shard.sha256, expected_size=shard.bytes)
        fh.seek(offset)
        return Window(fh, length, local=True)
    fh = open_range(shard.url, options, start=offset, end=offset + length, sparse=sparse)
    if sparse and not is_remote(shard.url):
        return SparseWindow(fh, length)
    return Window(fh, length, local=not is_remote(shard.url))


def read_clip(source: ResolvedSource, clip: str | int | ClipRef, *, members: Members | None = None,
              options: TransportOptions | dict | None = None, max_member_bytes: int = DEFAULT_MAX_MEMBER) -> ClipSample:
    """One clip of a resolved source — by key, clip-index row or :class:`ClipRef` — checked.

    Only the clip's own byte range is read (from the clip index), all its members or, with ``members``,
    the metadata and the selected ones (the others' headers are read and checked, their data seeked past,
    and the read stops once the selection is complete). The clip found there must be the one the index
    places there, its members named and grouped as :func:`.clip_reader.iter_clips` checks, its content as
    :class:`ClipSample` checks; a whole clip's bytes must also hash to the sha256 its index row records
    (an index made by scanning a bare shard records none). Errors name the shard: :class:`TarError`
    (damaged or hostile bytes, with the byte offset), :class:`FormatError` (the clip's content), ``OSError``
    (the shard cannot be read), ValueError (a key or row the source does not hold).
    """
    ref = clip if isinstance(clip, ClipRef) else source.clips.ref(source.row(clip))
    shard = source.shards[ref.shard]
    stream = open_clips(shard, ref.offset, ref.bytes, options, sparse=members is not None)
    digests = ClipDigests(stream, [ref]) if members is None else None  # a whole read passes over nothing
    try:
        quick = None
        if members is not None and isinstance(stream, SparseWindow):  # a local file: headers read by offset
            quick = read_selected(stream.pread, key=ref.key, offset=ref.offset, length=ref.bytes, members=members,
                                  max_member_bytes=max_member_bytes)
        found = [quick] if quick is not None else list(iter_clips(
            stream if digests is None else digests, source=shard.url, length=ref.bytes,
            base_offset=ref.offset, members=members, expect=[(ref.key, ref.offset)], max_member_bytes=max_member_bytes))
    finally:
        stream.close()
    if not found:
        raise TarError(f"{shard.url} at byte {ref.offset}: no clip there; the clip index places {ref.key} there "
                       "(shard and clip index disagree)")
    try:
        sample = found[0].sample()
    except FormatError as exc:
        raise FormatError(f"{shard.url}: {exc}") from None
    if digests is not None:
        digests.check(0, shard.url)
    return sample


class ClipDigests:
    """A stream over consecutive clips (a whole read: no ``skip``), each clip's bytes hashed as they are read,
    so that every clip can be checked against the sha256 its index row records (:class:`ClipRef`.sha256)."""

    def __init__(self, stream: BinaryIO, clips: Sequence[ClipRef]):
        self._stream = stream
        self._clips = list(clips)
        self._digests = [hashlib.sha256() for _ in self._clips]
        self._at, self._left = 0, (self._clips[0].bytes if self._clips else 0)

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        view, pos = memoryview(data), 0
        while pos < len(view) and self._at < len(self._clips):
            take = min(self._left, len(view) - pos)
            self._digests[self._at].update(view[pos:pos + take])
            pos, self._left = pos + take, self._left - take
            if self._left == 0:
                self._at += 1
                self._left = self._clips[self._at].bytes if self._at < len(self._clips) else 0
        return data

    def check(self, i: int, source: str) -> None:
        """Raise :class:`TarError` if clip ``i``'s bytes differ from its recorded sha256, or were not all read by
        the time the reader handed the clip over (it ended early: shard and index disagree). A clip whose index
        records no sha256 passes."""
        ref = self._clips[i]
        if ref.sha256 is None:
            return
        if i >= self._at:  # the reader found the clip complete before the end of the range the index gives it
            raise TarError(f"{source}: clip {ref.key} ends before the {ref.bytes} bytes its clip index records "
                           f"(from byte {ref.offset}): the shard and its clip index disagree (damaged shard or stale index)")
        if self._digests[i].hexdigest() != ref.sha256:
            raise TarError(f"{source}: clip {ref.key} (bytes {ref.offset}-{ref.offset + ref.bytes}) differs from the "
                           "sha256 its clip index records: the shard is damaged (shardgen verify names every such clip)")

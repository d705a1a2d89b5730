"""What a build holds, as the viewer browses it: splits, their clip indexes, videos, and skipped clips.

A source is a build directory (its split directories, or the splits its ``build-report.json``
lists when the build is remote), a split directory, a manifest, or shards — each local, over
``http(s)://`` or in ``s3://``; :func:`shardgen.core.sources.find_manifests` says which manifests it
names. Each split is resolved once, by :func:`shardgen.core.sources.resolve`,
to its shards and its clip index (memory-mapped when local, fetched in one request when remote);
everything the browse pages list comes from the index columns, without reading a shard. The build
report, when there is one beside the split directories, adds the clips the builder skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from shardgen.core.format import FormatError
from shardgen.core.manifest import read_manifest
from shardgen.core.sources import BUILD_REPORT, ResolvedSource, find_manifests, resolve
from shardgen.core.storage import TransportOptions, join, parent, read_bytes


@dataclass
class Split:
    """One split: its name, where it was read from, its shards and clip index, and its build-report skips."""

    name: str
    location: str
    index: ResolvedSource
    skipped: list[dict] = field(default_factory=list)  # build-report.json rows of this split

    @property
    def fps(self) -> float:
        """The build's frame rate (the manifest's parameters; 30 for bare shards, as the builder's default)."""
        params = self.index.manifests[0].get("params", {}) if self.index.manifests else {}
        return float(params.get("fps", 30.0))

    def videos(self) -> list["VideoRow"]:
        """Every video of the split with its clip count and length, in the order the index first names them."""
        c = self.index.clips.columns
        video = np.asarray(c["video"], dtype=np.int64)
        names = self.index.clips.video_names()
        clips = np.bincount(video, minlength=len(names))
        frames = np.bincount(video, weights=np.asarray(c["n_frames"], dtype=np.float64), minlength=len(names))
        tracks = np.bincount(video, weights=np.diff(np.asarray(c["track_start"], dtype=np.int64)), minlength=len(names))
        skipped: dict[str, list[dict]] = {}
        for s in self.skipped:
            skipped.setdefault(s.get("video_id", ""), []).append(s)
        rows = [VideoRow(n, int(clips[v]), int(frames[v]), int(tracks[v]), skipped.pop(n, []))
                for v, n in enumerate(names) if clips[v]]
        rows += [VideoRow(v, 0, 0, 0, s) for v, s in skipped.items()]  # videos of which no clip was written
        return rows


@dataclass
class VideoRow:
    video_id: str
    clips: int
    frames: int
    tracks: int
    skipped: list[dict]


class Catalog:
    """The splits of one source, found once at start-up; read-only afterwards (shared by the server's threads)."""

    def __init__(self, source: str, splits: list[Split], options: TransportOptions):
        if not splits:
            raise ValueError(f"{source}: no split found")
        self.source = source
        self.options = options
        self.empty: list[str] = []  # splits whose manifest lists no shard (every clip skipped), not browsable
        self.splits: dict[str, Split] = {}
        for s in splits:
            name = s.name if s.name not in self.splits else f"{s.name} ({s.location})"
            self.splits[name] = s
            s.name = name

    def locate(self, key: str) -> tuple[Split, int] | None:
        """The split and index row of the clip ``key`` (a video is in one split only), or None."""
        for split in self.splits.values():
            row = split.index.clips.find(key)
            if row is not None:
                return split, row
        return None

    def search(self, text: str, limit: int = 100) -> list[tuple[Split, str]]:
        """Videos whose id contains ``text`` (case-insensitive), at most ``limit``."""
        needle = text.lower()
        found = []
        for split in self.splits.values():
            for name in split.index.clips.video_names():
                if needle in name.lower():
                    found.append((split, name))
                    if len(found) >= limit:
                        return found
        return found


def open_catalog(source, options: TransportOptions | dict | None = None) -> Catalog:
    """Resolve ``source`` (build directory, split directory, manifest or shards; local or remote) to its splits."""
    options = TransportOptions.coerce(options)
    spec = str(source)
    if spec.endswith(".tar") or "{" in spec:
        index = resolve(spec, remote_options=options)
        return Catalog(spec, [Split(_shards_split(index), spec, index)], options)
    manifests = find_manifests(spec, options=options)  # a manifest, a split directory, or every split of a build
    reports: dict[str, dict | None] = {}
    splits, empty = [], []
    for murl in manifests:
        if not read_manifest(murl, options)["shards"]:  # a split with no clip (all skipped): nothing to index
            empty.append(parent(murl))
            continue
        index = resolve(murl, remote_options=options)
        name = index.manifests[0]["split"]
        build = parent(parent(murl))
        if build not in reports:
            reports[build] = _read_build_report(join(build, BUILD_REPORT), options)
        skipped = [s for s in (reports[build] or {}).get("skipped", []) if isinstance(s, dict) and s.get("split") == name]
        splits.append(Split(name, parent(murl), index, skipped))
    if not splits:
        raise ValueError(f"{spec}: no split holds a clip ({', '.join(empty)} list no shards)")
    catalog = Catalog(spec, splits, options)
    catalog.empty = empty
    return catalog


def _shards_split(index: ResolvedSource) -> str:
    """The split of shards named one by one: the one the manifest beside them names, else "shards"."""
    return str(index.manifests[0]["split"]) if index.manifests else "shards"


def _read_build_report(url: str, options: TransportOptions) -> dict | None:
    """The build report, or None when there is none (it is optional: a split copied alone has none)."""
    try:
        data = read_bytes(url, options)
    except FileNotFoundError:  # also a remote 404 (RemoteNotFoundError)
        return None
    try:
        report = json.loads(data)
    except ValueError as exc:
        raise FormatError(f"{url}: not JSON ({exc})") from None
    if not isinstance(report, dict):
        raise FormatError(f"{url}: not a build report")
    return report

"""The manifest: one split's table of contents, written by the builder and read by everyone else.

``<out>/<split>/manifest.json`` holds the byte-affecting build parameters, totals, every shard
with size and sha256, and the name, size and sha256 of the split's clip index (``clips.idx``,
:mod:`.clip_index`: every clip's shard, byte range, sha256 and face tracks in binary columns).
It stays small (a 1M-clip split's manifest is its shard list) and holds nothing that varies
between identical builds (no time stamps, paths or worker counts), so identical input gives an
identical manifest and index. The loader plans epochs from the index, ``shardgen verify`` checks
shards against both; the builder assembles them (:mod:`shardgen.build.manifest_writer`).

Version 1 manifests (avshards before the clip index) listed every clip inline; they are refused
with a message naming ``shardgen upgrade-manifest``, which converts one in place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import format as fmt
from .clip_index import ClipIndex, digest, index_from_bytes, open_index
from .storage import RemoteNotFoundError, TransportOptions, is_remote, join, parent, read_bytes

MANIFEST_SCHEMA = "avshards/manifest"
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 2  # 2: clip rows moved to the clips.idx sidecar
UPGRADE_HINT = "convert it in place with `shardgen upgrade-manifest <split dir>`, or rebuild the split"


def encode_manifest(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=1, sort_keys=False) + "\n").encode()


def load_manifest(path: Path | str, data: bytes | None = None) -> dict:
    """Read and check a manifest (bytes may be given when it came over the network)."""
    raw = data if data is not None else Path(path).read_bytes()
    m = fmt.load_versioned_json(raw, name=str(path), schema=MANIFEST_SCHEMA, what="manifest", record="file",
                                version=MANIFEST_VERSION, older=UPGRADE_HINT)
    entry = m.get("index")
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or "/" in entry["name"] \
            or not isinstance(m.get("shards"), list):
        raise fmt.FormatError(f"{path}: manifest names no clip index (or no shard list)")
    return m


def read_manifest(url: str | os.PathLike, options: TransportOptions | None = None) -> dict:
    """Fetch and check a manifest from anywhere; a missing one is a FileNotFoundError saying what to do."""
    url = os.fspath(url)
    if not is_remote(url) and not Path(url).is_file():
        raise FileNotFoundError(f"{url}: no manifest there ({_what_to_pass(Path(url).parent)})")
    return load_manifest(url, read_bytes(url, options))


def _what_to_pass(directory: Path) -> str:
    """What to name instead of a directory without a manifest: a build directory's split, when it is one."""
    splits = sorted(p.parent.name for p in directory.glob(f"*/{MANIFEST_NAME}")) if directory.is_dir() else []
    if splits:
        return (f"{directory} is a build directory: pass one of its splits, e.g. {directory / splits[0]} "
                f"(it has {', '.join(splits)})")
    return "build with shardgen, or name the .tar shards"


def read_index(manifest: dict, manifest_at: str | os.PathLike, options: TransportOptions | None = None, *,
               check_sha256: bool | None = None) -> ClipIndex:
    """The clip index a manifest names, beside it: memory-mapped where local, fetched in one request where
    remote. Its size, counts and (for fetched bytes, or when ``check_sha256``) sha256 must match the manifest."""
    entry = manifest["index"]
    url = join(parent(os.fspath(manifest_at)), entry["name"])
    remote = is_remote(url)
    missing = (f"{url}: the clip index that {os.fspath(manifest_at)} names is missing "
               "(copy it with the manifest, or rebuild the split)")
    if remote:
        try:
            data = read_bytes(url, options)
        except RemoteNotFoundError as exc:
            raise RemoteNotFoundError(f"{missing}: {exc}", url=url) from None
        index = index_from_bytes(data, name=url)
    else:
        if not Path(url).is_file():
            raise FileNotFoundError(missing)
        index = open_index(url)
        data = None
    size = len(data) if data is not None else Path(url).stat().st_size
    if size != entry.get("bytes"):
        raise fmt.FormatError(f"{url}: {size} bytes, the manifest says {entry.get('bytes')} (index and manifest disagree)")
    if (remote if check_sha256 is None else check_sha256):
        got = digest(data if data is not None else Path(url).read_bytes())
        if got != entry.get("sha256"):
            raise fmt.FormatError(f"{url}: sha256 {got[:12]}… differs from the manifest's (index and manifest disagree)")
    totals = manifest.get("totals", {})
    if len(index) != entry.get("clips", totals.get("clips")) or index.n_tracks != entry.get("tracks", index.n_tracks):
        raise fmt.FormatError(f"{url}: {len(index)} clips / {index.n_tracks} tracks, the manifest says "
                              f"{entry.get('clips')} / {entry.get('tracks')}")
    return index.check(len(manifest["shards"]), url, shard_bytes=[sh.get("bytes") for sh in manifest["shards"]])

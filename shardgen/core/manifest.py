"""The manifest: one split's index, written by the builder and read by everyone else.

``<out>/<split>/manifest.json`` holds the byte-affecting build parameters, every shard with size
and sha256, every clip with its shard, byte offset, byte count, sha256 and face tracks, and totals.
It holds nothing that varies between identical builds (no time stamps, paths or worker counts),
so identical input gives an identical manifest. The loader plans epochs from it, ``shardgen
verify`` checks shards against it; the builder assembles it (:mod:`shardgen.manifest`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import format as fmt
from .storage import TransportOptions, is_remote, join, read_bytes

MANIFEST_SCHEMA = "avshards/manifest"
MANIFEST_NAME = "manifest.json"


def encode_manifest(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=1, sort_keys=False) + "\n").encode()


def load_manifest(path: Path | str, data: bytes | None = None) -> dict:
    """Read and check a manifest (bytes may be given when it came over the network)."""
    raw = data if data is not None else Path(path).read_bytes()
    return fmt.load_versioned_json(raw, name=str(path), schema=MANIFEST_SCHEMA, what="manifest", record="file")


def manifest_url(source: str | os.PathLike) -> str:
    """The manifest a source names: itself when it ends in ``.json``, else the one in the split
    directory or prefix it names (local or ``http(s)://`` / ``s3://``)."""
    s = os.fspath(source)
    return s if s.endswith(".json") else join(s, MANIFEST_NAME)


def read_manifest(url: str | os.PathLike, options: TransportOptions | None = None) -> dict:
    """Fetch and check a manifest from anywhere; a missing one is a FileNotFoundError saying what to do."""
    url = os.fspath(url)
    if not is_remote(url) and not Path(url).is_file():
        raise FileNotFoundError(f"{url}: no manifest there (build with shardgen, or name the .tar shards)")
    return load_manifest(url, read_bytes(url, options))

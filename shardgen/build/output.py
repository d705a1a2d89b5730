"""Where a split's files end up: a local directory, or an ``s3://`` prefix via local staging.

Shards are always written to a local directory first (atomically, see :mod:`.writer`). For a
local build that directory is the destination. For ``--out s3://bucket/prefix`` it is a staging
directory: each finished shard is uploaded (multipart when large), then a small resume record
(``<split>/.index/<shard>.json``: size, sha256, clip offsets), then the local copy is deleted.
The split's clip index (``clips.idx``) goes up after every shard and the manifest last, after the
index, so a reader that can see a manifest can read the index and every shard it names. (The
``.index/`` records are the builder's own resume bookkeeping, not the clip index readers use.)

Local outputs keep the same resume records (``<split>/.index/<shard>.json``). Each record also holds
the fingerprint of the shard's sources (frame sizes and mtimes, wav size and mtime, the videos'
annotations): a re-run keeps a finished shard only when its record is there, its size matches and
its sources are unchanged — so editing an annotation file and re-running rebuilds exactly the
shards whose labels changed, instead of keeping stale ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

from ..core.storage import LocalStore, S3Options, open_writable, parse_location, remove_stale_temps
from .writer import ClipRecord, ShardResult

RESUME_DIR = ".index"


def is_s3(out: str | os.PathLike) -> bool:
    return parse_location(out).kind == "s3"


def result_to_json(res: ShardResult, source_digest: str) -> bytes:
    return (json.dumps({**asdict(res), "source": source_digest}, sort_keys=True) + "\n").encode()


def result_from_json(data: bytes) -> tuple[ShardResult, str]:
    d = json.loads(data)
    return ShardResult(d["name"], d["bytes"], d["sha256"], [ClipRecord(**c) for c in d["clips"]]), d.get("source", "")


class SplitOutput:
    """One split's destination: a :class:`~shardgen.core.storage.WritableStore` plus the local directory
    (``local_dir``) where shard files are written — the destination itself for a local build,
    a staging directory for ``s3://``."""

    def __init__(self, out: str | os.PathLike, split: str, *, staging: str | os.PathLike | None = None,
                 s3_options: S3Options | None = None, create: bool = True):
        """``create=False``: touch nothing until :meth:`prepare` (the build looks first, and a build it
        refuses leaves the output as it found it)."""
        self.split = split
        self.out = str(out)
        if is_s3(out):
            self.store = open_writable(self.out, s3_options)
            root = Path(staging) if staging else Path(tempfile.gettempdir()) / (
                "avshards-staging-" + hashlib.sha1(self.out.encode()).hexdigest()[:12])
            self.local_dir = root / split
            self.staged = True
        else:
            self.store = LocalStore(out, create=create)
            self.local_dir = self.store.root / split
            self.staged = False
        if create:
            self.local_dir.mkdir(parents=True, exist_ok=True)

    def __reduce__(self):  # shipped to worker processes / Ray tasks: rebuild the store there
        return (_rebuild, (self.out, self.split, str(self.local_dir.parent) if self.staged else None,
                           getattr(self.store, "s3_options", None)))

    def prepare(self) -> None:
        """Make the local directory and remove temp files a killed build left there (only at the start of a
        build's writing: a copy of this object inside a worker must never touch another worker's temp file)."""
        self.local_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.local_dir)
        remove_stale_temps(self.local_dir / RESUME_DIR)

    def _name(self, name: str) -> str:
        return f"{self.split}/{name}"

    def read(self, name: str) -> bytes | None:
        return self.store.read_bytes(self._name(name)) if self.store.size(self._name(name)) is not None else None

    def write(self, name: str, data: bytes) -> None:
        self.store.put_bytes(data, self._name(name))

    def remove(self, name: str) -> None:
        self.store.delete(self._name(name))

    def shard_names(self) -> list[str]:
        prefix = self._name(f"{self.split}-")
        return sorted(n.rsplit("/", 1)[-1] for n in self.store.list(prefix) if n.endswith(".tar") and "/" not in n[len(prefix):])

    def finished(self, name: str, source_digest: str) -> ShardResult | None:
        """A shard already complete at the destination, made from the same sources (else None)."""
        record = self.read(f"{RESUME_DIR}/{name}.json")
        if record is None:
            return None
        try:
            res, source = result_from_json(record)
        except (ValueError, KeyError, TypeError):
            return None
        return res if self.store.size(self._name(name)) == res.bytes and source == source_digest else None

    def publish(self, res: ShardResult, source_digest: str) -> None:
        """After a shard is written to ``local_dir``: upload it when staged, then record it; the record marks it finished."""
        if self.staged:
            path = self.local_dir / res.name
            self.store.put_file(path, self._name(res.name))
            path.unlink(missing_ok=True)
        self.write(f"{RESUME_DIR}/{res.name}.json", result_to_json(res, source_digest))

    def remove_shard(self, name: str) -> None:
        self.remove(f"{RESUME_DIR}/{name}.json")
        self.remove(name)

    def url(self, name: str) -> str:
        return self.store.url(self._name(name))


def _rebuild(out, split, staging, s3_options):
    return SplitOutput(out, split, staging=staging, s3_options=s3_options)

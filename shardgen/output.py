"""Where a split's files end up: a local directory, or an ``s3://`` prefix via local staging.

Shards are always written to a local directory first (atomically, see :mod:`.writer`). For a
local build that directory is the destination. For ``--out s3://bucket/prefix`` it is a staging
directory: each finished shard is uploaded (multipart when large), then a small index record
(``<split>/.index/<shard>.json``: size, sha256, clip offsets), then the local copy is deleted.
The manifest goes up last, after every shard, so a reader that can see a manifest can read every
shard it names. A re-run finds the uploaded shards through their index records and resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

from .writer import ClipRecord, ShardResult, atomic_write_bytes, index_shard, remove_stale_temps

INDEX_DIR = ".index"


def is_s3(out: str | os.PathLike) -> bool:
    return str(out).startswith("s3://")


def result_to_json(res: ShardResult) -> bytes:
    return (json.dumps(asdict(res), sort_keys=True) + "\n").encode()


def result_from_json(data: bytes) -> ShardResult:
    d = json.loads(data)
    return ShardResult(d["name"], d["bytes"], d["sha256"], [ClipRecord(**c) for c in d["clips"]])


class SplitOutput:
    """One split's destination. ``local_dir`` is where shard files are written."""

    def __init__(self, out: str | os.PathLike, split: str, *, staging: str | os.PathLike | None = None, s3_options=None):
        self.split = split
        self.out = str(out)
        if is_s3(out):
            from .storage import open_store

            self.store = open_store(self.out, s3_options)
            root = Path(staging) if staging else Path(tempfile.gettempdir()) / (
                "avshards-staging-" + hashlib.sha1(self.out.encode()).hexdigest()[:12])
            self.local_dir = root / split
        else:
            self.store = None
            self.local_dir = Path(out) / split
        self.local_dir.mkdir(parents=True, exist_ok=True)

    def clean_temps(self) -> None:
        """Remove temp files a killed build left in the local directory (only at the start of a build:
        a copy of this object inside a worker must never touch another worker's temp file)."""
        remove_stale_temps(self.local_dir)

    def __reduce__(self):  # shipped to worker processes / Ray tasks: rebuild the store there
        return (_rebuild, (self.out, self.split, str(self.local_dir.parent) if self.store else None,
                           getattr(self.store, "options", None)))

    def _name(self, name: str) -> str:
        return f"{self.split}/{name}"

    # -------------------------------------------------------------- small files
    def read(self, name: str) -> bytes | None:
        if self.store is None:
            p = self.local_dir / name
            return p.read_bytes() if p.exists() else None
        return self.store.get_bytes(self._name(name)) if self.store.exists(self._name(name)) is not None else None

    def write(self, name: str, data: bytes) -> None:
        if self.store is None:
            atomic_write_bytes(self.local_dir / name, data)
        else:
            self.store.put_bytes(data, self._name(name))

    def remove(self, name: str) -> None:
        if self.store is None:
            (self.local_dir / name).unlink(missing_ok=True)
        elif self.store.exists(self._name(name)) is not None:
            self.store.delete(self._name(name))

    # -------------------------------------------------------------- shards
    def shard_names(self) -> list[str]:
        if self.store is None:
            return sorted(p.name for p in self.local_dir.glob(f"{self.split}-*.tar"))
        prefix = self._name(f"{self.split}-")
        return sorted(n.rsplit("/", 1)[-1] for n in self.store.list(prefix) if n.endswith(".tar"))

    def finished(self, name: str) -> ShardResult | None:
        """A shard that is already complete at the destination (from an earlier, interrupted run)."""
        if self.store is None:
            path = self.local_dir / name
            if not path.exists():
                return None
            try:
                return index_shard(path)
            except Exception:
                return None
        size = self.store.exists(self._name(name))
        record = self.read(f"{INDEX_DIR}/{name}.json")
        if size is None or record is None:
            return None
        res = result_from_json(record)
        return res if res.bytes == size else None

    def publish(self, res: ShardResult) -> None:
        """After a shard is written locally: upload it and its index record (S3), then drop the local copy."""
        if self.store is None:
            return
        path = self.local_dir / res.name
        self.store.put_file(path, self._name(res.name))
        self.write(f"{INDEX_DIR}/{res.name}.json", result_to_json(res))
        path.unlink(missing_ok=True)

    def remove_shard(self, name: str) -> None:
        self.remove(name)
        if self.store is not None:
            self.remove(f"{INDEX_DIR}/{name}.json")

    def url(self, name: str) -> str:
        return self.store.url(self._name(name)) if self.store is not None else str(self.local_dir / name)


def _rebuild(out, split, staging, s3_options):
    return SplitOutput(out, split, staging=staging, s3_options=s3_options)

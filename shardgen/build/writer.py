"""Deterministic, atomic tar shards.

Every header field that could vary between runs is fixed (mtime 0, uid/gid 0, empty owner
names, mode 0444, PAX format), members are written in plan order, and the file appears under
its final name only when complete: it is written to ``.<name>.tmp-<pid>`` in the same
directory, fsynced, then renamed. A killed build leaves at most a temp file, which the next
run removes; a shard under its final name is always whole.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..core import format as fmt
from ..core.storage.atomic import atomic_file

@dataclass(slots=True)  # a shard holds one per clip (the driver reduces a shard's at once: build._write)
class ClipRecord:
    key: str
    offset: int  # byte offset of the clip's first tar header in the shard
    bytes: int  # bytes from that header to the next clip's (or the end-of-archive marker)
    members: int
    sha256: str = ""  # of exactly those bytes: lets verify name the damaged clip
    info: dict = field(default_factory=dict)  # what the clip index keeps of the clip besides its bytes: its face tracks


@dataclass
class ShardResult:
    name: str
    bytes: int
    sha256: str
    clips: list[ClipRecord] = field(default_factory=list)


class _HashingFile(io.RawIOBase):
    """A write-only file wrapper that hashes and counts what passes through."""

    def __init__(self, fh):
        self._fh = fh
        self.sha = hashlib.sha256()
        self.clip_sha = hashlib.sha256()
        self.pos = 0

    def writable(self):
        return True

    def write(self, b):
        self._fh.write(b)
        self.sha.update(b)
        self.clip_sha.update(b)
        self.pos += len(b)
        return len(b)

    def tell(self):
        return self.pos


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = fmt.TAR_MTIME
    info.mode = fmt.TAR_MODE
    info.uid, info.gid = fmt.TAR_UID, fmt.TAR_GID
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def write_shard(path: Path, clips: Iterable[tuple[str, list[tuple[str, bytes]], dict]]) -> ShardResult:
    """Write ``(key, members, info)`` clips to ``path`` atomically; returns its size, sha256 and clip offsets."""
    path = Path(path)
    records: list[ClipRecord] = []
    with atomic_file(path) as raw:
        hashing = _HashingFile(raw)
        with tarfile.open(fileobj=hashing, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for key, members, info in clips:
                start = tar.offset
                hashing.clip_sha = hashlib.sha256()
                for name, data in members:
                    tar.addfile(_tarinfo(name, len(data)), io.BytesIO(data))
                records.append(ClipRecord(key, start, tar.offset - start, len(members), hashing.clip_sha.hexdigest(), info))
    return ShardResult(path.name, hashing.pos, hashing.sha.hexdigest(), records)

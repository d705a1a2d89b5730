"""Whole remote shards kept on local disk, verified by sha256, least recently used evicted first.

With ``cache_dir`` a loader's second epoch reads from disk instead of the network. A cached
file is trusted only as far as its recorded sha256 matches the manifest's.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import time
from pathlib import Path
from typing import BinaryIO

from .atomic import atomic_file
from .errors import CacheVerificationError
from .locate import open_range
from .options import TransportOptions


class ShardCache:
    """Whole-shard cache in a local directory, LRU by access time.

    ``open(url, expected_sha256=None, expected_size=None)`` returns a local
    binary file.  A miss downloads through :func:`.locate.open_range` into a temp file
    in the cache directory (:func:`.atomic.atomic_file`), hashing on the way, and renames it into place
    only if sha256 / size match (on mismatch nothing is kept and
    :class:`CacheVerificationError` is raised).  The content's sha256 is kept
    in a ``.sha256`` side file (with the size) so later hits are checked
    against ``expected_sha256`` without re-hashing; a cached file whose size
    no longer matches is re-hashed, and ``verify_on_hit=True`` re-hashes on
    every hit that has an ``expected_sha256`` (catches same-size corruption).  After each insert, least
    recently used files are removed until the total is ``<= max_bytes``; a
    file larger than ``max_bytes`` on its own is returned but not kept.
    Safe to share between processes (temp files, atomic renames, an flock
    around eviction).
    """

    SIDE = ".sha256"

    def __init__(self, directory: str | os.PathLike, max_bytes: int, options: TransportOptions | None = None, *,
                 verify_on_hit: bool = False):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self.verify_on_hit = verify_on_hit
        self.options = TransportOptions.coerce(options)  # how misses are downloaded
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.downloaded_bytes = 0

    def path_for(self, url: str) -> Path:
        h = hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]
        base = re.sub(r"[^A-Za-z0-9._-]", "_", url.rstrip("/").rsplit("/", 1)[-1])[-80:]
        return self.dir / f"{h}-{base}" if base else self.dir / h

    def __contains__(self, url: str) -> bool:
        return self.path_for(url).exists()

    def entries(self) -> list[tuple[Path, os.stat_result]]:
        out = []
        with os.scandir(self.dir) as it:
            for e in it:
                n = e.name
                if n.startswith(".") or n.endswith(self.SIDE) or not e.is_file(follow_symlinks=False):
                    continue
                try:
                    out.append((Path(e.path), e.stat(follow_symlinks=False)))
                except FileNotFoundError:
                    continue
        return out

    def total_bytes(self) -> int:
        return sum(st.st_size for _, st in self.entries())

    @staticmethod
    def touch(path: Path) -> None:
        """Mark a file used now (its access time: what eviction orders by)."""
        st = path.stat()
        os.utime(path, ns=(time.time_ns(), st.st_mtime_ns))

    def _side(self, path: Path) -> Path:
        return path.with_name(path.name + self.SIDE)

    def _remove(self, path: Path) -> None:
        for p in (path, self._side(path)):
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    def _recorded_sha(self, path: Path, size: int, rehash: bool = False) -> str:
        """sha256 of a cached file: from its side file when that records the
        same size (unless ``rehash``), else computed and recorded."""
        if not rehash:
            try:
                parts = self._side(path).read_text().split()
                if len(parts) == 2 and len(parts[0]) == 64 and int(parts[1]) == size:
                    return parts[0]
            except (OSError, ValueError):
                pass
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        v = h.hexdigest()
        self._write_side(path, v, size)
        return v

    def _write_side(self, path: Path, digest: str, size: int) -> None:
        with atomic_file(self._side(path)) as f:
            f.write(f"{digest} {size}\n".encode())

    def evict(self, *, need: int = 0, keep: Path | None = None) -> None:
        """Remove least recently used files until total + need <= max_bytes."""
        lock = os.open(self.dir / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = self.entries()
            total = sum(st.st_size for _, st in entries)
            entries.sort(key=lambda e: e[1].st_atime_ns)
            for path, st in entries:
                if total + need <= self.max_bytes:
                    break
                if keep is not None and path == keep:
                    continue
                self._remove(path)
                total -= st.st_size
                self.evictions += 1
            # orphan side files
            for e in os.scandir(self.dir):
                if e.name.endswith(self.SIDE) and not e.name.startswith("."):
                    if not os.path.exists(e.path[: -len(self.SIDE)]):
                        try:
                            os.unlink(e.path)
                        except FileNotFoundError:
                            pass
        finally:
            os.close(lock)

    def open(self, url: str, expected_sha256: str | None = None,
             expected_size: int | None = None) -> BinaryIO:
        path = self.path_for(url)
        exp = expected_sha256.lower() if expected_sha256 else None
        try:
            st = path.stat()
        except FileNotFoundError:
            st = None
        if st is not None:
            ok = expected_size is None or st.st_size == expected_size
            if ok and exp is not None:
                ok = self._recorded_sha(path, st.st_size, rehash=self.verify_on_hit) == exp
            if ok:
                try:
                    f = open(path, "rb")
                    self.touch(path)
                    self.hits += 1
                    return f
                except FileNotFoundError:  # evicted by another process meanwhile
                    pass
            else:
                self._remove(path)
        return self._download(url, path, exp, expected_size)

    def _download(self, url: str, path: Path, exp: str | None, expected_size: int | None) -> BinaryIO:
        self.misses += 1
        if expected_size:
            self.evict(need=expected_size)
        h = hashlib.sha256()
        n = 0
        chunk = self.options.chunk_size
        with atomic_file(path) as dst, open_range(url, self.options) as src:  # a rejected download leaves nothing
            while True:
                data = src.read(chunk)
                if not data:
                    break
                h.update(data)
                dst.write(data)
                n += len(data)
            digest = h.hexdigest()
            if expected_size is not None and n != expected_size:
                raise CacheVerificationError(
                    f"size mismatch for {url}: expected {expected_size} bytes, got {n}; download discarded")
            if exp is not None and digest != exp:
                raise CacheVerificationError(f"sha256 mismatch for {url}: expected {exp}, got {digest}; download discarded")
        self.downloaded_bytes += n
        self._write_side(path, digest, n)
        f = open(path, "rb")
        self.touch(path)
        self.evict(keep=path)
        if n > self.max_bytes:
            self._remove(path)  # too large to keep: the open handle stays readable
        return f

"""The crop cache: face crops cut from plain shards, kept on local disk for the epochs after the first.

A crop cut from a plain shard costs a whole-frame JPEG decode: its entropy decoding alone is ~2.5 ms
for a 1080p demo frame (~275 KB) on this machine class, ~0.6 ms at 640x360 (~35 KB), against ~0.3 ms a
frame for TalkNet's loader reading its pre-extracted 224x224 crops. With ``crop_cache_dir``, asd-tracks
keeps each face track's crops (uint8, 112x112) the first time it cuts them; a later epoch reads 12.5 KB
a frame from local disk instead of decoding — and, in ``batch_frames`` batches (a track's sparse read),
does not even read the track's frames from the shard; ``batch_size`` batches read their clips whole,
front to back, as always, and only skip the decodes.

Keyed by the shard's sha256 (from its manifest: a rebuilt or changed shard is another key), the clip's
byte offset in it, the track, the frames kept (a frame-budget batch keeps its shortest track's
length, a ``batch_size`` batch the whole track) and the recipe (``smooth_boxes``, :data:`RECIPE`), so a cached crop is always the crop the
loader would cut. A shard without a recorded sha256 is not cached. Bounded: when a write takes the
directory past ``max_bytes``, the least recently used entries are removed down to 90 % of it. Each
process counts its own writes and recounts the directory every ``RECOUNT_EVERY`` (64) writes, so W
workers sharing a directory can pass the bound by fewer than 64·W entries in between. Safe
between DataLoader workers and runs: each entry is written to a temp name and renamed, and eviction
holds the directory's lock — the file handling of :class:`~shardgen.core.storage.ShardCache`, which
this reuses.

What it costs: 12,544 bytes of local disk per track frame (~5 % of a 1080p frame's JPEG, ~35 % of a
640x360 one; a face seen in two tracks is kept twice), and one file write per track in the first
epoch. When it wins: plain shards read for more than one epoch, the more the larger the frames — the
second epoch reads crops like ``--derive crops`` shards do, without the JPEG decode. It does not help
shards built with ``--derive crops`` (their crops are read as stored) or a single epoch.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from shardgen.core.decode import FACE
from shardgen.core.storage import ShardCache, atomic_file

RECIPE = "talknet-crop-1"  # bump when shardgen.core.crops / .decode would cut other pixels
MAGIC = b"AVSCROP1"
FRAME_BYTES = FACE * FACE


class CropCache:
    """Crops on local disk: :meth:`key` names a track's crops, :meth:`load` and :meth:`save` move them.

    Args:
        directory: where the entries live (created); may be shared by runs and DataLoader workers.
        max_bytes: the bound on the entries' total size.
    """

    def __init__(self, directory: str | os.PathLike, max_bytes: int):
        if int(max_bytes) < FRAME_BYTES:
            raise ValueError(f"crop_cache_bytes {max_bytes} cannot hold one crop ({FRAME_BYTES} bytes)")
        self.directory = directory
        self.max_bytes = int(max_bytes)
        self.hits = self.misses = self.writes = 0
        self._files: ShardCache | None = None  # made in the process that uses it (a DataLoader worker)
        self._total: int | None = None  # this process's estimate of the entries' total size

    @property
    def files(self) -> ShardCache:
        if self._files is None:
            self._files = ShardCache(self.directory, self.max_bytes)
        return self._files

    @staticmethod
    def key(shard_sha256: str | None, clip_offset: int, track: tuple, kept: int, smooth: bool,
            use_derived: bool) -> str | None:
        """The name of a track's first ``kept`` crops, or None when the shard has no recorded sha256.

        ``use_derived`` is part of it: a loader that prefers a clip's stored crops must never be handed crops
        another loader (``use_derived=False``) cut from the frames of the same clip."""
        if not shard_sha256:
            return None
        p, first, n = (int(v) for v in track)
        return (f"{shard_sha256}:{int(clip_offset)}:{p}.{first}.{n}:{int(kept)}:{'smooth' if smooth else 'boxes'}:"
                f"{'stored-first' if use_derived else 'frames'}:{RECIPE}")

    def load(self, key: str | None, kept: int) -> np.ndarray | None:
        """The cached ``uint8 [kept, 112, 112]`` crops, or None (not cached; or an entry that is not whole, removed)."""
        if key is None:
            return None
        path = self.files.path_for(key)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:  # never written, or evicted (by any process) meanwhile
            self.misses += 1
            return None
        header = _header(key)
        if not data.startswith(header) or len(data) != len(header) + kept * FRAME_BYTES:
            path.unlink(missing_ok=True)
            self.misses += 1
            return None
        self.files.touch(path)
        self.hits += 1
        return np.frombuffer(data, np.uint8, offset=len(header)).reshape(kept, FACE, FACE).copy()

    def save(self, key: str | None, faces: np.ndarray) -> None:
        """Keep ``faces`` (uint8 ``[kept, 112, 112]``) under ``key``; evict the least recently used entries when
        the directory passes its bound."""
        if key is None:
            return
        header = _header(key)
        size = len(header) + faces.nbytes
        if size > self.max_bytes:
            return  # would evict everything and still not fit
        with atomic_file(self.files.path_for(key), durable=False) as fh:  # a regenerable entry: no fsync
            fh.write(header)
            fh.write(np.ascontiguousarray(faces, np.uint8).tobytes())
        self.writes += 1
        if self._total is None or self.writes % RECOUNT_EVERY == 0:  # other workers write into it too
            self._total = self.files.total_bytes()
        else:
            self._total += size
        if self._total > self.max_bytes:
            self.files.evict(need=self.max_bytes // 10)  # down to 90 %: eviction runs once per 10 % written
            self._total = self.files.total_bytes()


RECOUNT_EVERY = 64  # writes between recounts of the directory: W workers sharing it pass the bound by < 64·W entries


def _header(key: str) -> bytes:
    k = key.encode()
    return MAGIC + struct.pack("<I", len(k)) + k

"""The clip index: every clip's place in the shards, in columns, memory-mapped and shared.

A split's ``manifest.json`` is what a person reads (parameters, totals, the shard list); the
per-clip rows live beside it in ``clips.idx``, a small binary file of fixed-width columns:

=================  ==========  =====================================================
column             dtype       meaning (``N`` clips, ``M`` face tracks, ``V`` videos)
=================  ==========  =====================================================
``shard``          uint32 [N]  index into the manifest's shard list
``offset``         uint64 [N]  byte offset of the clip's first tar header in its shard
``bytes``          uint64 [N]  bytes up to the next clip's header (or the end marker)
``sha256``         uint8 [N,32] of exactly those bytes (``shardgen verify`` names the clip)
``members``        uint32 [N]  tar members of the clip
``video``          uint32 [N]  index into the video table
``start_frame``    uint64 [N]  0-based source frame of clip frame 1 (the key's number)
``n_frames``       uint32 [N]  frames of the clip, ``pad_frames`` of them padding
``pad_frames``     uint32 [N]
``track_start``    uint64 [N+1] clip ``i``'s face tracks are rows ``track_start[i]:track_start[i+1]``
``track_person``   uint16 [M]  the track's person row in the clip's ``boxes.npy``
``track_first``    uint32 [M]  its first frame (0-based in the clip)
``track_frames``   uint32 [M]  its length in frames
``video_offsets``  uint64 [V+1] video ``v``'s id is ``video_names[video_offsets[v]:video_offsets[v+1]]``
``video_names``    uint8 [..]  ASCII, in order of first appearance
=================  ==========  =====================================================

A clip's key is not stored: it is ``clip_key(video id, start_frame)`` (:func:`format.clip_key`),
so an index costs about 100 bytes per clip on disk plus 10 per face track, and a loader touches
only the columns it plans with (shard, offset, bytes, tracks: ~30 bytes per clip, in pages the
kernel shares between every process that maps the file).

File layout: the 8-byte magic ``AVSIDX\\r\\n``, a little-endian uint64 header length, a JSON
header (schema, counts, and each column's dtype, shape and byte offset), then the columns, each
at a 64-byte-aligned offset. Everything is little-endian and written in one deterministic order,
so the same clips always give the same bytes. The file is opened with :func:`numpy.memmap`
where it is local (no read, no copy: workers forked from the parent share the mapping) and
fetched whole, in one request, where it is remote.

Rows are ordered by shard, then by offset within a shard (the builder's order); readers rely
on it and :meth:`ClipIndex.check` refuses anything else.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .format import FormatError, clip_key, parse_clip_key, untrusted_json, validate_video_id

INDEX_SCHEMA = "avshards/clip-index"
INDEX_VERSION = 1
INDEX_NAME = "clips.idx"
MAGIC = b"AVSIDX\r\n"
ALIGN = 64

#: (name, dtype, per-row shape, rows: "clips" | "clips+1" | "tracks" | "videos+1" | "names")
COLUMNS: tuple[tuple[str, str, tuple, str], ...] = (
    ("shard", "<u4", (), "clips"),
    ("offset", "<u8", (), "clips"),
    ("bytes", "<u8", (), "clips"),
    ("sha256", "|u1", (32,), "clips"),
    ("members", "<u4", (), "clips"),
    ("video", "<u4", (), "clips"),
    ("start_frame", "<u8", (), "clips"),
    ("n_frames", "<u4", (), "clips"),
    ("pad_frames", "<u4", (), "clips"),
    ("track_start", "<u8", (), "clips+1"),
    ("track_person", "<u2", (), "tracks"),
    ("track_first", "<u4", (), "tracks"),
    ("track_frames", "<u4", (), "tracks"),
    ("video_offsets", "<u8", (), "videos+1"),
    ("video_names", "|u1", (), "names"),
)
_COLUMN_NAMES = tuple(c[0] for c in COLUMNS)


NO_DIGEST = "0" * 64  # the sha256 column of an index made by scanning a bare shard: nothing to check against


@dataclass(frozen=True)
class ClipRef:
    """One clip as the index places it: which shard, its key and its byte range.

    Made on demand from an index row (``ClipIndex.ref``) and dropped after use: no process holds
    one per clip of the source.
    """

    shard: int  # index into the source's shard list
    key: str
    offset: int
    bytes: int
    tracks: tuple = ()  # ((person_row, first_frame, n_frames), ...)
    sha256: str | None = None  # of the clip's bytes, as the index records it; None where it records none



class ClipIndex:
    """The columns of one index (or of several sources' indexes, concatenated), read-only."""

    def __init__(self, columns: dict[str, np.ndarray], *, name: str = INDEX_NAME, path: str | None = None):
        missing = [c for c in _COLUMN_NAMES if c not in columns]
        if missing:
            raise FormatError(f"{name}: clip index lacks column(s) {missing}")
        self.columns = columns
        self.name = name
        self.path = path  # the local file mapped, if any (lets a spawned worker map it again)
        self._names: list[str] | None = None

    # ------------------------------------------------------------------ sizes and columns
    def __len__(self) -> int:
        return int(self.columns["shard"].shape[0])

    @property
    def n_tracks(self) -> int:
        return int(self.columns["track_person"].shape[0])

    def __reduce__(self):  # to a spawned process: map the file again instead of copying the columns
        if self.path is not None:
            return (open_index, (self.path,))
        return (ClipIndex, ({k: np.array(v) for k, v in self.columns.items()},), {"name": self.name})

    def __setstate__(self, state):
        self.__dict__.update(state)

    # ------------------------------------------------------------------ one clip
    def video_names(self) -> list[str]:
        """The video table (``V`` strings: small next to the clips)."""
        if self._names is None:
            raw = self.columns["video_names"].tobytes()
            off = self.columns["video_offsets"]
            self._names = [raw[int(off[v]):int(off[v + 1])].decode("ascii") for v in range(len(off) - 1)]
        return self._names

    def video_id(self, row: int) -> str:
        return self.video_names()[int(self.columns["video"][row])]

    def key(self, row: int) -> str:
        return clip_key(self.video_id(row), int(self.columns["start_frame"][row]))

    def tracks(self, row: int) -> tuple:
        ts = self.columns["track_start"]
        a, b = int(ts[row]), int(ts[row + 1])
        p, f, n = self.columns["track_person"][a:b], self.columns["track_first"][a:b], self.columns["track_frames"][a:b]
        return tuple((int(p[i]), int(f[i]), int(n[i])) for i in range(b - a))

    def sha256(self, row: int) -> str:
        """The clip's recorded sha256 in hex (:data:`NO_DIGEST` in an index made by scanning a bare shard)."""
        return self.columns["sha256"][row].tobytes().hex()

    def ref(self, row: int) -> ClipRef:
        c = self.columns
        digest = self.sha256(row)
        return ClipRef(int(c["shard"][row]), self.key(row), int(c["offset"][row]), int(c["bytes"][row]),
                       self.tracks(row), None if digest == NO_DIGEST else digest)

    def video_rows(self, video_id: str) -> np.ndarray:
        """Index rows of one video's clips, in index order (vectorised: no key string per clip)."""
        try:
            v = self.video_names().index(video_id)
        except ValueError:
            return np.zeros(0, np.int64)
        return np.flatnonzero(np.asarray(self.columns["video"]) == v)

    def find(self, key: str) -> int | None:
        """The first index row whose clip key is ``key`` (by video and start frame), or None."""
        try:
            video_id, start = parse_clip_key(key)
        except FormatError:
            return None
        rows = self.video_rows(video_id)
        hit = rows[np.asarray(self.columns["start_frame"])[rows] == start]
        if not len(hit) or self.key(int(hit[0])) != key:  # a non-canonical spelling of the number is not the key
            return None
        return int(hit[0])

    def slice(self, lo: int, hi: int) -> "ClipIndex":
        """Rows ``lo:hi`` (one shard's clips) as an index of their own, their shard numbered 0."""
        c = self.columns
        ts = np.asarray(c["track_start"][lo:hi + 1], dtype=np.uint64)
        a, b = int(ts[0]), int(ts[-1])
        cols = {k: v[lo:hi] for k, v in c.items() if k not in ("track_start", "track_person", "track_first",
                                                                 "track_frames", "video_offsets", "video_names")}
        cols.update(shard=np.zeros(hi - lo, np.uint32), track_start=ts - np.uint64(a),
                    track_person=c["track_person"][a:b], track_first=c["track_first"][a:b],
                    track_frames=c["track_frames"][a:b], video_offsets=c["video_offsets"], video_names=c["video_names"])
        return ClipIndex(cols, name=self.name)

    # ------------------------------------------------------------------ whole columns
    def shard_bounds(self, n_shards: int) -> np.ndarray:
        """``[S+1]``: shard ``s``'s clips are rows ``bounds[s]:bounds[s+1]`` (rows are grouped by shard)."""
        return np.searchsorted(self.columns["shard"], np.arange(n_shards + 1), side="left").astype(np.int64)

    def track_clip(self) -> np.ndarray:
        """``[M]``: the clip row of each face track."""
        ts = np.asarray(self.columns["track_start"], dtype=np.int64)
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(ts))

    def key_order(self) -> np.ndarray:
        """``[N]``: each clip's rank when the clip keys are sorted as strings (without making N strings).

        A key is ``<video>/clip_f<start:06d>``; no video id holds ``/``, so keys sort by ``<video>/``
        first, then by the zero-padded start as text (numeric order below a million frames).
        """
        names = self.video_names()
        video_rank = np.empty(len(names), dtype=np.int64)
        video_rank[sorted(range(len(names)), key=lambda v: names[v] + "/")] = np.arange(len(names))
        start = np.asarray(self.columns["start_frame"], dtype=np.int64)
        if len(start) and int(start.max()) >= 10 ** 6:  # digits beyond six sort as text, not as numbers
            text = np.char.zfill(start.astype("U20"), 6)
            start = np.unique(text, return_inverse=True)[1].reshape(-1)
        order = np.lexsort((start, video_rank[np.asarray(self.columns["video"], dtype=np.int64)]))
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        return rank

    def check(self, n_shards: int | None = None, name: str | None = None, *,
              shard_bytes: Sequence[int | None] | None = None) -> "ClipIndex":
        """Refuse an index whose columns disagree (lengths, shard order, byte ranges — within ``shard_bytes``
        when given —, track table, video table and ids)."""
        name = name or self.name
        c, n, m = self.columns, len(self), self.n_tracks
        for col, _, shape, rows in COLUMNS:
            want = {"clips": n, "clips+1": n + 1, "tracks": m}.get(rows)
            if want is not None and c[col].shape != (want, *shape):
                raise FormatError(f"{name}: column {col} has shape {c[col].shape}, expected {(want, *shape)}")
        shard = c["shard"]
        if n and np.any(shard[1:] < shard[:-1]):
            raise FormatError(f"{name}: clips are not grouped by shard in order")
        if n_shards is not None and n and int(shard[-1]) >= n_shards:
            raise FormatError(f"{name}: a clip names shard {int(shard[-1])}; the manifest lists {n_shards}")
        offset, size = c["offset"], c["bytes"]
        if n and (int(offset.max()) >= 1 << 62 or int(size.max()) >= 1 << 62):  # keeps the sums below from wrapping
            raise FormatError(f"{name}: a clip's offset or size is beyond any shard")
        end = offset.astype(np.int64) + size.astype(np.int64)
        same = shard[1:] == shard[:-1]
        if n and np.any(same & (offset[1:].astype(np.int64) < end[:-1])):
            raise FormatError(f"{name}: clips of one shard overlap or are out of order")
        if shard_bytes is not None and n:
            limit = np.asarray([-1 if b is None else int(b) for b in shard_bytes], dtype=np.int64)[shard.astype(np.int64)]
            bad = np.flatnonzero((limit >= 0) & (end > limit))
            if len(bad):
                r = int(bad[0])
                raise FormatError(f"{name}: clip {self.key(r)} ends at byte {int(end[r])}, past its shard's "
                                  f"{int(limit[r])} bytes (index and manifest disagree)")
        ts = c["track_start"]
        if ts[0] != 0 or ts[-1] != m or np.any(ts[1:] < ts[:-1]):
            raise FormatError(f"{name}: track_start is not a table of {m} tracks")
        if np.any(c["track_first"].astype(np.int64) + c["track_frames"] > np.repeat(c["n_frames"], np.diff(ts.astype(np.int64)))):
            raise FormatError(f"{name}: a face track runs past its clip's frames")
        vo = c["video_offsets"]
        if len(vo) < 1 or vo[0] != 0 or vo[-1] != len(c["video_names"]) or np.any(vo[1:] < vo[:-1]):
            raise FormatError(f"{name}: the video table is inconsistent")
        if n and int(c["video"].max()) >= len(vo) - 1:
            raise FormatError(f"{name}: a clip names a video beyond the video table")
        try:
            names = self.video_names()
        except UnicodeDecodeError:
            raise FormatError(f"{name}: video ids are not ASCII") from None
        for v in names:
            try:
                validate_video_id(v)
            except FormatError as exc:
                raise FormatError(f"{name}: {exc}") from None
        return self


# --------------------------------------------------------------------------- writing


class ClipIndexWriter:
    """Accumulates one split's clips shard by shard, as arrays (no Python object per clip is kept).

    Shards may be added in any order (a parallel build finishes them out of order): :meth:`index`
    lays them out by shard number, and numbers the videos by first appearance in that order, so
    the bytes never depend on the order of arrival."""

    def __init__(self):
        self._parts: dict[int, tuple[dict[str, np.ndarray], list[str]]] = {}

    def add_shard(self, shard: int, clips: Sequence[tuple]) -> None:
        """``clips``: ``(key, offset, bytes, sha256 hex, members, n_frames, pad_frames, tracks)`` per clip, in
        file order; ``tracks`` is a sequence of ``(person_row, first_frame, n_frames)``."""
        if shard in self._parts:
            raise ValueError(f"shard {shard} added twice")
        n = len(clips)
        videos: dict[str, int] = {}
        video = np.empty(n, np.uint32)
        start = np.empty(n, np.uint64)
        counts = np.empty(n, np.int64)
        tracks: list = []
        for i, c in enumerate(clips):
            key = c[0]
            vid, first = parse_clip_key(key)
            if clip_key(vid, first) != key:
                raise FormatError(f"clip key {key!r} is not canonical (expected {clip_key(vid, first)!r})")
            video[i] = videos.setdefault(vid, len(videos))
            start[i] = first
            counts[i] = len(c[7])
            tracks.extend(c[7])
        t = np.asarray(tracks, dtype=np.int64).reshape(-1, 3)
        cols = {
            "shard": np.full(n, shard, np.uint32),
            "offset": np.fromiter((c[1] for c in clips), np.uint64, n),
            "bytes": np.fromiter((c[2] for c in clips), np.uint64, n),
            "sha256": np.frombuffer(b"".join(_digest(c[3]) for c in clips), np.uint8).reshape(n, 32),
            "members": np.fromiter((c[4] for c in clips), np.uint32, n),
            "video": video, "start_frame": start,
            "n_frames": np.fromiter((c[5] for c in clips), np.uint32, n),
            "pad_frames": np.fromiter((c[6] for c in clips), np.uint32, n),
            "track_count": counts,
            "track_person": t[:, 0].astype(np.uint16), "track_first": t[:, 1].astype(np.uint32),
            "track_frames": t[:, 2].astype(np.uint32),
        }
        self._parts[shard] = (cols, list(videos))

    def __len__(self) -> int:
        return sum(len(p[0]["shard"]) for p in self._parts.values())

    def encode(self) -> bytes:
        """The index file's bytes, written straight from the shards' arrays (no merged copy of the columns is
        made: a driver finishing a million-clip split holds the arrays and these bytes, not a third index)."""
        names: dict[str, int] = {}
        pieces: dict[str, list[np.ndarray]] = {k: [] for k in _COLUMN_NAMES}
        tracks = [np.zeros(1, np.int64)]
        for s in sorted(self._parts):
            cols, videos = self._parts[s]
            remap = np.array([names.setdefault(v, len(names)) for v in videos], dtype=np.uint32)
            for k, v in cols.items():
                if k == "track_count":
                    tracks.append(v)
                else:
                    pieces[k].append(remap[v.astype(np.int64)] if k == "video" and len(v) else v)
        pieces["track_start"] = [np.cumsum(np.concatenate(tracks), dtype=np.int64)]
        for k, v in _video_table(names).items():
            pieces[k] = [v]
        return _encode(pieces)

    def index(self) -> ClipIndex:
        """The split's index, over :meth:`encode`'s bytes (the same bytes a reader maps)."""
        return index_from_bytes(self.encode())


def _video_table(names: Iterable[str]) -> dict[str, np.ndarray]:
    """The ``video_offsets`` and ``video_names`` columns of video ids in this order."""
    encoded = [v.encode("ascii") for v in names]
    return {"video_offsets": np.concatenate([[0], np.cumsum([len(b) for b in encoded], dtype=np.int64)]).astype("<u8"),
            "video_names": np.frombuffer(b"".join(encoded), np.uint8).copy()}


def _digest(hexdigest: str) -> bytes:
    raw = bytes.fromhex(hexdigest) if hexdigest else bytes(32)
    if len(raw) != 32:
        raise FormatError(f"sha256 {hexdigest!r} is not 32 bytes")
    return raw


def encode_index(index: ClipIndex) -> bytes:
    """The file's bytes: magic, header length, JSON header, 64-byte-aligned columns."""
    return _encode({name: [index.columns[name]] for name in _COLUMN_NAMES})


def _encode(pieces: dict[str, list[np.ndarray]]) -> bytes:
    """The file's bytes from each column's pieces (in order), joined once into the result: nothing else of the
    index's size is made on the way."""
    specs, offset = [], 0
    for name, dtype, shape, _ in COLUMNS:
        rows = sum(len(p) for p in pieces[name])
        nbytes = rows * int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        specs.append([name, dtype, [rows, *shape], offset, nbytes])
        offset += -(-nbytes // ALIGN) * ALIGN
    count = {spec[0]: spec[2][0] for spec in specs}
    header = {"schema": INDEX_SCHEMA, "schema_version": INDEX_VERSION, "clips": count["shard"],
              "tracks": count["track_person"], "videos": count["video_offsets"] - 1, "columns": specs}
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    start = -(-(len(MAGIC) + 8 + len(head)) // ALIGN) * ALIGN
    chunks: list = [MAGIC, struct.pack("<Q", start - len(MAGIC) - 8), head.ljust(start - len(MAGIC) - 8, b" ")]
    for (name, dtype, _, _), spec in zip(COLUMNS, specs):
        chunks += [memoryview(np.ascontiguousarray(p, dtype=dtype)).cast("B") for p in pieces[name] if len(p)]
        chunks.append(bytes(-spec[4] % ALIGN))
    return b"".join(chunks)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- reading


def _header(buf, name: str) -> tuple[dict, int]:
    head = bytes(buf[:len(MAGIC) + 8])
    if len(head) < len(MAGIC) + 8 or head[:len(MAGIC)] != MAGIC:
        raise FormatError(f"{name}: not an avshards clip index (bad magic)")
    (length,) = struct.unpack("<Q", head[len(MAGIC):])
    if length > 1 << 20 or len(MAGIC) + 8 + length > len(buf):
        raise FormatError(f"{name}: clip index header of {length} bytes does not fit the file")
    try:
        header = untrusted_json(bytes(buf[len(MAGIC) + 8:len(MAGIC) + 8 + length]))
    except ValueError as exc:
        raise FormatError(f"{name}: clip index header is not JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("schema") != INDEX_SCHEMA:
        raise FormatError(f"{name}: not an {INDEX_SCHEMA} file")
    if header.get("schema_version") != INDEX_VERSION:
        raise FormatError(f"{name}: clip index schema_version {header.get('schema_version')!r} is not supported "
                          f"(this avshards reads version {INDEX_VERSION}); rebuild the shards or upgrade avshards")
    return header, len(MAGIC) + 8 + length


def _columns(buf, header: dict, data_start: int, name: str) -> dict[str, np.ndarray]:
    known = {c[0]: c for c in COLUMNS}
    cols: dict[str, np.ndarray] = {}
    specs = header.get("columns", [])
    if not isinstance(specs, list):
        raise FormatError(f"{name}: clip index header has no column list")

    def exact_int(v) -> int:
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << 62:
            raise ValueError(f"{v!r:.30} is not a size")
        return v

    for spec in specs:
        try:
            col, dtype, shape, offset, nbytes = spec
            _, want_dtype, row_shape, _ = known[col]
            shape = tuple(exact_int(s) for s in shape)
            offset, nbytes = exact_int(offset), exact_int(nbytes)
            if dtype != want_dtype or shape[1:] != row_shape:
                raise ValueError(f"dtype {dtype} shape {shape}")
            count = 1
            for dim in shape:
                count *= dim
            if nbytes != count * np.dtype(dtype).itemsize or data_start + offset + nbytes > len(buf):
                raise ValueError("extent outside the file")
            cols[col] = np.frombuffer(buf, dtype=dtype, count=count, offset=data_start + offset).reshape(shape)
        except (KeyError, ValueError, TypeError, OverflowError) as exc:
            raise FormatError(f"{name}: bad column {spec!r:.80} ({exc})") from None
    return cols


def index_from_bytes(data, *, name: str = INDEX_NAME, path: str | None = None) -> ClipIndex:
    """An index over a buffer (``bytes``, or the ``numpy.memmap`` of a local file)."""
    header, start = _header(data, name)
    index = ClipIndex(_columns(data, header, start, name), name=name, path=path)
    if len(index) != header.get("clips") or index.n_tracks != header.get("tracks"):
        raise FormatError(f"{name}: header counts disagree with the columns")
    return index


def open_index(path: str | os.PathLike) -> ClipIndex:
    """Memory-map a local index: nothing is read until a column is used, and forked workers share the pages."""
    path = os.fspath(path)
    if Path(path).stat().st_size == 0:
        raise FormatError(f"{path}: empty clip index")
    return index_from_bytes(np.memmap(path, dtype=np.uint8, mode="r"), name=path, path=path)


def concat_indexes(parts: Sequence[tuple[ClipIndex, int]]) -> ClipIndex:
    """Several sources' indexes as one; ``parts``: ``(index, first shard number)`` (shards renumbered)."""
    if len(parts) == 1 and parts[0][1] == 0:
        return parts[0][0]
    videos: dict[str, int] = {}
    cols: dict[str, list] = {k: [] for k in _COLUMN_NAMES}
    tracks = 0
    remaps: dict[int, np.ndarray] = {}  # slices of one index share its video table: remap it once
    for index, first_shard in parts:
        c = index.columns
        table = id(c["video_names"])
        if table not in remaps:
            remaps[table] = np.array([videos.setdefault(v, len(videos)) for v in index.video_names()], dtype=np.uint32)
        remap = remaps[table]
        for k in ("offset", "bytes", "sha256", "members", "start_frame", "n_frames", "pad_frames",
                  "track_person", "track_first", "track_frames"):
            cols[k].append(np.asarray(c[k]))
        cols["shard"].append(np.asarray(c["shard"], dtype=np.uint32) + np.uint32(first_shard))
        cols["video"].append(remap[np.asarray(c["video"], dtype=np.int64)] if len(remap) else np.asarray(c["video"]))
        cols["track_start"].append(np.asarray(c["track_start"][1:], dtype=np.uint64) + np.uint64(tracks))
        tracks += index.n_tracks
    out: dict[str, np.ndarray] = {}
    for name, dtype, shape, _ in COLUMNS:
        if name in ("video_offsets", "video_names"):
            continue
        parts_ = cols[name] if name != "track_start" else [np.zeros(1, np.uint64)] + cols[name]
        out[name] = np.concatenate(parts_).astype(dtype) if parts_ else np.zeros((0, *shape), dtype)
    out.update(_video_table(videos))
    return ClipIndex(out, name="+".join(i.name for i, _ in parts))

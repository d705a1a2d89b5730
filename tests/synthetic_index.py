"""A split of ``N`` clips made from a tiny real build, without writing ``N`` clips of data.

The tiny build's shard is named ``ceil(N / n)`` times (symlinks ``train-000000.tar``, ...), and
``clips.idx`` repeats its ``n`` clip rows once per copy, each copy in its own shard: a valid
index of ``N`` clips (rows grouped by shard, byte ranges in order) whose every byte range is
real. What a corpus of ``N`` clips costs the loader to index, plan and start, with the data of a
tiny one. Used by ``scripts/bench_index.py`` and the memory test.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np

from shardgen.core.clip_index import ClipIndex, encode_index
from shardgen.core.manifest import MANIFEST_NAME, encode_manifest, read_index, read_manifest


def synthetic_split(tiny_split: Path, n: int, out: Path) -> Path:
    """Write ``out/manifest.json`` + ``out/clips.idx`` for ``n`` clips over ``tiny_split``'s one shard."""
    path = out / MANIFEST_NAME
    if path.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    m = read_manifest(str(tiny_split / MANIFEST_NAME))
    if len(m["shards"]) != 1:
        raise ValueError(f"{tiny_split}: the tiny build must have one shard")
    tiny = read_index(m, str(tiny_split / MANIFEST_NAME))
    k = len(tiny)
    copies = math.ceil(n / k)
    c = {name: np.asarray(v) for name, v in tiny.columns.items()}
    cols = {name: np.tile(c[name], (copies,) + (1,) * (c[name].ndim - 1))[:n]
            for name in ("offset", "bytes", "sha256", "members", "video", "start_frame", "n_frames", "pad_frames")}
    cols["shard"] = np.repeat(np.arange(copies, dtype=np.uint32), k)[:n]
    per_clip = np.diff(c["track_start"].astype(np.int64))
    counts = np.tile(per_clip, copies)[:n]
    cols["track_start"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.uint64)
    m_tracks = int(cols["track_start"][-1])
    for name in ("track_person", "track_first", "track_frames"):
        cols[name] = np.tile(c[name], copies)[:m_tracks]
    cols["video_offsets"], cols["video_names"] = c["video_offsets"], c["video_names"]
    data = encode_index(ClipIndex(cols).check(copies))
    source = tiny_split / m["shards"][0]["name"]
    shards = []
    for i in range(copies):
        name = f"train-{i:06d}.tar"
        if not (out / name).exists():
            os.symlink(source.resolve(), out / name)
        in_copy = min(k, n - i * k)
        shards.append({**m["shards"][0], "name": name, "clips": in_copy})
    (out / "clips.idx").write_bytes(data)
    doc = {**m, "totals": {**m["totals"], "clips": n, "shards": copies},
           "index": {**m["index"], "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "clips": n,
                     "tracks": m_tracks},
           "shards": shards}
    tmp = out / ".manifest.tmp"
    tmp.write_bytes(encode_manifest(doc))
    os.replace(tmp, path)
    return out

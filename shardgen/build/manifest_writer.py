"""Per-split manifests and clip indexes, assembled from the plan and the written shards.

The manifest (``<out>/<split>/manifest.json``; schema and reader in :mod:`shardgen.core.manifest`)
is what a person reads: the byte-affecting build parameters, totals, every shard with size and
sha256, and the clip index it pairs with (``clips.idx``, :mod:`shardgen.core.clip_index`: every
clip's shard, byte range, sha256 and face tracks, in columns). Neither holds anything that
varies between identical builds (no time stamps, paths or worker counts), so identical input
gives identical bytes. The index is written before the manifest: a reader that sees a manifest
finds its index. The build report is :mod:`shardgen.build.build_report`.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

from ..core import format as fmt
from ..core.clip_index import INDEX_NAME, ClipIndex, ClipIndexWriter, digest, index_from_bytes
from ..core.manifest import MANIFEST_NAME, MANIFEST_SCHEMA, MANIFEST_VERSION, encode_manifest
from ..core.storage import atomic_file
from .plan import BuildParams, ShardPlan
from .writer import ShardResult


class WrittenShards:
    """A split's written shards, reduced as each arrives to what the manifest and the index need.

    The driver adds every shard's result (written now, or kept from an earlier run) here the moment the
    executor hands it over, instead of holding its :class:`~shardgen.build.writer.ClipRecord` per clip
    until the end: the clip rows go straight into index arrays (``ClipIndexWriter``, ~100 bytes a clip),
    and the index file is encoded from those arrays at the end without a merged copy."""

    def __init__(self):
        self.writer = ClipIndexWriter()
        self.shards: dict[int, dict] = {}

    def add(self, shard: ShardPlan, res: ShardResult) -> None:
        keys = shard.clips.keys()
        if res.name != shard.name or keys != [r.key for r in res.clips]:
            raise RuntimeError(f"{shard.name}: written clips differ from the plan")
        frames, pads = shard.clips.n_frames.tolist(), shard.clips.columns["pad"].tolist()
        self.writer.add_shard(shard.index, [(key, rec.offset, rec.bytes, rec.sha256, rec.members, n, pad,
                                             rec.info.get("tracks", ()))
                                            for key, n, pad, rec in zip(keys, frames, pads, res.clips)])
        self.shards[shard.index] = {"name": shard.name, "bytes": res.bytes, "sha256": res.sha256,
                                    "clips": len(keys), "frames": sum(frames)}

    def __len__(self) -> int:
        return len(self.shards)


def make_manifest(split: str, params: BuildParams, shards: list[ShardPlan], written: WrittenShards) -> tuple[dict, bytes]:
    """The split's manifest and the bytes of its clip index, from every planned shard's result."""
    missing = [sp.name for sp in shards if sp.index not in written.shards]
    if missing or len(written) != len(shards):
        raise RuntimeError(f"{split}: results missing for {missing[:5]} (or results for shards not planned)")
    shard_rows = [written.shards[sp.index] for sp in shards]
    total_frames = sum(r["frames"] for r in shard_rows)
    data = written.writer.encode()
    index = index_from_bytes(data)  # a view of those bytes, for the totals
    if params.frame_rate is not None:
        seconds = Fraction(total_frames) / params.frame_rate
    else:  # --fps native: each clip at its video's rate
        seconds = sum((sp.clips.seconds() for sp in shards), Fraction(0))
    return manifest_document(split, params.to_json(), shard_rows, index, data, total_frames, seconds), data


def manifest_document(split: str, params: dict, shard_rows: list[dict], index: ClipIndex, index_bytes: bytes,
                      total_frames: int, seconds: Fraction) -> dict:
    return {
        "schema": MANIFEST_SCHEMA,
        "schema_version": MANIFEST_VERSION,
        "split": split,
        "params": params,
        "totals": {
            "shards": len(shard_rows), "clips": len(index), "frames": total_frames,
            "hours": round(float(seconds) / 3600, 6), "bytes": sum(s["bytes"] for s in shard_rows),
            "videos": len(index.columns["video_offsets"]) - 1,
        },
        "index": {"name": INDEX_NAME, "format": "avshards/clip-index", "bytes": len(index_bytes),
                  "sha256": digest(index_bytes), "clips": len(index), "tracks": index.n_tracks},
        "shards": shard_rows,
    }


def upgrade_manifest(split_dir: str | Path) -> Path:
    """Convert a version-1 manifest (clips listed inline) in place: write ``clips.idx``, then the new manifest.

    The result is byte-identical to what this avshards would have built from the same shards. The
    old manifest is kept beside it as ``manifest.v1.json``."""
    split_dir = Path(split_dir)
    path = split_dir / MANIFEST_NAME if split_dir.is_dir() else split_dir
    old = json.loads(path.read_bytes())
    if old.get("schema") != MANIFEST_SCHEMA:
        raise fmt.FormatError(f"{path}: not an {MANIFEST_SCHEMA} file")
    if old.get("schema_version") == MANIFEST_VERSION:
        return path
    if old.get("schema_version") != 1 or not isinstance(old.get("clips"), list):
        raise fmt.FormatError(f"{path}: schema_version {old.get('schema_version')!r} is not one this avshards converts")
    writer = ClipIndexWriter()
    by_shard: dict[int, list] = {}
    for c in old["clips"]:
        by_shard.setdefault(int(c["shard"]), []).append(
            (c["key"], c["offset"], c["bytes"], c.get("sha256", ""), c.get("members", 0), c["n_frames"],
             c.get("pad_frames", 0), [tuple(t) for t in c.get("tracks", ())]))
    for s in sorted(by_shard):
        writer.add_shard(s, by_shard[s])
    data = writer.encode()
    index = index_from_bytes(data)
    t = old["totals"]
    seconds = Fraction(t["frames"]) / fmt.fps_fraction(old["params"].get("fps", 30))
    doc = manifest_document(old["split"], old["params"], old["shards"], index, data, t["frames"], seconds)
    for name, payload in ((MANIFEST_NAME.replace(".json", ".v1.json"), path.read_bytes()), (INDEX_NAME, data),
                          (MANIFEST_NAME, encode_manifest(doc))):  # the manifest last: it names the index
        with atomic_file(path.parent / name) as fh:
            fh.write(payload)
    return path.parent / MANIFEST_NAME

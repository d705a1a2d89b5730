"""Per-split manifests, assembled from the plan and the written shards.

The manifest (``<out>/<split>/manifest.json``; schema and reader in :mod:`shardgen.core.manifest`)
is what a loader and ``shardgen verify`` read: the byte-affecting build parameters, every shard
with size and sha256, every clip with its shard and byte offset, and totals. It holds nothing
that varies between identical builds (no time stamps, paths or worker counts), so identical input
gives an identical manifest. The build report is :mod:`shardgen.build_report`.
"""

from __future__ import annotations

from fractions import Fraction

from .core import format as fmt
from .core.manifest import MANIFEST_SCHEMA
from .plan import BuildParams, ShardPlan
from .writer import ShardResult

def make_manifest(split: str, params: BuildParams, shards: list[ShardPlan], results: list[ShardResult]) -> dict:
    by_name = {r.name: r for r in results}
    shard_rows, clip_rows = [], []
    total_frames = 0
    for shard in shards:
        res = by_name[shard.name]
        if [c.key for c in shard.clips] != [r.key for r in res.clips]:
            raise RuntimeError(f"{shard.name}: written clips differ from the plan")
        frames = sum(c.n_frames for c in shard.clips)
        total_frames += frames
        shard_rows.append({"name": shard.name, "bytes": res.bytes, "sha256": res.sha256,
                           "clips": len(shard.clips), "frames": frames})
        for plan, rec in zip(shard.clips, res.clips):
            clip_rows.append({"key": plan.key, "shard": shard.index, "offset": rec.offset, "bytes": rec.bytes,
                              "sha256": rec.sha256, "members": rec.members, "video_id": plan.video_id, "start_frame": plan.start,
                              "n_frames": plan.n_frames, "pad_frames": plan.pad,
                              "tracks": rec.info.get("tracks", [])})
    seconds = Fraction(total_frames) / fmt.fps_fraction(params.fps)
    return {
        "schema": MANIFEST_SCHEMA,
        "schema_version": fmt.SCHEMA_VERSION,
        "split": split,
        "params": params.to_json(),
        "totals": {
            "shards": len(shard_rows), "clips": len(clip_rows), "frames": total_frames,
            "hours": round(float(seconds) / 3600, 6), "bytes": sum(s["bytes"] for s in shard_rows),
            "videos": len({c["video_id"] for c in clip_rows}),
        },
        "shards": shard_rows,
        "clips": clip_rows,
    }

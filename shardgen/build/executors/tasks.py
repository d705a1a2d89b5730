"""The two units of work every executor runs: probe one video, write one shard (same bytes anywhere)."""

from __future__ import annotations

from ..clip import BuildContext, clip_entry
from ..plan import ClipTable, ShardPlan, VideoPlan
from ..probe import probe_source
from ..writer import ShardResult, write_shard


def probe_one(ctx: BuildContext, split: str, video_id: str) -> VideoPlan:
    """Plan one video; its clips come back as a :class:`~shardgen.build.plan.ClipTable` (columns, not an object
    per clip: what the driver keeps of a million clips, and what crosses from a worker to it)."""
    plan = probe_source(ctx.data_dir, split, video_id, ctx.params, ctx.annotations, ctx.videos_dir,
                        native_fps=ctx.native_rates.get(video_id) if ctx.native_rates else None)
    plan.clips = ClipTable.from_plans(plan.clips)
    return plan


def write_one(ctx: BuildContext, shard: ShardPlan, target) -> ShardResult:
    """Write one planned shard for ``target`` (a :class:`~shardgen.build.output.SplitOutput`).

    The file is written atomically into ``target.local_dir``, then published (uploaded, for
    an ``s3://`` output). Running this twice for the same shard gives the same bytes, so a
    retried task can never duplicate or lose clips.
    """
    res = write_shard(target.local_dir / shard.name, (clip_entry(c, ctx) for c in shard.clips))
    target.publish(res, shard.source_digest)
    return res

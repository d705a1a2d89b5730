"""Executors carry out a finished plan; none of them changes the bytes.

An executor offers two operations over the plan: ``probe`` (look at each video on disk and plan
its clips) and ``write`` (turn each :class:`~shardgen.plan.ShardPlan` into a shard file).
Both are pure functions of the plan and the build context, so any executor — in-process,
local processes, a Ray cluster — produces the same files.
"""

from __future__ import annotations

from ..clip import BuildContext, clip_entry
from ..plan import ShardPlan, VideoPlan
from ..video_plan import probe_source
from ..writer import ShardResult, write_shard


def probe_one(ctx: BuildContext, split: str, video_id: str) -> VideoPlan:
    return probe_source(ctx.data_dir, split, video_id, ctx.params, ctx.annotations, ctx.videos_dir)


def write_one(ctx: BuildContext, shard: ShardPlan, target) -> ShardResult:
    """Write one planned shard for ``target`` (a :class:`~shardgen.output.SplitOutput`).

    The file is written atomically into ``target.local_dir``, then published (uploaded, for
    an ``s3://`` output). Running this twice for the same shard gives the same bytes, so a
    retried task can never duplicate or lose clips.
    """
    res = write_shard(target.local_dir / shard.name, (clip_entry(c, ctx) for c in shard.clips))
    target.publish(res, shard.source_digest)
    return res


def get_executor(name: str, workers: int, **options):
    if name == "local":
        from .local import LocalExecutor

        return LocalExecutor(workers)
    if name == "ray":
        from .ray import RayExecutor

        return RayExecutor(workers, **options)
    raise ValueError(f"unknown executor {name!r}: choose local or ray")

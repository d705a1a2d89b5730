"""Executors carry out a finished plan; none of them changes the bytes.

An executor offers two operations over the plan: ``probe`` (look at each video on disk and plan
its clips) and ``write`` (turn each :class:`~shardgen.build.plan.ShardPlan` into a shard file).
Both are pure functions of the plan and the build context, so any executor — in-process,
local processes, a Ray cluster — produces the same files.
"""

from __future__ import annotations

from .local import LocalExecutor
from .ray import RayExecutor
from .tasks import probe_one, write_one

__all__ = ["get_executor", "probe_one", "write_one", "LocalExecutor", "RayExecutor"]


def get_executor(name: str, workers: int, **options):
    """``local`` (processes on this machine) or ``ray`` (Ray is imported only when this one runs)."""
    if name == "local":
        return LocalExecutor(workers)
    if name == "ray":
        return RayExecutor(workers, **options)
    raise ValueError(f"unknown executor {name!r}: choose local or ray")

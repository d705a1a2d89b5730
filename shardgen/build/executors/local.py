"""Local executor: a pool of forked worker processes (or none, with one worker).

Probing is spread over videos. Writing is spread over shards when there are at least as many
shards as workers; otherwise (a small build, one big shard) workers assemble clips in plan
order and the parent writes them, so a single shard still uses every core. Both paths call
the same :func:`~shardgen.build.writer.write_shard` on the same member lists, hence the same bytes.

``write`` is a generator: each shard's result is handed to the driver the moment the shard is
finished (in the order shards finish), so the driver reduces it before the next one arrives and
never holds every shard's per-clip records at once.
"""

from __future__ import annotations

import multiprocessing as mp
from typing import Iterator

from ..clip import BuildContext, clip_entry
from ..plan import ShardPlan, VideoPlan
from ..writer import ShardResult, write_shard
from .tasks import probe_one, write_one

_CONTEXTS: dict[str, BuildContext] = {}  # inherited by forked workers


def _probe_task(args):
    split, video_id = args
    return probe_one(_CONTEXTS[split], split, video_id)


def _shard_task(args):
    number, shard, target = args
    return number, write_one(_CONTEXTS[shard.split], shard, target)


def _clip_task(clip):
    return clip_entry(clip, _CONTEXTS[clip.split])


class LocalExecutor:
    name = "local"

    def __init__(self, workers: int = 1):
        self.workers = max(1, int(workers))

    def _pool(self, contexts: dict[str, BuildContext]):
        _CONTEXTS.clear()
        _CONTEXTS.update(contexts)
        return mp.get_context("fork").Pool(self.workers)

    def probe(self, contexts: dict[str, BuildContext], videos: list[tuple[str, str]]) -> list[VideoPlan]:
        if self.workers == 1 or len(videos) < 2:
            return [probe_one(contexts[s], s, v) for s, v in videos]
        with self._pool(contexts) as pool:
            return pool.map(_probe_task, videos, chunksize=1)

    def write(self, contexts: dict[str, BuildContext],
              shards: list[tuple[ShardPlan, object]]) -> Iterator[tuple[ShardPlan, ShardResult]]:
        """Write every planned shard into its target; yields ``(shard, result)`` as each one is finished."""
        if self.workers == 1:
            for shard, target in shards:
                yield shard, write_one(contexts[shard.split], shard, target)
        elif len(shards) >= self.workers:
            with self._pool(contexts) as pool:
                tasks = ((i, shard, target) for i, (shard, target) in enumerate(shards))
                for i, res in pool.imap_unordered(_shard_task, tasks):
                    yield shards[i][0], res
        else:
            with self._pool(contexts) as pool:
                for shard, target in shards:
                    clips = pool.imap(_clip_task, shard.clips, chunksize=1)
                    res = write_shard(target.local_dir / shard.name, _checked(shard, clips))
                    target.publish(res, shard.source_digest)
                    yield shard, res


def _checked(shard: ShardPlan, clips: Iterator) -> Iterator:
    for plan, entry in zip(shard.clips, clips):
        if plan.key != entry[0]:  # the pool hands clips back in plan order; anything else is a bug, not a skip
            raise RuntimeError(f"{shard.name}: a worker returned clip {entry[0]} in place of {plan.key}")
        yield entry

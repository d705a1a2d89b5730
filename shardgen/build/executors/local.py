"""Local executor: a pool of forked worker processes (or none, with one worker).

Probing is spread over videos. Writing is spread over shards when there are at least as many
shards as workers; otherwise (a small build, one big shard) workers assemble clips in plan
order and the parent writes them, so a single shard still uses every core. Both paths call
the same :func:`~shardgen.build.writer.write_shard` on the same member lists, hence the same bytes.

``write`` is a generator: each shard's result is handed to the driver the moment the shard is
finished (in the order shards finish), so the driver reduces it before the next one arrives and
never holds every shard's per-clip records at once. Only ``2 × workers`` tasks are in flight at a
time, so neither the tasks nor their results pile up in the parent.

Why :class:`concurrent.futures.ProcessPoolExecutor` and not ``multiprocessing.Pool``: on an error
(a full disk in one worker) the pool must stop. ``Pool.terminate()`` kills workers with SIGTERM, and a
worker killed while it sends its own result holds the result queue's lock for ever — the driver then
hangs in ``terminate()`` (the likely cause of a CI run that never finished). Here pending tasks are cancelled
and the running ones end on their own (a worker may still take one more task already in the executor's
call queue); a worker that dies (OOM killer) raises ``BrokenProcessPool`` instead of leaving the driver waiting for its task. The other way
round, a worker whose driver is killed (``kill -9``, the OOM killer picking the largest process) is
killed too on Linux (``PR_SET_PDEATHSIG``) instead of waiting for tasks for ever.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

from ..clip import BuildContext, clip_entry
from ..plan import ShardPlan, VideoPlan
from ..writer import ShardResult, write_shard
from .tasks import probe_one, write_one

_CONTEXTS: dict[str, BuildContext] = {}  # inherited by forked workers


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_the_driver(driver: int) -> None:
    """A worker's initializer: on Linux, be sent SIGKILL when the driver dies; and if it is already gone, go."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != driver:
        os._exit(1)


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

    @contextmanager
    def _pool(self, contexts: dict[str, BuildContext]):
        """Forked workers that see ``contexts``; on leaving (also by an error or a closed generator) the
        tasks not yet started are cancelled and the running ones are waited for, never killed."""
        _CONTEXTS.clear()
        _CONTEXTS.update(contexts)
        pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("fork"), initializer=_die_with_the_driver,
                                   initargs=(os.getpid(),))
        try:
            yield pool
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def probe(self, contexts: dict[str, BuildContext], videos: list[tuple[str, str]]) -> list[VideoPlan]:
        if self.workers == 1 or len(videos) < 2:
            return [probe_one(contexts[s], s, v) for s, v in videos]
        with self._pool(contexts) as pool:
            return list(_in_order(pool, _probe_task, videos, 2 * self.workers))

    def write(self, contexts: dict[str, BuildContext],
              shards: list[tuple[ShardPlan, object]]) -> Iterator[tuple[ShardPlan, ShardResult]]:
        """Write every planned shard into its target; yields ``(shard, result)`` as each one is finished."""
        if self.workers == 1:
            for shard, target in shards:
                yield shard, write_one(contexts[shard.split], shard, target)
        elif len(shards) >= self.workers:
            with self._pool(contexts) as pool:
                tasks = ((i, shard, target) for i, (shard, target) in enumerate(shards))
                for i, res in _as_finished(pool, _shard_task, tasks, 2 * self.workers):
                    yield shards[i][0], res
        else:
            with self._pool(contexts) as pool:
                for shard, target in shards:
                    clips = _in_order(pool, _clip_task, shard.clips, 2 * self.workers)
                    res = write_shard(target.local_dir / shard.name, _checked(shard, clips))
                    target.publish(res, shard.source_digest)
                    yield shard, res


def _as_finished(pool: ProcessPoolExecutor, fn: Callable, args: Iterable, window: int) -> Iterator:
    """``fn(a)`` for every ``a``, at most ``window`` in flight, results in the order they finish.
    A task's error is raised as soon as that task is collected."""
    running: set[Future] = set()
    for a in args:
        running.add(pool.submit(fn, a))
        if len(running) >= window:
            yield from _finished(running)
    while running:
        yield from _finished(running)


def _finished(running: set[Future]) -> Iterator:
    """Wait for a task of ``running`` to finish; yield the results of the finished ones, taking each
    future out of ``running`` before its result is handed on, so no earlier result stays alive in here."""
    done, _ = wait(running, return_when=FIRST_COMPLETED)
    running.difference_update(done)
    while done:
        result = done.pop().result()
        yield result


def _in_order(pool: ProcessPoolExecutor, fn: Callable, args: Iterable, window: int) -> Iterator:
    """``fn(a)`` for every ``a``, at most ``window`` in flight, results in the order of ``args``."""
    running: deque[Future] = deque()
    for a in args:
        running.append(pool.submit(fn, a))
        if len(running) >= window:
            yield running.popleft().result()
    while running:
        yield running.popleft().result()


def _checked(shard: ShardPlan, clips: Iterator) -> Iterator:
    for plan, entry in zip(shard.clips, clips):
        if plan.key != entry[0]:  # the pool hands clips back in plan order; anything else is a bug, not a skip
            raise RuntimeError(f"{shard.name}: a worker returned clip {entry[0]} in place of {plan.key}")
        yield entry

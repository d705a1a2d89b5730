"""Ray executor: the same plan, carried out as Ray tasks on one machine or a cluster.

``shardgen build --executor ray`` starts a local Ray runtime (``ray.init()``, ``num_cpus`` =
``--workers``); ``--address auto`` or ``--address HOST:PORT`` joins a running cluster
(``ray start --head`` …). A runtime the caller already initialised is reused as is.

* probe: one task per video; write: one task per planned shard. The plan (which clip goes to
  which shard) is computed once, up front, by :func:`shardgen.build.build`, and every write
  task calls :func:`shardgen.build.executors.write_one` — the function the local executor calls —
  so the shards, clip indexes and manifests are byte-identical to a local build for any worker count.
* the build contexts (parameters, annotations) go to the object store once (``ray.put``);
  each worker process fetches and deserialises them once, whatever the number of its tasks.
* each task asks for one CPU and at most ``workers`` tasks are in flight at a time.
* tasks are retried by Ray (``max_retries``) when their worker dies, and when they raise an
  ``OSError`` (a transient I/O failure). A retry is harmless: a shard appears under its final
  name only when whole (temp file + rename), a second attempt rewrites the same bytes, and the
  manifest and clip index are assembled by the driver from one result per shard.
  Temp files left by a killed attempt are removed when the write ends (and by the next run in
  any case). A task that fails for good stops the build: the other tasks are cancelled.
* ``write`` yields each shard's result as its task finishes (in the order tasks finish): the driver
  reduces it into the split's index arrays before the next one arrives.

The workers read the source and write the output under the same paths as the driver: on a
cluster both must be on a shared filesystem (or the output in s3://, once the store supports it).

Ray is an optional extra (``pip install 'avshards[ray]'``) and imported only here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..clip import BuildContext
from ..plan import ShardPlan, VideoPlan
from ...core.storage.atomic import TMP_MARK
from ..writer import ShardResult
from .tasks import probe_one, write_one

DEFAULT_MAX_RETRIES = 3
CANCEL_WAIT_S = 30.0  # after a failure, how long to wait for the cancelled tasks to end


class RayExecutorError(RuntimeError):
    """A Ray task failed for good (its retries used up, or the cluster lost)."""


def _import_ray():
    """Ray, imported only when a Ray build runs: it is an optional extra and slow to import."""
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise RayExecutorError(
            "--executor ray needs Ray: pip install 'avshards[ray]' (or pip install 'ray>=2.9')"
        ) from exc
    return ray


# ----------------------------------------------------------------------------- worker side

_CTX_CACHE: dict[str, dict[str, BuildContext]] = {}  # per worker process: object id → contexts


def _contexts(boxed: list) -> dict[str, BuildContext]:
    """The build contexts, fetched from the object store once per worker process.

    The reference arrives boxed in a list so Ray does not resolve (and deserialise) it for
    every task.
    """
    ray = _import_ray()
    ref = boxed[0]
    key = ref.hex()
    ctx = _CTX_CACHE.get(key)
    if ctx is None:
        _CTX_CACHE.clear()  # one build at a time per worker: drop the previous build's contexts
        ctx = _CTX_CACHE[key] = ray.get(ref)
    return ctx


def _probe_task(boxed: list, split: str, video_id: str) -> VideoPlan:
    return probe_one(_contexts(boxed)[split], split, video_id)


def _write_task(boxed: list, shard: ShardPlan, target) -> ShardResult:
    return write_one(_contexts(boxed)[shard.split], shard, target)


def _local_dir(target) -> Path:
    """Where a shard's file is written: ``target.local_dir`` (a SplitOutput), or a plain directory."""
    return Path(getattr(target, "local_dir", target))


# ----------------------------------------------------------------------------- driver side


class RayExecutor:
    name = "ray"

    def __init__(self, workers: int = 1, address: str | None = None, *, max_retries: int = DEFAULT_MAX_RETRIES,
                 init_options: dict | None = None):
        self.workers = max(1, int(workers))
        self.address = address or None
        self.max_retries = int(max_retries)
        self.init_options = dict(init_options or {})
        self._ray = None
        self._owns_runtime = False
        self._remotes = None
        self._shipped = None  # (contexts, ObjectRef): the contexts go to the object store once

    # -- runtime

    def _start(self):
        if self._ray is not None:
            return self._ray
        ray = _import_ray()
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, **self.init_options)
            else:
                ray.init(**{"num_cpus": self.workers, "include_dashboard": False, **self.init_options})
            self._owns_runtime = True
        task_opts = dict(num_cpus=1, max_retries=self.max_retries, retry_exceptions=[OSError])
        self._remotes = (ray.remote(**task_opts)(_probe_task), ray.remote(**task_opts)(_write_task))
        self._ray = ray
        return ray

    def close(self) -> None:
        """Shut down the Ray runtime if this executor started it (a reused one is left running)."""
        if self._ray is not None and self._owns_runtime:
            self._ray.shutdown()
        self._ray, self._remotes, self._owns_runtime, self._shipped = None, None, False, None

    def _ship(self, contexts: dict[str, BuildContext]) -> list:
        if self._shipped is None or self._shipped[0] is not contexts:
            self._shipped = (contexts, self._ray.put(contexts))
        return [self._shipped[1]]

    # -- operations

    def probe(self, contexts: dict[str, BuildContext], videos: list[tuple[str, str]]) -> list[VideoPlan]:
        if not videos:
            return []
        self._start()
        boxed = self._ship(contexts)
        probe_remote = self._remotes[0]
        calls = [(lambda s=s, v=v: probe_remote.remote(boxed, s, v), f"probe {s}/{v}") for s, v in videos]
        plans: list = [None] * len(calls)
        for i, plan in self._run(calls):
            plans[i] = plan
        return plans

    def write(self, contexts: dict[str, BuildContext],
              shards: list[tuple[ShardPlan, object]]) -> Iterator[tuple[ShardPlan, ShardResult]]:
        """Write every planned shard as a Ray task; yields ``(shard, result)`` as each task finishes (so the
        driver reduces each result before the next arrives). Closing the generator early cancels the rest."""
        if not shards:
            self.close()
            return
        self._start()
        boxed = self._ship(contexts)
        write_remote = self._remotes[1]
        calls = [(lambda sp=sp, t=t: write_remote.remote(boxed, sp, t), f"write {sp.split}/{sp.name}") for sp, t in shards]
        try:
            for i, res in self._run(calls):
                yield shards[i][0], res
        finally:
            try:
                _remove_attempt_temps(shards)  # every task has ended (or was cancelled and waited for)
            finally:
                self.close()

    def _run(self, calls: list) -> Iterator[tuple[int, object]]:
        """Submit ``calls`` keeping at most ``workers`` in flight; yields ``(call number, result)`` as each finishes.

        Should the consumer stop (an error, or closing the generator), the tasks still in flight are
        cancelled and waited for (a little) before the exception goes on."""
        ray = self._ray
        pending: dict = {}  # ObjectRef → index
        nxt = 0
        try:
            while nxt < len(calls) or pending:
                while nxt < len(calls) and len(pending) < self.workers:
                    pending[calls[nxt][0]()] = nxt
                    nxt += 1
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    i = pending.pop(ref)
                    yield i, self._get(ref, calls[i][1])
        except BaseException:
            # stop the rest: a cancelled task sees KeyboardInterrupt, and the writer removes its
            # temp file on the way out; wait (a little) for that before reporting the error
            for ref in pending:
                try:
                    ray.cancel(ref)
                except Exception:
                    pass
            if pending:
                try:
                    ray.wait(list(pending), num_returns=len(pending), timeout=CANCEL_WAIT_S)
                except Exception:
                    pass
            raise

    def _get(self, ref, what: str):
        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None  # the task's own error (SourceError, OSError …), message intact
            raise RayExecutorError(f"{what}: {exc}") from None
        except ray.exceptions.RayError as exc:
            raise RayExecutorError(
                f"{what}: Ray task failed after {self.max_retries} retries ({type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); re-run the same command to resume"
            ) from None


def _remove_attempt_temps(shards: list[tuple[ShardPlan, object]]) -> None:
    """Delete temp files of the written shards left by attempts whose worker died.

    Runs on the driver once every task has finished, so no attempt is still writing. Only this
    build's shard names are touched; with an s3:// output it sees the driver node's staging
    directory (other nodes' staging temp files are removed by their next build).
    """
    for shard, target in shards:
        for p in _local_dir(target).glob(f".{shard.name}{TMP_MARK}*"):
            p.unlink(missing_ok=True)

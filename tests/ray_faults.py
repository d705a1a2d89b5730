"""Fault injection for the Ray executor's tests, installed in every Ray worker of the test session.

``install`` is the session runtime's ``worker_process_setup_hook``: in each worker process it wraps
the executor's ``write_one`` so that, when ``CRASH_ENV`` names a directory holding a file named after
a shard (``train-000001.tar``), the first attempt to write that shard claims (deletes) the file and
kills its worker process in the middle of writing the shard — after the first clip, with the temp
shard open. The temp file names it saw are left in ``<shard>.crashed`` for the test to check. Nothing
of this lives in the package: production workers never look at the environment for it.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from shardgen.core.storage.atomic import TMP_MARK

CRASH_ENV = "AVSHARDS_TEST_RAY_CRASH_DIR"


def install() -> None:
    from shardgen.build.executors import ray as ray_executor

    real_write_one = ray_executor.write_one

    def write_one(ctx, shard, target):
        return real_write_one(ctx, _maybe_crash_midway(shard, target), target)

    ray_executor.write_one = write_one


def _maybe_crash_midway(shard, target):
    crash_dir = os.environ.get(CRASH_ENV)
    if not crash_dir:
        return shard
    try:
        os.unlink(os.path.join(crash_dir, shard.name))  # claimed by exactly one attempt
    except FileNotFoundError:
        return shard
    return replace(shard, clips=_DieAfterFirstClip(shard.clips, Path(crash_dir), shard.name, Path(target.local_dir)))


class _DieAfterFirstClip(list):
    """Clips that kill the process when asked for the second one (the temp shard is open by then)."""

    def __init__(self, clips, crash_dir: Path, name: str, directory: Path):
        super().__init__(clips)
        self._crash_dir, self._name, self._directory = crash_dir, name, directory

    def __iter__(self):
        it = super().__iter__()
        yield next(it)
        temps = sorted(p.name for p in self._directory.glob(f".{self._name}{TMP_MARK}*"))
        (self._crash_dir / f"{self._name}.crashed").write_text("".join(f"{t}\n" for t in temps))
        os._exit(1)

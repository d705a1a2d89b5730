"""Fault injection for the Ray executor's tests, installed in every Ray worker of the test session.

``install`` is the session runtime's ``worker_process_setup_hook``. In each worker process it wraps the
executor's ``write_one`` and the clip assembly it calls, so that, when ``CRASH_ENV`` names a directory
holding a file named after a shard (``train-000001.tar``), the first attempt to write that shard claims
(deletes) the file and kills its worker process in the middle of writing the shard: when the writer asks
for the shard's second clip, with the temp shard open. The temp file names it saw are left in
``<shard>.crashed`` for the test to check. Nothing of this lives in the package: production workers
never look at the environment for it.
"""

from __future__ import annotations

import os
from pathlib import Path

from shardgen.core.storage.atomic import TMP_MARK

CRASH_ENV = "AVSHARDS_TEST_RAY_CRASH_DIR"


def install() -> None:
    from shardgen.build.executors import ray as ray_executor
    from shardgen.build.executors import tasks

    real_write_one, real_clip_entry = ray_executor.write_one, tasks.clip_entry
    victim: dict = {}  # the shard this worker is to die in: name, its directory, the crash folder; clips asked for

    def write_one(ctx, shard, target):
        victim.clear()
        crash_dir = os.environ.get(CRASH_ENV)
        if crash_dir and _claim(Path(crash_dir) / shard.name):
            victim.update(name=shard.name, directory=Path(target.local_dir), crash_dir=Path(crash_dir), clips=0)
        return real_write_one(ctx, shard, target)

    def clip_entry(clip, ctx):
        if victim:
            victim["clips"] += 1
            if victim["clips"] == 2:
                temps = sorted(p.name for p in victim["directory"].glob(f".{victim['name']}{TMP_MARK}*"))
                (victim["crash_dir"] / f"{victim['name']}.crashed").write_text("".join(f"{t}\n" for t in temps))
                os._exit(1)
        return real_clip_entry(clip, ctx)

    ray_executor.write_one = write_one
    tasks.clip_entry = clip_entry


def _claim(marker: Path) -> bool:
    """Delete the marker; True for exactly one attempt."""
    try:
        marker.unlink()
    except FileNotFoundError:
        return False
    return True

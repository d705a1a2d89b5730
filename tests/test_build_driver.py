"""The build driver holds one shard's result at a time: each is reduced the moment it arrives.

An executor's ``write`` yields ``(shard, result)`` as each shard is finished; ``build`` reduces every
result into the split's index arrays (``WrittenShards.add``) before the next one arrives. Proved here
on the real path (the real ``build``, real shards on disk):

* when the driver reduces shard k's result, shard k+1 is not written yet (one worker, in order);
* no earlier result is alive then (weak references, any worker count): nothing keeps the results;
* the driver's traced memory grows by less than a fixed number of bytes per clip between a small
  and a five-times-larger build (no wall clock anywhere).

The Ray executor's side of the same promise is in ``test_ray.py``.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path

import pytest

from shardgen.build import manifest_writer
from shardgen.build.executors import LocalExecutor
from shardgen.build.pipeline import build
from shardgen.build.plan import BuildParams, assign_shards
from shardgen.build.clip import BuildContext
from shardgen.build.output import SplitOutput
from tests.sources import tiny_jpeg, write_source

ROOT = Path(__file__).resolve().parents[1]
ONE_FRAME = BuildParams(clip_seconds=1 / 30, min_clip_seconds=1 / 30, allow_unannotated=True, shard_clips=2)


def one_frame_source(root: Path, clips: int, per_video: int = 250) -> Path:
    """``clips`` one-frame clips: every frame a symlink to one tiny JPEG, every wav one file (fast to make); short
    videos, so that the builder's per-process wav cache (two videos) weighs the same at every size."""
    import numpy as np
    import soundfile as sf

    (root / "split").mkdir(parents=True)
    jpeg, wav = root / "frame.jpg", root / "audio.wav"
    jpeg.write_bytes(tiny_jpeg(0, (32, 24)))
    sf.write(wav, np.zeros(per_video * 16000 // 30 + 16000, np.int16), 16000, subtype="PCM_16")
    ids = []
    for v in range(-(-clips // per_video)):
        vid, n = f"v{v:04d}", min(per_video, clips - v * per_video)
        (root / "video_imgs" / vid).mkdir(parents=True)
        for f in range(1, n + 1):
            os.symlink(jpeg, root / "video_imgs" / vid / f"img_{f:05d}.jpg")
        (root / "wav").mkdir(exist_ok=True)
        os.symlink(wav, root / "wav" / f"{vid}.wav")
        ids.append(vid)
    (root / "split" / "train.list").write_text("".join(f"{v}\n" for v in ids))
    return root


class AddSpy:
    """Wraps ``WrittenShards.add``: at each call, which shard files exist, and whether earlier results live."""

    def __init__(self, monkeypatch, out: Path):
        self.calls: list[dict] = []
        self.refs: list[weakref.ref] = []
        real = manifest_writer.WrittenShards.add
        spy = self

        def add(written, shard, res):
            gc.collect()
            spy.calls.append({"shard": shard.index, "on_disk": sorted(p.name for p in (out / shard.split).glob("*.tar")),
                              "earlier_alive": sum(r() is not None for r in spy.refs)})
            spy.refs.append(weakref.ref(res))
            return real(written, shard, res)

        monkeypatch.setattr(manifest_writer.WrittenShards, "add", add)


def test_each_result_is_reduced_before_the_next_shard_is_written(tmp_path, monkeypatch):
    src = one_frame_source(tmp_path / "src", 8)
    out = tmp_path / "out"
    spy = AddSpy(monkeypatch, out)
    build(src, out, ["train"], ONE_FRAME, workers=1, progress=False)
    assert [c["shard"] for c in spy.calls] == [0, 1, 2, 3]
    for k, call in enumerate(spy.calls):  # one worker writes in plan order: shard k is the newest file
        assert call["on_disk"] == [f"train-{i:06d}.tar" for i in range(k + 1)], call
        assert call["earlier_alive"] == 0, call


@pytest.mark.parametrize("shards", [6, 1])  # a pool over shards; one shard's clips assembled by the pool
def test_no_earlier_result_is_alive_when_a_result_is_reduced_with_a_pool(tmp_path, monkeypatch, shards):
    src = one_frame_source(tmp_path / "src", 12)
    out = tmp_path / "out"
    spy = AddSpy(monkeypatch, out)
    params = BuildParams(clip_seconds=1 / 30, min_clip_seconds=1 / 30, allow_unannotated=True, shard_clips=12 // shards)
    build(src, out, ["train"], params, workers=2, progress=False)
    assert sorted(c["shard"] for c in spy.calls) == list(range(shards))
    assert [c["earlier_alive"] for c in spy.calls] == [0] * shards


@pytest.mark.parametrize("workers", [1, 2])
def test_the_local_executor_yields_each_shard_as_it_is_finished(tmp_path, workers):
    """``write`` is a generator: the first result comes back while later shards are still unwritten."""
    src = one_frame_source(tmp_path / "src", 8)
    ctx = {"train": BuildContext(src, ONE_FRAME, None)}
    ex = LocalExecutor(workers)
    [video] = ex.probe(ctx, [("train", "v0000")])
    shards = assign_shards("train", video.clips, 10**9, 1)
    target = SplitOutput(tmp_path / "o", "train")
    results = ex.write(ctx, [(sp, target) for sp in shards])
    assert iter(results) is results  # an iterator, not a list made after the last shard
    shard, res = next(results)
    assert res.name == shard.name and [r.key for r in res.clips] == [c.key for c in shard.clips]
    if workers == 1:  # in this process, in plan order: nothing after the first shard is written yet
        assert sorted(p.name for p in target.local_dir.glob("*.tar")) == [shard.name]
    rest = list(results)
    assert sorted(s.index for s, _ in [(shard, res), *rest]) == list(range(len(shards))) == list(range(8))


TRACED_PEAK = r"""
import gc, json, sys, tracemalloc
from pathlib import Path
from shardgen.build.pipeline import build
from shardgen.build.plan import BuildParams
from tests.test_build_driver import one_frame_source
root, peaks = Path(sys.argv[1]), {}
for clips in (1000, 3000):
    src = one_frame_source(root / f"src{clips}", clips)
    params = BuildParams(clip_seconds=1 / 30, min_clip_seconds=1 / 30, allow_unannotated=True, shard_clips=100)
    gc.collect()
    tracemalloc.start()
    build(src, root / f"out{clips}", ["train"], params, workers=2, progress=False)
    peaks[clips] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
print(json.dumps(peaks))
"""


def test_driver_memory_per_clip_is_bounded(tmp_path):
    """The driver's traced peak (Python's own accounting, in a fresh interpreter: no other test's garbage)
    over a real two-worker build, 1,000 → 3,000 one-frame clips, each its own video: it grows by less than 600
    bytes a clip (about 450 now: a probed video's plan, the plan's columns and the index arrays; 975 when every
    shard's ``ClipRecord``s were held to the end and the plan was a ``ClipPlan`` object per clip). The sizes
    are large enough that the pool's fixed cost (which once made 500 clips peak higher) does not set the slope."""
    out = subprocess.run([sys.executable, "-c", TRACED_PEAK, str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    peaks = json.loads(out.stdout.strip().splitlines()[-1])
    per_clip = (peaks["3000"] - peaks["1000"]) / 2000
    assert per_clip < 600, f"{per_clip:.0f} bytes a clip"


def test_the_clip_table_gives_back_every_plan_exactly(tmp_path):
    """The driver keeps the plan in columns (``ClipTable``): every ClipPlan it hands a worker is the one the probe
    made — frame directories and video files (with their frame timestamps) alike — and shards are cut as from a
    list of plans in (video id, start) order, with the same fingerprints."""
    import hashlib
    import pickle

    from shardgen.build.plan import ClipTable
    from shardgen.build.probe import probe_source
    from tests.videos import video_source

    params = BuildParams(clip_seconds=0.5, allow_unannotated=True)
    frames = write_source(tmp_path / "f", {"b": 40, "a": 20})
    videos = video_source(tmp_path / "v", {"c": {"fps": 30, "seconds": 1.2}})
    plans = [c for src, vid in ((frames, "b"), (frames, "a"), (videos, "c"))
             for c in probe_source(src, "train", vid, params, None).clips]
    assert [c.video_id for c in plans] == ["b", "b", "a", "c", "c"]  # 15-frame clips, short tails skipped
    assert plans[-1].video is not None and len(plans[-1].frame_pts) == 15 and plans[0].video is None
    tables = [ClipTable.from_plans(plans[:2]), ClipTable.from_plans(plans[2:3]), ClipTable.from_plans(plans[3:])]
    table = ClipTable.concat(tables)
    assert list(table) == plans and len(table) == 5
    assert list(pickle.loads(pickle.dumps(table))) == plans  # what crosses to a worker
    assert list(table[2:5]) == plans[2:5] and table[-1] == plans[-1] and table.keys() == [c.key for c in plans]
    shards = assign_shards("train", table, 10**9, 4)
    ordered = sorted(plans, key=lambda c: (c.video_id, c.start))
    assert [len(s.clips) for s in shards] == [4, 1] and [c for s in shards for c in s.clips] == ordered
    assert [list(s.clips) for s in shards] == [list(s.clips) for s in assign_shards("train", plans, 10**9, 4)]
    for s in shards:
        assert s.source_digest == hashlib.sha256("".join(c.source_digest for c in s.clips).encode()).hexdigest()
        assert s.planned_bytes == sum(c.planned_bytes for c in s.clips) + 1024
    by_bytes = assign_shards("train", table, sum(c.planned_bytes for c in ordered[:3]), 0)
    assert [len(s.clips) for s in by_bytes][0] == 3 and sum(len(s.clips) for s in by_bytes) == 5

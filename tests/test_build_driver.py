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
import os
import tracemalloc
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


def _traced_build_peak(root: Path, clips: int) -> int:
    """The driver's peak traced Python memory over a one-worker build of ``clips`` one-frame clips (the
    writing happens in this process too: its per-shard cost is the same at both sizes)."""
    src = one_frame_source(root / f"src{clips}", clips)
    params = BuildParams(clip_seconds=1 / 30, min_clip_seconds=1 / 30, allow_unannotated=True, shard_clips=100)
    gc.collect()
    tracemalloc.start()
    try:
        build(src, root / f"out{clips}", ["train"], params, workers=1, progress=False)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_driver_memory_per_clip_is_bounded(tmp_path):
    """500 → 2,500 clips: the traced peak grows by less than 800 bytes a clip (953 when every shard's
    ``ClipRecord``s — key, sha256, tracks — were held until the last shard was written)."""
    small, large = _traced_build_peak(tmp_path, 500), _traced_build_peak(tmp_path, 2500)
    per_clip = (large - small) / 2000
    assert per_clip < 800, f"{per_clip:.0f} bytes a clip"

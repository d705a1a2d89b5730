"""The loader's read-ahead is bounded by clips and by bytes, not by the shard.

A worker reads touching clips of one shard through one range read (a window). A shard of many small
clips used to be gathered whole — a reference per clip and one range over the shard — before its
first clip was read; now a window holds at most ``window_clips`` clips and ``window_bytes`` bytes
(a single larger clip is read alone). Checked on a real build: every window's byte range, how many
clips the reader had asked the run for before it yielded the first one, and that every clip still
arrives once, in order, whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import loaders.reader as reader_module
from loaders.reader import ClipReader
from loaders.items import ItemTable, RunItems
from shardgen.build.pipeline import build
from shardgen.build.plan import BuildParams
from shardgen.core.sources import resolve
from tests.sources import write_source

CLIPS = 40


@pytest.fixture(scope="module")
def one_shard(tmp_path_factory) -> Path:
    """40 one-frame clips in a single shard (no limit on clips a shard)."""
    root = tmp_path_factory.mktemp("read_ahead")
    src = write_source(root / "src", {"a": 25, "b": 15}, size=(32, 24))
    params = BuildParams(clip_seconds=1 / 30, min_clip_seconds=1 / 30, allow_unannotated=True)
    build(src, root / "out", ["train"], params, workers=1, progress=False)
    return root / "out" / "train"


class CountingRun(RunItems):
    """A run that counts how many units the reader asked for."""

    asked = 0

    def __getitem__(self, i):
        CountingRun.asked += 1
        return super().__getitem__(i)


def windows_of(split: Path, monkeypatch, **bounds) -> tuple[list[tuple[int, int]], int, list]:
    """Read every clip of the split; → (each window's (offset, length), units asked for before the first
    clip came back, what was read)."""
    source = resolve(str(split))
    assert len(source.shards) == 1 and len(source.clips) == CLIPS
    opened: list[tuple[int, int]] = []
    real_open = reader_module.open_clips

    def recording(shard, offset, length, *a, **kw):
        opened.append((offset, length))
        return real_open(shard, offset, length, *a, **kw)

    monkeypatch.setattr(reader_module, "open_clips", recording)
    run = CountingRun(ItemTable(source, per_track=False), np.arange(CLIPS))
    CountingRun.asked = 0
    reads = ClipReader(source, **bounds).read(run, range(CLIPS))
    first = next(reads)
    asked_before_first = CountingRun.asked
    got = [first, *reads]
    return opened, asked_before_first, got


def clip_ranges(split: Path) -> list[tuple[int, int]]:
    c = resolve(str(split)).clips.columns
    return [(int(o), int(b)) for o, b in zip(c["offset"], c["bytes"])]


def assert_everything_read_once(got: list, split: Path) -> None:
    keys = [resolve(str(split)).clips.key(i) for i in range(CLIPS)]
    assert len(got) == CLIPS
    assert [idxs for idxs, _ in got] == [[i] for i in range(CLIPS)]
    assert [sample.key for _, sample in got] == keys  # ClipSamples, not errors


def assert_windows_tile_the_shard(opened: list[tuple[int, int]], split: Path) -> None:
    ranges = clip_ranges(split)
    assert opened[0][0] == ranges[0][0] and sum(n for _, n in opened) == sum(b for _, b in ranges)
    for (o1, n1), (o2, _) in zip(opened, opened[1:]):
        assert o1 + n1 == o2  # touching windows, none read twice


def test_windows_hold_at_most_window_clips(one_shard, monkeypatch):
    opened, asked, got = windows_of(one_shard, monkeypatch, window_clips=8)
    assert_everything_read_once(got, one_shard)
    assert_windows_tile_the_shard(opened, one_shard)
    ranges = clip_ranges(one_shard)
    starts = [o for o, _ in ranges]
    assert len(opened) == CLIPS // 8 == 5
    assert all(starts.index(o) % 8 == 0 for o, _ in opened)
    assert asked <= 8 + 1  # the first window's clips, and the one that ended it — not the shard's 40


def test_windows_hold_at_most_window_bytes(one_shard, monkeypatch):
    ranges = clip_ranges(one_shard)
    budget = sum(b for _, b in ranges[:3]) + 1  # three clips fit, a fourth does not (they are about the same size)
    opened, asked, got = windows_of(one_shard, monkeypatch, window_bytes=budget)
    assert_everything_read_once(got, one_shard)
    assert_windows_tile_the_shard(opened, one_shard)
    assert len(opened) >= CLIPS // 3 and all(n <= budget for _, n in opened)
    assert asked <= 3 + 1


def test_a_clip_larger_than_the_byte_bound_is_read_alone(one_shard, monkeypatch):
    opened, _, got = windows_of(one_shard, monkeypatch, window_bytes=1)
    assert_everything_read_once(got, one_shard)
    assert opened == clip_ranges(one_shard)


def test_the_default_window_is_the_whole_run_of_a_small_shard(one_shard, monkeypatch):
    """Defaults (256 clips, 256 MiB): 40 small touching clips are still one range read."""
    opened, _, got = windows_of(one_shard, monkeypatch)
    assert_everything_read_once(got, one_shard)
    assert len(opened) == 1 and reader_module.WINDOW_CLIPS >= CLIPS


def test_bounds_must_be_positive(one_shard):
    with pytest.raises(ValueError, match="window_clips and window_bytes must be positive"):
        ClipReader(resolve(str(one_shard)), window_clips=0)

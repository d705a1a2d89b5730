"""Elastic resume: a loader state saved under one (world_size, num_workers, batch_size) resumes under others.

Every rank of the old layout reads k batches; rank 0's state is given to every rank of the new
layout, which must deliver exactly the items not yet delivered — none twice, none lost but the new
layout's sit-out remainder — in equal batch counts, and then run the next epoch like a fresh loader.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import loaders
from shardgen.build.pipeline import build
from shardgen.demo.corpus import make_demo_corpus
from shardgen.build.plan import BuildParams
from tests.test_batching import reference_batches
from tests.test_planning_properties import key_index, key_stream, round_robin, worker_batches


@pytest.fixture(scope="session")
def elastic_build(tmp_path_factory) -> Path:
    """3 demo videos of 8 s (160x90) in 1 s clips, 5 a shard: 24 clips, ~45 face tracks."""
    root = tmp_path_factory.mktemp("elastic")
    src = make_demo_corpus(root / "src", seconds=8.0, width=160, height=90, n_val=0, n_test=0)
    build(src, root / "out", ["train"], BuildParams(clip_seconds=1.0, shard_clips=5), workers=2, progress=False)
    return root / "out" / "train"


def item_keys(batch) -> list:
    return [(m["key"], m.get("person_row"), m["source_frame"] if "source_frame" in m else None) for m in batch[3]]


def all_items(split: Path, mode: str) -> set:
    ld = loaders.make_loader(split, mode=mode, shuffle=False, with_meta=True)
    return {k for b in ld for k in item_keys(b)}


def read_layout(split, mode, world, workers, size, *, state=None, batches=None, epoch=None) -> tuple[list, list, dict]:
    """Every rank of a layout: items it delivered (the first ``batches`` batches, or all), its len(), rank 0's state."""
    got, lens, state0 = [], [], None
    for rank in range(world):
        ld = loaders.make_loader(split, mode=mode, seed=1, rank=rank, world_size=world, num_workers=workers,
                                 with_meta=True, **size)
        if state is not None:
            ld.load_state_dict(state)
        if epoch is not None:
            ld.set_epoch(epoch)
        lens.append(len(ld))
        already = ld.state_dict()["batches_done"]  # a same-layout resume continues the count
        it = iter(ld)
        mine = list(islice(it, batches)) if batches is not None else list(it)
        assert len(mine) == (lens[-1] - already if batches is None else batches)
        got.append([k for b in mine for k in item_keys(b)])
        if rank == 0:
            state0 = ld.state_dict()
        del it
    return got, lens, state0


CASES = [
    # mode, old (world, workers, size), new (world, workers, size)
    ("talknet", (2, 2, {"batch_size": 2}), (3, 1, {"batch_size": 3})),
    ("talknet", (1, 1, {"batch_size": 2}), (2, 2, {"batch_size": 1})),
    ("asd-tracks", (2, 2, {"batch_size": 2}), (3, 1, {"batch_size": 2})),
    ("asd-tracks", (1, 1, {"batch_size": 3}), (2, 2, {"batch_size": 2})),
    ("asd-tracks", (2, 2, {"batch_frames": 60}), (3, 1, {"batch_frames": 60})),
    ("asd-tracks", (1, 1, {"batch_frames": 60}), (2, 2, {"batch_frames": 60})),
]


@pytest.mark.parametrize("mode,old,new", CASES)
def test_resume_under_another_layout_delivers_exactly_the_rest(elastic_build, mode, old, new):
    everything = all_items(elastic_build, mode)
    before, _, state = read_layout(elastic_build, mode, *old, batches=2)
    delivered = [k for r in before for k in r]
    assert len(delivered) == len(set(delivered)) > 0
    after, lens, _ = read_layout(elastic_build, mode, *new, state=state)
    rest = [k for r in after for k in r]
    assert len(set(lens)) == 1 and lens[0] > 0, "equal batch counts on every new rank"
    assert len(rest) == len(set(rest)) and not set(rest) & set(delivered), "none twice"
    assert set(rest) | set(delivered) <= everything
    world, workers, size = new
    slots = world * max(1, workers)
    if "batch_frames" in size:  # the unit dealt is a whole frame-budget batch: k per old rank were delivered
        n_batches = len(reference_batches(elastic_build, size["batch_frames"]))
        remaining = n_batches - 2 * old[0]
        assert lens[0] * world == remaining // slots * slots, "only the new layout's sit-out remainder is lost"
    else:
        remaining = len(everything) - len(delivered)
        assert len(rest) == remaining // slots * slots, "only the new layout's sit-out remainder is lost"


def test_the_next_epoch_runs_in_the_new_layout(elastic_build):
    _, _, state = read_layout(elastic_build, "talknet", 2, 2, {"batch_size": 2}, batches=1)
    resumed = loaders.make_loader(elastic_build, seed=1, rank=1, world_size=3, num_workers=1, batch_size=3, with_meta=True)
    resumed.load_state_dict(state)
    list(resumed)
    assert resumed.epoch == 1
    fresh = loaders.make_loader(elastic_build, seed=1, rank=1, world_size=3, num_workers=1, batch_size=3, with_meta=True)
    fresh.set_epoch(1)
    assert [item_keys(b) for b in resumed] == [item_keys(b) for b in fresh]


def test_two_layout_changes_in_one_epoch(elastic_build):
    everything = all_items(elastic_build, "asd-tracks")
    first, _, s1 = read_layout(elastic_build, "asd-tracks", 2, 2, {"batch_size": 2}, batches=2)
    second, _, s2 = read_layout(elastic_build, "asd-tracks", 1, 1, {"batch_size": 3}, state=s1, batches=2)
    assert len(s2["history"]) == 1 and s2["batches_done"] == 2
    third, lens, _ = read_layout(elastic_build, "asd-tracks", 3, 1, {"batch_size": 1}, state=s2)
    seen = [k for part in (first, second, third) for r in part for k in r]
    assert len(seen) == len(set(seen)) and set(seen) <= everything
    assert len(everything) - len(seen) < 3 and len(set(lens)) == 1


def test_same_layout_resume_is_unchanged_and_other_changes_are_refused(elastic_build):
    full, _, _ = read_layout(elastic_build, "talknet", 1, 0, {"batch_size": 2})
    head, _, state = read_layout(elastic_build, "talknet", 1, 0, {"batch_size": 2}, batches=3)
    tail, _, _ = read_layout(elastic_build, "talknet", 1, 0, {"batch_size": 2}, state=state)
    assert head[0] + tail[0] == full[0] and state["history"] == []
    other = loaders.make_loader(elastic_build, seed=2, batch_size=2)
    with pytest.raises(ValueError, match="seed"):
        other.load_state_dict(state)
    fixed = loaders.make_loader(elastic_build, seed=1, world_size=2, batch_size=2, samples_per_epoch=10)
    with pytest.raises(ValueError, match="samples_per_epoch"):
        fixed.load_state_dict({**state, "samples_per_epoch": 10})


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 9), min_size=1, max_size=8), old=st.tuples(st.integers(1, 3), st.integers(1, 3),
       st.integers(1, 3)), new=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
       seed=st.integers(0, 100), buffer=st.integers(0, 5), data=st.data())
def test_elastic_planning_for_any_layouts(sizes, old, new, seed, buffer, data):
    """The real ShardStream planning with the byte reading replaced by keys: after k steps of every rank of
    the old layout, every rank of the new one yields equal counts, and old + new hold no item twice and
    miss only the new layout's remainder."""
    import loaders.dataset as ds
    from loaders.schedule import EpochPart, Layout

    N = sum(sizes)
    assume(N >= old[0] * old[1] and N >= new[0] * new[1])  # either layout's readers each need an item
    index = key_index(sizes)

    def layout_batches(world, workers, B, history, rank):
        stream = key_stream(index, ds.StreamConfig(batch_size=B, seed=seed, shuffle_buffer=buffer, rank=rank,
                                                   world_size=world))
        return (round_robin(worker_batches(stream, workers, 2, history=history)),
                stream.schedule(2, workers, history).batches_per_rank)

    w0, nw0, b0 = old
    first = [layout_batches(w0, nw0, b0, [], r)[0] for r in range(w0)]
    k = data.draw(st.integers(0, min(len(b) for b in first)))
    delivered = [key for b in first for batch in b[:k] for key in batch]
    w1, nw1, b1 = new
    history = [EpochPart(Layout(w0, nw0, b0), k)] if k else []
    assume(k or N >= w1 * nw1)  # a fresh epoch needs an item for every reader (a continuation may have none)
    rest = [layout_batches(w1, nw1, b1, history, r) for r in range(w1)]
    assert len({n for _, n in rest}) == 1 and all(len(b) == n for b, n in rest)
    keys = [key for b, _ in rest for batch in b for key in batch]
    assert len(keys + delivered) == len(set(keys + delivered))
    assert len(keys) == (N - len(delivered)) // (w1 * nw1) * (w1 * nw1)

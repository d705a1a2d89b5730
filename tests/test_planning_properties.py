"""Property-based tests (hypothesis) of the pure planning code.

* ``shardgen.build.plan.plan_spans``: for random lengths, clip/stride lengths, tail policies and
  minimum tails, every source frame belongs to exactly the clips a brute-force reading of the
  rule says, no frame is silently lost, and the audio sample ranges of back-to-back clips tile
  the wav exactly (for random fps, including 29.97).
* ``shardgen.build.labels.clip_labels``: for random persons, boxes (pixel and normalised, in and out of
  the frame), voice segments and clip windows, every label array equals a per-frame brute force.
* ``loaders.schedule.epoch_schedule`` on its own: for random shard sizes, ranks, workers, batch
  sizes, ``drop_last``, ``samples_per_epoch`` and remainders, every reader slot gets the number of
  units and batches a unit-by-unit dealing of the documented rule gives, no unit twice (``drop``)
  or every unit (``pad``), each slot's run a window of a shard-contiguous, file-ordered sequence;
  frame-budget units are whole fixed batches cut to their shortest track; the same arguments
  always give the same batches. ``buffered_order`` is a permutation that never reaches further
  ahead than its buffer.
* The stream executing it (byte reading replaced by keys): every (rank, worker) yields its
  batches, no clip twice, and a resume after k batches yields exactly the rest.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from shardgen.core import format as fmt
from shardgen.build.annotations import Person, VideoAnnotations
from shardgen.build.labels import clip_labels
from shardgen.build.plan import TAILS, BuildParams, plan_spans
from shardgen.build.skips import SkipCode
from loaders.schedule import REMAINDERS, Layout, ScheduleConfig, UnitSpace, epoch_schedule
from loaders.sharding import buffered_order, frame_budget_batches

FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------- clip planner


def reference_clips(n: int, clip: int, stride: int, tail: str, min_tail: int):
    """The rule, read literally: a clip starts every ``stride`` frames while a whole clip fits; the
    frames after the last whole clip form the tail, which starts at the next stride position and is
    kept short, padded, or skipped (policy 'drop', or shorter than ``min_tail``)."""
    starts = list(range(0, n, stride))
    full = [s for s in starts if s + clip <= n]
    covered = full[-1] + clip if full else 0
    first_partial = next((s for s in starts if s + clip > n), None)
    clips = [(s, clip, 0) for s in full]
    skipped = []
    if first_partial is not None and covered < n:
        rest = n - first_partial
        if tail == "drop" or rest < min_tail:
            skipped.append((first_partial, rest))
        else:
            clips.append((first_partial, rest, clip - rest if tail == "pad" else 0))
    return clips, skipped


@FAST
@given(n=st.integers(0, 500), clip=st.integers(1, 90), stride=st.integers(1, 120), tail=st.sampled_from(TAILS),
       min_tail=st.integers(1, 90))
def test_plan_spans_every_frame_belongs_to_exactly_the_planned_clips(n, clip, stride, tail, min_tail):
    spans, skipped = plan_spans(n, clip, stride, tail, min_tail)
    ref_clips, ref_skipped = reference_clips(n, clip, stride, tail, min_tail)
    assert [(s.start, s.n_real, s.pad) for s in spans] == ref_clips
    assert [(s.start, s.n_real) for s, _ in skipped] == ref_skipped

    # per frame: the clips that hold it, from the plan and from the rule's own arithmetic
    member: dict[int, list[int]] = {f: [] for f in range(n)}
    for s in spans:
        assert 0 <= s.start and s.start + s.n_real <= n and s.start % stride == 0
        assert s.n_real + s.pad == (clip if tail == "pad" or s.n_real == clip else s.n_real)
        for f in range(s.start, s.start + s.n_real):
            member[f].append(s.start)
    for f in range(n):
        k_lo, k_hi = max(0, -(-(f - clip + 1) // stride)), f // stride  # clips k with k*stride <= f < k*stride+clip
        expected = [k * stride for k in range(k_lo, k_hi + 1) if k * stride + clip <= n]
        tail_span = [s for s in spans if s.n_real < clip]
        expected += [s.start for s in tail_span if s.start <= f < s.start + s.n_real]
        assert member[f] == sorted(expected), f
    # nothing disappears unseen: with stride <= clip every frame is in a clip or in a reported skip
    if stride <= clip:
        for s, reason in skipped:
            assert reason.code == SkipCode.SHORT_TAIL and reason.message.startswith("tail of")
            for f in range(s.start, s.start + s.n_real):
                member[f].append(-1)
        assert all(member[f] for f in range(n))
    if stride == clip:  # and with stride == clip each frame is in exactly one
        assert all(len(member[f]) == 1 for f in range(n))
    assert sum(1 for s in spans if s.n_real < clip) <= 1 and all(s.pad == 0 for s in spans[:-1])


@FAST
@given(fps=st.sampled_from(["15", "24", "25", "29.97", "30", "50", "59.94", "60", "23.976"]),
       clip_s=st.sampled_from([0.5, 1.0, 2.0, 4.0, 10.0, 15.0]), n=st.integers(1, 3000), tail=st.sampled_from(TAILS))
def test_audio_ranges_of_back_to_back_clips_tile_the_wav(fps, clip_s, n, tail):
    """With stride == clip the clips' sample ranges [a, b) are contiguous: each sample of the covered
    audio belongs to exactly one clip, and a = round(start / fps * 16000) exactly."""
    p = BuildParams(clip_seconds=clip_s, fps=float(fps), tail=tail, min_clip_seconds=0.1)
    spans, _ = plan_spans(n, p.clip_frames, p.stride_frames, p.tail, p.min_tail_frames)
    assume(spans)
    ranges = [fmt.audio_sample_range(s.start, s.start + s.n_real + s.pad, p.fps) for s in spans]
    for (a0, b0), (a1, b1) in zip(ranges, ranges[1:]):
        assert b0 == a1
    f = Fraction(fps)
    for s, (a, b) in zip(spans, ranges):
        assert a == math.floor(Fraction(s.start) * 16000 / f + Fraction(1, 2))
        assert abs((b - a) - (s.n_real + s.pad) * 16000 / float(f)) <= 1


# ----------------------------------------------------------------------------- labels

box_px = st.tuples(st.floats(-200, 300), st.floats(-200, 300), st.floats(0.5, 150), st.floats(0.5, 150))
box_norm = st.tuples(st.floats(-0.6, 1.4), st.floats(-0.6, 1.4), st.floats(0.01, 0.8), st.floats(0.01, 0.8))


@st.composite
def annotations(draw):
    normalised = draw(st.booleans())
    n_persons = draw(st.integers(0, 4))
    persons = []
    for p in range(n_persons):
        frames = draw(st.lists(st.integers(0, 120), max_size=40, unique=True))
        boxes = {f: draw(box_norm if normalised else box_px) for f in frames}
        voice = draw(st.lists(st.tuples(st.integers(0, 120), st.integers(0, 30)).map(lambda t: (t[0], t[0] + t[1])),
                              max_size=4))
        persons.append(Person(str(p), camera_wearer=draw(st.booleans()), boxes=boxes, voice=voice,
                              normalised_boxes=normalised))
    ann = VideoAnnotations("v", "ava-csv" if normalised else "ego4d-av", "f", persons)
    size = draw(st.tuples(st.integers(16, 256), st.integers(16, 256)))
    if not normalised and draw(st.booleans()):
        size = None  # no frame size known: boxes are kept as they are
    return ann, size


@FAST
@given(data=annotations(), start=st.integers(0, 100), n_real=st.integers(1, 60), pad=st.integers(0, 10))
def test_clip_labels_match_a_per_frame_brute_force(data, start, n_real, pad):
    ann, size = data
    got = clip_labels(ann, start, n_real, pad, size)
    n, P = n_real + pad, len(ann.persons)
    boxes = np.full((P, n, 4), np.nan, np.float32)
    speaking = np.zeros((P, n), np.uint8)
    dropped = 0
    for p, person in enumerate(ann.persons):
        for i in range(n):
            f = start + i
            if i < n_real and any(s <= f <= e for s, e in person.voice):  # inclusive segments, no labels on padding
                speaking[p, i] = 1
            if i >= n_real or f not in person.boxes:
                continue
            x, y, w, h = person.boxes[f]
            if person.normalised_boxes:
                x, y, w, h = x * size[0], y * size[1], w * size[0], h * size[1]
            if size is not None and (x >= size[0] or y >= size[1] or x + w <= 0 or y + h <= 0):
                dropped += 1  # wholly outside the frame
                continue
            boxes[p, i] = (x, y, w, h)
    visible = np.array([any(not ann.persons[p].camera_wearer and not np.isnan(boxes[p, i, 0]) for p in range(P))
                        for i in range(n)], np.uint8)
    voice = speaking.max(axis=0) if P else np.zeros(n, np.uint8)
    np.testing.assert_array_equal(got.boxes, boxes)  # NaN where absent, bit-equal float32 elsewhere
    np.testing.assert_array_equal(got.speaking, speaking)
    np.testing.assert_array_equal(got.voice, voice)
    np.testing.assert_array_equal(got.visible, visible)
    assert got.boxes.dtype == np.float32 and got.visible.dtype == got.voice.dtype == got.speaking.dtype == np.uint8
    assert sum(got.dropped.values()) == dropped
    assert [q["frames_with_box"] for q in got.persons] == [int((~np.isnan(boxes[p, :, 0])).sum()) for p in range(P)]


# ----------------------------------------------------------------------------- the epoch schedule


def make_bounds(sizes: list[int]) -> np.ndarray:
    """Shard ``s`` holds item ids ``bounds[s]:bounds[s+1]`` (what the loader plans over)."""
    return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)


def reference_counts(n: int, slots: int, B: int, drop_last: bool, spe: int | None, remainder: str) -> tuple[int, int]:
    """The documented rule, dealt one unit at a time (not the planner's arithmetic): units per slot and batches
    per slot. ``drop``: every slot takes one more while all of them can; ``pad``: while any unit is left.
    Batches: ``B`` units at a time, a final short one unless ``drop_last``."""
    usable = n if spe is None else min(n, spe)
    per = 0
    while (per + 1) * slots <= usable if remainder == "drop" else per * slots < usable:
        per += 1
    batches, left = 0, per
    while left >= B or (left > 0 and not drop_last):
        left -= min(B, left)
        batches += 1
    return per, batches


schedule_args = dict(
    sizes=st.lists(st.integers(0, 15), min_size=1, max_size=12), world=st.integers(1, 4), workers=st.integers(1, 4),
    B=st.integers(1, 6), drop_last=st.booleans(), shuffle=st.booleans(), seed=st.integers(0, 2**32 - 1),
    epoch=st.integers(0, 50), spe=st.none() | st.integers(1, 200), remainder=st.sampled_from(REMAINDERS),
    buffer=st.integers(0, 10))


@FAST
@given(**schedule_args)
def test_the_schedule_deals_equal_batches_no_unit_twice_in_sequential_runs(sizes, world, workers, B, drop_last, shuffle,
                                                                           seed, epoch, spe, remainder, buffer):
    """``epoch_schedule`` on its own: every slot gets the reference's number of units and batches, no unit twice
    (``drop``) or every unit (``pad``), each slot's run a window of a shard-contiguous, file-ordered sequence."""
    bounds = make_bounds(sizes)
    n, slots = int(bounds[-1]), world * workers
    config = ScheduleConfig(seed=seed, shuffle=shuffle, shuffle_buffer=buffer, drop_last=drop_last,
                            samples_per_epoch=spe, remainder=remainder)
    space = UnitSpace.of_items(bounds)
    per, n_batches = reference_counts(n, slots, B, drop_last, spe, remainder)
    try:
        plan = epoch_schedule(space, config, epoch, Layout(world, workers, B))
    except ValueError:
        assert per == 0 or n_batches == 0  # refused only when a reader would starve
        return
    assert per > 0 and n_batches > 0, "refused nothing a reader could read"
    assert plan.batches_per_slot == n_batches and plan.batches_per_rank == n_batches * workers
    # step 1, checked against the shards: a permutation, each shard's items together and in file order
    seq = space.sequence(seed=seed, epoch=epoch, shuffle=shuffle).tolist()
    assert sorted(seq) == list(range(n))
    shard_of = [int(np.searchsorted(bounds, u, side="right")) - 1 for u in seq]
    blocks = [s for i, s in enumerate(shard_of) if i == 0 or shard_of[i - 1] != s]
    assert len(blocks) == len(set(blocks))
    for s in range(len(sizes)):
        assert [u for u, t in zip(seq, shard_of) if t == s] == list(range(bounds[s], bounds[s + 1]))
    dealt, slots_checked = [], 0
    for k in range(slots):
        slot = plan.slot(k)
        run = slot.run.tolist()
        # the run is read in sequence order: a window of the (cyclic) sequence, so a shard is one read
        at = seq.index(run[0])
        assert run == [seq[(at + i) % n] for i in range(len(run))]
        assert sorted(slot.order.tolist()) == list(range(len(run)))
        batches = [b.items.tolist() for b in slot.batches()]
        assert len(batches) == n_batches
        assert all(len(b) == B for b in batches[:-1]) and 0 < len(batches[-1]) <= B
        assert drop_last is False or len(batches[-1]) == B
        assert sum(len(b) for b in batches) == (min(per, n_batches * B))
        assert sorted(u for b in batches for u in b) == sorted(run)  # what is emitted is what is read
        dealt += [u for b in batches for u in b]
        slots_checked += 1
    assert slots_checked == slots
    assert len(dealt) == slots * min(per, n_batches * B)
    if remainder == "drop":
        assert len(dealt) == len(set(dealt)), "no unit twice in an epoch"
        assert plan.sat_out == n - per * slots


@FAST
@given(sizes=st.lists(st.integers(0, 15), min_size=1, max_size=12), world=st.integers(1, 4), workers=st.integers(1, 4),
       B=st.integers(1, 6), shuffle=st.booleans(), seed=st.integers(0, 2**32 - 1), epoch=st.integers(0, 50))
def test_pad_reads_every_unit_fewer_than_slots_of_them_twice(sizes, world, workers, B, shuffle, seed, epoch):
    bounds = make_bounds(sizes)
    n, slots = int(bounds[-1]), world * workers
    assume(n > 0)
    plan = epoch_schedule(UnitSpace.of_items(bounds), ScheduleConfig(seed=seed, shuffle=shuffle, remainder="pad"),
                          epoch, Layout(world, workers, B))
    dealt = [u for k in range(slots) for b in plan.slot(k).batches() for u in b.items.tolist()]
    per, _ = reference_counts(n, slots, B, False, None, "pad")
    assert len(dealt) == per * slots and set(dealt) == set(range(n))
    twice = len(dealt) - n
    assert 0 <= twice < slots


@FAST
@given(**schedule_args)
def test_the_schedule_is_a_pure_function_of_its_arguments(sizes, world, workers, B, drop_last, shuffle, seed, epoch,
                                                          spe, remainder, buffer):
    """Same arguments, same batches — whatever was planned in between, in whichever order the slots are asked."""
    bounds = make_bounds(sizes)
    assume(int(bounds[-1]) >= world * workers * B)
    config = ScheduleConfig(seed=seed, shuffle=shuffle, shuffle_buffer=buffer, drop_last=drop_last,
                            samples_per_epoch=None, remainder=remainder)
    layout = Layout(world, workers, B)

    def batches(space, slots) -> list:
        plan = epoch_schedule(space, config, epoch, layout)
        return [[b.items.tolist() for b in plan.slot(k).batches()] for k in slots]

    slots = list(range(world * workers))
    first = batches(UnitSpace.of_items(bounds), slots)
    epoch_schedule(UnitSpace.of_items(bounds), config, epoch + 1, Layout(1, 1, 1))  # another plan in between
    again = batches(UnitSpace.of_items(bounds), slots[::-1])[::-1]
    _, per_slot = reference_counts(int(bounds[-1]), world * workers, B, drop_last, None, remainder)
    assert first == again and sum(len(b) for b in first) == world * workers * per_slot


@FAST
@given(lengths=st.lists(st.integers(1, 200), min_size=1, max_size=60), budget=st.integers(1, 600),
       world=st.integers(1, 3), workers=st.integers(1, 3), seed=st.integers(0, 1000), epoch=st.integers(0, 20),
       remainder=st.sampled_from(REMAINDERS))
def test_frame_budget_units_are_whole_batches_cut_to_their_shortest(lengths, budget, world, workers, seed, epoch,
                                                                    remainder):
    batches = frame_budget_batches(np.array(lengths), [np.arange(len(lengths))], budget)
    space = UnitSpace.of_budget_batches(batches, np.array(lengths))
    fixed = {tuple(b.tolist()) for b in batches}
    per, n_batches = reference_counts(len(batches), world * workers, 1, False, None, remainder)
    try:
        plan = epoch_schedule(space, ScheduleConfig(seed=seed, remainder=remainder), epoch, Layout(world, workers, 1))
    except ValueError:
        assert per == 0
        return
    seen = []
    for k in range(world * workers):
        slot = plan.slot(k)
        assert slot.n_batches == n_batches == per
        for b in slot.batches():
            assert tuple(b.items.tolist()) in fixed  # one of the fixed batches, whole
            assert b.cut == min(lengths[i] for i in b.items.tolist())
            seen.append(tuple(b.items.tolist()))
    assert len(seen) == per * world * workers
    if remainder == "drop":
        assert len(seen) == len(set(seen)) and len(fixed) - len(seen) < world * workers
    else:
        assert set(seen) == fixed


@FAST
@given(n=st.integers(0, 300), buffer=st.integers(0, 40), seed=st.integers(0, 2**32 - 1))
def test_buffered_order_is_a_permutation_within_the_buffer(n, buffer, seed):
    order = buffered_order(n, buffer, np.random.default_rng(seed)).tolist()
    assert sorted(order) == list(range(n))
    if buffer <= 1:
        assert order == list(range(n))
    for t, i in enumerate(order):
        assert i < t + max(buffer, 1)  # emitted item t is among the first t + buffer read
    # hence a reader that reads in order and emits this order never holds more than `buffer` items
    read = held = peak = 0
    emitted = set()
    for i in order:
        while read <= i:
            read += 1
            held += 1
        peak = max(peak, held)
        held -= 1
        emitted.add(i)
    assert peak <= max(buffer, 1) and len(emitted) == n


def key_index(sizes: list[int]):
    """A source of shards with ``sizes`` clips each, without bytes: the planning's input."""
    from shardgen.core.clip_index import ClipIndexWriter
    from shardgen.core.sources import ShardInfo, ResolvedSource

    writer = ClipIndexWriter()
    for s, n in enumerate(sizes):
        writer.add_shard(s, [(f"s{s}/clip_f{i:06d}", i * 1000, 1000, "", 1, 1, 0, ()) for i in range(n)])
    return ResolvedSource([ShardInfo(f"s{i}.tar", f"s{i}.tar", None, None) for i in range(len(sizes))], writer.index())


def key_stream(index, cfg):
    """The real ``ShardStream`` (schedule, iteration, batching, resume) with the byte reading replaced by clip keys."""
    import loaders.dataset as ds
    from loaders.modes import ModeOptions

    class KeyReader:
        def read(self, run, needed, members_for=None):
            for i in needed:
                yield [i], run[i].clip.key

    class KeyStream(ds.ShardStream):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.reader = KeyReader()

        def _transform(self, sample, item, rng, noise, cut, faces=None):
            return sample

    return KeyStream(index, ModeOptions(mode="raw"), cfg)


def worker_batches(stream, workers: int, epoch: int, batches_done: int = 0, history=()) -> list[list]:
    """What each DataLoader worker of the stream's rank yields (each worker's reader run in this process)."""
    from loaders.dataset import Tally

    reader = stream.epoch_reader(stream.schedule(epoch, workers, history), batches_done, Tally())
    return [list(reader.worker_batches(w)) for w in range(workers)]


def round_robin(per_worker: list[list]) -> list:
    """The batches in the order a DataLoader takes them: round-robin over the workers still running."""
    out, queues, w = [], [list(q) for q in per_worker], 0
    while any(queues):
        if queues[w]:
            out.append(queues[w].pop(0))
        w = (w + 1) % len(queues)
    return out


@SLOW
@given(sizes=st.lists(st.integers(0, 9), min_size=1, max_size=8), world=st.integers(1, 3), workers=st.integers(1, 3),
       B=st.integers(1, 4), drop_last=st.booleans(), seed=st.integers(0, 1000), buffer=st.integers(0, 6),
       data=st.data())
def test_stream_ranks_workers_resume(sizes, world, workers, B, drop_last, seed, buffer, data):
    """The real ``ShardStream.iterate`` with the byte reading replaced by keys: every (rank, DataLoader worker)
    yields exactly ``batches_per_slot`` batches, no clip twice across all of them, and a resume after k batches
    of a rank yields exactly that rank's batches k, k+1, ..."""
    import loaders.dataset as ds

    N = sum(sizes)
    per, n_batches = reference_counts(N, world * workers, B, drop_last, None, "drop")
    assume(n_batches > 0)
    index = key_index(sizes)

    def rank_batches(rank: int, resume: int) -> list[list[str]]:
        cfg = ds.StreamConfig(batch_size=B, seed=seed, shuffle_buffer=buffer, rank=rank, world_size=world,
                              drop_last=drop_last)
        per_worker = worker_batches(key_stream(index, cfg), workers, 3, resume)
        assert sum(len(b) for b in per_worker) == n_batches * workers - resume
        return round_robin(per_worker)

    full = {r: rank_batches(r, 0) for r in range(world)}
    assert [len(b) for b in full.values()] == [n_batches * workers] * world  # every rank the same step count
    keys = [k for r in full for b in full[r] for k in b]
    assert len(keys) == len(set(keys)) == min(per, n_batches * B) * world * workers
    r = data.draw(st.integers(0, world - 1))
    k = data.draw(st.integers(0, len(full[r])))
    assert rank_batches(r, k) == full[r][k:]

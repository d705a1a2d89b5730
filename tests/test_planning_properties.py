"""Property-based tests (hypothesis) of the pure planning code.

* ``shardgen.build.plan.plan_spans``: for random lengths, clip/stride lengths, tail policies and
  minimum tails, every source frame belongs to exactly the clips a brute-force reading of the
  rule says, no frame is silently lost, and the audio sample ranges of back-to-back clips tile
  the wav exactly (for random fps, including 29.97).
* ``shardgen.build.labels.clip_labels``: for random persons, boxes (pixel and normalised, in and out of
  the frame), voice segments and clip windows, every label array equals a per-frame brute force.
* ``loaders.sharding`` and the stream built on it: for random shard sizes, ranks, workers, batch
  sizes, ``drop_last`` and ``samples_per_epoch``, every reader slot gets the same number of
  batches, no clip appears twice in an epoch, and a resume after k batches yields exactly the rest;
  ``buffered_order`` is a permutation that never reaches further ahead than its buffer.
"""

from __future__ import annotations

import math
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from shardgen.core import format as fmt
from shardgen.build.annotations import Person, VideoAnnotations
from shardgen.build.labels import clip_labels
from shardgen.build.plan import TAILS, BuildParams, plan_spans
from shardgen.build.skips import SkipCode
from loaders.sharding import batches_to_skip, buffered_order, epoch_sequence, plan_epoch, slot_order, slot_run

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


# ----------------------------------------------------------------------------- epoch planning


def make_bounds(sizes: list[int]) -> np.ndarray:
    """Shard ``s`` holds unit ids ``bounds[s]:bounds[s+1]`` (what the loader plans over)."""
    return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)


@FAST
@given(sizes=st.lists(st.integers(0, 15), min_size=1, max_size=12), world=st.integers(1, 4), workers=st.integers(1, 4),
       B=st.integers(1, 6), drop_last=st.booleans(), shuffle=st.booleans(), seed=st.integers(0, 2**32 - 1),
       epoch=st.integers(0, 50), spe=st.none() | st.integers(1, 200))
def test_every_slot_gets_equal_batches_and_no_clip_twice(sizes, world, workers, B, drop_last, shuffle, seed, epoch, spe):
    bounds = make_bounds(sizes)
    N, slots = sum(sizes), world * workers
    usable = N if spe is None else min(N, spe)
    try:
        plan = plan_epoch(N, slots=slots, batch_size=B, drop_last=drop_last, samples_per_epoch=spe, epoch=epoch)
    except ValueError:
        assert usable // slots == 0 or (drop_last and usable // slots < B)  # refused only when a reader would starve
        return
    seq = epoch_sequence(bounds, seed=seed, epoch=epoch, shuffle=shuffle)
    assert sorted(seq.tolist()) == list(range(N))  # a permutation of all clips
    shard_of = (np.searchsorted(bounds, seq, side="right") - 1).tolist()
    blocks = [s for i, s in enumerate(shard_of) if i == 0 or shard_of[i - 1] != s]
    assert len(blocks) == len(set(blocks))  # each shard's clips stay together ...
    for s in range(len(sizes)):
        ids = [u for u, t in zip(seq.tolist(), shard_of) if t == s]
        assert ids == list(range(bounds[s], bounds[s + 1]))  # ... in file order: sequential reads
    runs = [slot_run(seq, plan, k, B, drop_last).tolist() for k in range(slots)]
    per_slot = {len(r) for r in runs}
    assert len(per_slot) == 1
    n_batches = {(len(r) // B if drop_last else math.ceil(len(r) / B)) for r in runs}
    assert n_batches == {plan.batches_per_slot}
    keys = [c for r in runs for c in r]
    assert len(keys) == len(set(keys))  # no clip twice in an epoch
    assert plan.dropped == N - plan.clips_per_slot * slots and plan.clips_per_slot == usable // slots
    for k in range(slots):
        order = slot_order(len(runs[k]), seed=seed, epoch=epoch, slot=k, buffer=8, shuffle=shuffle)
        assert sorted(order.tolist()) == list(range(len(runs[k])))
    for done in range(plan.batches_per_slot * workers + 1):  # resume arithmetic: the workers' skips add up to k
        assert sum(batches_to_skip(done, w, workers) for w in range(workers)) == done


@FAST
@given(n=st.integers(0, 300), buffer=st.integers(0, 40), seed=st.integers(0, 2**32 - 1))
def test_buffered_order_is_a_permutation_within_the_buffer(n, buffer, seed):
    order = buffered_order(n, buffer, np.random.default_rng(seed)).tolist()
    assert sorted(order) == list(range(n))
    if buffer <= 1:
        assert order == list(range(n))
    for t, i in enumerate(order):
        assert i < t + max(buffer, 1)  # emitted item t is among the first t + buffer read
    # hence a reader that reads in order and emits this order never holds more than `buffer` clips
    read = held = peak = 0
    emitted = set()
    for i in order:
        while read <= i:
            read += 1
            held += 1
        peak = max(peak, held)
        held -= 1
        emitted.add(i)
    assert peak <= max(buffer, 1)


def key_index(sizes: list[int]):
    """A source of shards with ``sizes`` clips each, without bytes: the planning's input."""
    from shardgen.core.clip_index import ClipIndexWriter
    from shardgen.core.sources import ShardInfo, ResolvedSource

    writer = ClipIndexWriter()
    for s, n in enumerate(sizes):
        writer.add_shard(s, [(f"s{s}/clip_f{i:06d}", i * 1000, 1000, "", 1, 1, 0, ()) for i in range(n)])
    return ResolvedSource([ShardInfo(f"s{i}.tar", f"s{i}.tar", None, None) for i in range(len(sizes))], writer.index())


def key_stream(index, cfg):
    """The real ``ShardStream`` (planning, batching, resume) with the byte reading replaced by clip keys."""
    import loaders.dataset as ds
    from loaders.modes import ModeOptions

    class KeyReader:
        def read(self, run, needed):
            for i in needed:
                yield [i], run[i].clip.key

    class KeyStream(ds.ShardStream):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.reader = KeyReader()

        def _transform(self, sample, unit, rng, noise):
            return sample, None

    return KeyStream(index, ModeOptions(mode="raw"), cfg)


def worker_batches(stream, workers: int) -> list[list]:
    """What each DataLoader worker of the stream yields (``get_worker_info`` faked in this process)."""
    import loaders.dataset as ds

    per_worker = []
    for w in range(workers):
        original = ds.get_worker_info
        ds.get_worker_info = lambda: SimpleNamespace(id=w, num_workers=workers)
        try:
            per_worker.append(list(stream))
        finally:
            ds.get_worker_info = original
    return per_worker


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
    """The real ``ShardStream.__iter__`` / ``_batches`` with the byte reading replaced by keys: every
    (rank, DataLoader worker) yields exactly ``batches_per_slot`` batches, no clip twice across all of
    them, and a resume after k batches of a rank yields exactly that rank's batches k, k+1, ..."""
    import loaders.dataset as ds

    N = sum(sizes)
    assume(N // (world * workers) >= (B if drop_last else 1))
    index = key_index(sizes)

    def rank_batches(rank: int, resume: int) -> list[list[str]]:
        cfg = ds.StreamConfig(batch_size=B, seed=seed, shuffle_buffer=buffer, rank=rank, world_size=world,
                              drop_last=drop_last)
        stream = key_stream(index, cfg)
        stream.epoch, stream.resume_batches = 3, resume
        per_worker = worker_batches(stream, workers)
        assert {len(b) for b in per_worker} <= {stream.plan(workers).batches_per_slot - resume // workers,
                                                stream.plan(workers).batches_per_slot - resume // workers - 1}
        return round_robin(per_worker)

    full = {r: rank_batches(r, 0) for r in range(world)}
    assert len({len(b) for b in full.values()}) == 1  # every rank the same step count
    keys = [k for r in full for b in full[r] for k in b]
    assert len(keys) == len(set(keys))
    r = data.draw(st.integers(0, world - 1))
    k = data.draw(st.integers(0, len(full[r])))
    assert rank_batches(r, k) == full[r][k:]

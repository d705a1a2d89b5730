"""Who reads which clips, in which order: ranks × workers, shuffling, equal batches, resume.

The manifest lists every clip with its shard and byte range, so an epoch can be planned at
clip granularity before any byte is read:

1. the shards are put in a seeded random order (new each epoch) and their clips laid end to
   end, each shard's clips in file order;
2. that sequence is rotated by a per-epoch offset and cut into ``world_size × num_workers``
   equal, contiguous runs ("slots"), one per DataLoader worker of each rank. With
   ``remainder="drop"`` (default) the ``N mod slots`` clips at the end sit out this epoch — a
   different few each epoch, because the offset moves (seeded when shuffling, by exactly the
   left-over count per epoch when not, so every clip takes its turn); with ``remainder="pad"``
   the sequence wraps around instead, so every clip is read and at most ``slots - 1`` clips are
   read twice (``torch.utils.data.DistributedSampler``'s convention, for evaluation);
3. each slot reads its run front to back — sequential I/O, one open per shard touched — and
   emits clips through a seeded shuffle buffer whose emission order is computed up front
   from indices alone.

Every slot has the same number of clips, hence every worker the same number of batches and
every rank the same number of steps: no DDP hang on uneven shards, no clip twice in an epoch.
Because step 3's order is known without reading data, resuming after ``k`` batches skips
exactly the clips those batches held, without decoding them.

**Frame-budget batches** (``asd-tracks`` with ``batch_frames=N``) follow TalkNet-ASD's
``dataLoader.train_loader`` instead: :func:`frame_budget_batches` packs the face tracks into
fixed mini-batches once (longest first, ``max(N // L, 1)`` tracks from the longest unpacked
track of length ``L``), and each epoch shuffles the *batches*, then deals them to the slots
exactly as clips are dealt above (the unit being a whole batch, one per step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from shardgen.core.sources import ClipRef


@dataclass(frozen=True)
class Unit:
    """One item an epoch yields: a whole clip, or one face track of it (``asd-tracks``)."""

    clip: ClipRef
    track: tuple | None = None


@dataclass(frozen=True)
class EpochPlan:
    epoch: int
    slots: int
    clips_per_slot: int
    batches_per_slot: int
    dropped: int  # clips sitting out this epoch (N mod slots, or past samples_per_epoch)


class Stream(IntEnum):
    """The numpy random streams, one number each, so no two uses ever share draws (and changing how
    one is used never shifts another). A stream is :func:`random_stream` ``(stream, seed, epoch, ...)``,
    identical on every rank."""

    SHARD_ORDER = 1  # the epoch's shard permutation
    SHUFFLE_BUFFER = 2  # a slot's shuffle-buffer emission order: [.., slot, segment...]
    AUGMENT = 3  # per item (loaders.dataset): [.., slot, run index]
    EPOCH_OFFSET = 4  # where the epoch's sequence is rotated before it is cut into slots
    BATCH_ORDER = 5  # the epoch's order of the fixed frame-budget batches
    AUGMENT_BUDGET = 6  # per track of a frame-budget batch (loaders.dataset): [.., batch, position]


def random_stream(stream: Stream, seed: int, epoch: int, *parts: int) -> np.random.Generator:
    """``default_rng([seed, epoch, stream, *parts])`` (each part taken mod 2**32)."""
    return np.random.default_rng([int(p) & 0xFFFFFFFF for p in (seed, epoch, stream, *parts)])


def epoch_sequence(shard_clips: list[list[ClipRef]], *, seed: int, epoch: int, shuffle: bool) -> list[ClipRef]:
    order = random_stream(Stream.SHARD_ORDER, seed, epoch).permutation(len(shard_clips)) if shuffle else range(len(shard_clips))
    return [c for i in order for c in shard_clips[i]]


REMAINDERS = ("drop", "pad")


def track_length(unit: Unit) -> int:
    return int(unit.track[2])


def track_sort_id(unit: Unit) -> str:
    """A face track's id within its clip, as text that sorts like ``(person_row, first_frame)``."""
    p, first, _ = unit.track
    return f"{int(p):02d}.{int(first):06d}"


def frame_budget_batches(units: list[Unit], frame_budget: int) -> list[list[int]]:
    """TalkNet's mini-batches over face tracks: lists of indices into ``units``, fixed for every epoch.

    The tracks are sorted by length in frames, longest first; ties by clip key, then
    :func:`track_sort_id` (both ascending). From the longest track not yet packed (length ``L``)
    a batch takes the next ``max(frame_budget // L, 1)`` tracks, so a batch holds about
    ``frame_budget`` frames and its tracks have similar lengths: cutting them to the shortest
    (TalkNet's ``[:numFrames]``) loses little.
    """
    if frame_budget < 1:
        raise ValueError("batch_frames must be at least 1")
    order = sorted(range(len(units)), key=lambda i: (-track_length(units[i]), units[i].clip.key, track_sort_id(units[i])))
    batches: list[list[int]] = []
    start = 0
    while start < len(order):
        end = min(len(order), start + max(frame_budget // track_length(units[order[start]]), 1))
        batches.append(order[start:end])
        start = end
    return batches


def batch_sequence(n_batches: int, *, seed: int, epoch: int, shuffle: bool) -> list[int]:
    """The epoch's order of the fixed mini-batches (TalkNet: ``DataLoader(shuffle=True)`` over them)."""
    return [int(i) for i in random_stream(Stream.BATCH_ORDER, seed, epoch).permutation(n_batches)] if shuffle else list(range(n_batches))


def plan_epoch(n_clips: int, *, slots: int, batch_size: int, drop_last: bool, samples_per_epoch: int | None, epoch: int,
               remainder: str = "drop") -> EpochPlan:
    if remainder not in REMAINDERS:
        raise ValueError(f"remainder {remainder!r}: choose one of {REMAINDERS}")
    usable = n_clips if samples_per_epoch is None else min(n_clips, int(samples_per_epoch))
    per_slot = usable // slots if remainder == "drop" else -(-usable // slots)
    if per_slot == 0:
        raise ValueError(
            f"{n_clips} items cannot feed {slots} readers (world_size × num_workers): every reader needs at least one; "
            "use fewer workers/ranks or more data"
        )
    batches = per_slot // batch_size if drop_last else math.ceil(per_slot / batch_size)
    if batches == 0:
        raise ValueError(f"each reader gets {per_slot} clips, fewer than batch_size={batch_size} with drop_last=True")
    return EpochPlan(epoch, slots, per_slot, batches, max(0, n_clips - per_slot * slots))


def _segment_parts(segment: int) -> tuple:
    """Random-stream parts of a segment: none for the first (so a plain epoch draws what it always drew)."""
    return (segment,) if segment else ()


def arrange_epoch(sequence: list, plan: EpochPlan, *, seed: int, shuffle: bool, segment: int = 0) -> list:
    """Rotate (``drop``) or wrap (``pad``) the epoch's sequence so the slots can cut it evenly."""
    n, usable = len(sequence), plan.clips_per_slot * plan.slots
    if n == 0:
        return []
    if usable >= n:  # pad: wrap around as often as needed (fewer clips than readers too); exact fit: unchanged
        return (sequence * -(-usable // n))[:usable]
    left = n - usable
    offset = int(random_stream(Stream.EPOCH_OFFSET, seed, plan.epoch, *_segment_parts(segment)).integers(n)) if shuffle else (plan.epoch * left) % n
    return sequence[offset:] + sequence[:offset]


def slot_run(sequence: list[ClipRef], plan: EpochPlan, slot: int, batch_size: int, drop_last: bool) -> list[ClipRef]:
    run = sequence[slot * plan.clips_per_slot:(slot + 1) * plan.clips_per_slot]
    if drop_last:
        run = run[: plan.batches_per_slot * batch_size]
    return run


def buffered_order(n: int, buffer: int, rng: np.random.Generator) -> list[int]:
    """Emission order of a shuffle buffer over items read in order 0..n-1.

    Classic streaming shuffle: keep up to ``buffer`` items; when full, emit a random one and
    put the next item read in its place; at the end emit the rest in random order. With
    ``buffer <= 1`` the order is unchanged. Item ``order[t]`` is always among the first
    ``t + buffer`` items read, so a reader never holds more than ``buffer`` clips.
    """
    if buffer <= 1 or n <= 1:
        return list(range(n))
    held: list[int] = []
    out: list[int] = []
    for i in range(n):
        held.append(i)
        if len(held) >= buffer:
            j = int(rng.integers(len(held)))
            held[j], held[-1] = held[-1], held[j]
            out.append(held.pop())
    while held:
        j = int(rng.integers(len(held)))
        held[j], held[-1] = held[-1], held[j]
        out.append(held.pop())
    return out


def slot_order(run_length: int, *, seed: int, epoch: int, slot: int, buffer: int, shuffle: bool,
               segment: int = 0) -> list[int]:
    if not shuffle:
        return list(range(run_length))
    return buffered_order(run_length, buffer, random_stream(Stream.SHUFFLE_BUFFER, seed, epoch, slot, *_segment_parts(segment)))


def batches_to_skip(batches_done_on_rank: int, worker: int, num_workers: int) -> int:
    """A DataLoader takes batch i from worker ``i % W``; after k batches, worker w had given this many."""
    k, W = batches_done_on_rank, max(1, num_workers)
    return max(0, (k - worker + W - 1) // W)


def slot_index(rank: int, worker: int, num_workers: int) -> int:
    return rank * max(1, num_workers) + worker


# --------------------------------------------------------------------------- elastic resume


@dataclass(frozen=True)
class Layout:
    """How an epoch was being read: by how many ranks and workers, in batches of how many items."""

    world_size: int
    num_workers: int
    batch_size: int = 1  # 1 with batch_frames: the unit is a whole batch

    @property
    def slots(self) -> int:
        return self.world_size * max(1, self.num_workers)


@dataclass(frozen=True)
class Segment:
    """A finished part of an epoch: read in ``layout`` for ``batches`` steps (per rank) before a resume changed it."""

    layout: Layout
    batches: int


def delivered_positions(n: int, plan: EpochPlan, layout: Layout, batches: int, *, seed: int, shuffle: bool,
                        buffer: int, drop_last: bool, segment: int, batch_of: int = 1) -> set[int]:
    """Positions (into a sequence of ``n`` units) that ``batches`` steps of every rank in ``layout`` delivered.

    Replays the planning exactly as the readers ran it: the arranged sequence, each slot's run and
    shuffle-buffer order, and how many batches each DataLoader worker had given after ``batches``
    steps of its rank. ``batch_of``: units per batch (``layout.batch_size``, or 1 for frame-budget
    batches, where a unit is a batch).
    """
    arranged = arrange_epoch(list(range(n)), plan, seed=seed, shuffle=shuffle, segment=segment)
    W = max(1, layout.num_workers)
    out: set[int] = set()
    for slot in range(plan.slots):
        run = slot_run(arranged, plan, slot, batch_of, drop_last)
        order = slot_order(len(run), seed=seed, epoch=plan.epoch, slot=slot, buffer=buffer, shuffle=shuffle,
                           segment=segment)
        done = batches_to_skip(batches, slot % W, W) * batch_of
        out.update(run[t] for t in order[:done])
    return out

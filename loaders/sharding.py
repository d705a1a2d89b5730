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

**Memory.** Everything here works on integer *unit ids* in numpy arrays (a clip's row in the
clip index, or a face track's row in its track table), never on a Python object per clip: an
epoch's sequence of a million clips is an 8 MB array, and a :class:`Unit` (with its
:class:`~shardgen.core.clip_index.ClipRef`) is made only for an item about to be read
(:class:`UnitTable`, :class:`RunUnits`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Sequence

import numpy as np

from shardgen.core.clip_index import ClipRef
from shardgen.core.sources import ResolvedSource


#: bumped whenever the same seed and layout would give another order (a saved loader state records it):
#: 2 — plans over integer unit ids, the shuffle buffer's picks drawn vectorised
PLANNER_VERSION = 2


@dataclass(frozen=True)
class Unit:
    """One item an epoch yields: a whole clip, or one face track of it (``asd-tracks``)."""

    clip: ClipRef
    track: tuple | None = None


class UnitTable:
    """The units of a source as integers: clip rows of its clip index, or (``per_track``) face-track rows.

    ``bounds[s]:bounds[s+1]`` are shard ``s``'s units, in file order; :meth:`unit` makes the
    :class:`Unit` of one id when it is about to be read.
    """

    def __init__(self, index: ResolvedSource, per_track: bool):
        self.clips = index.clips
        self.per_track = per_track
        clip_bounds = index.bounds
        self._track_start = self.clips.columns["track_start"]
        self.bounds = (np.asarray(self._track_start[clip_bounds], dtype=np.int64) if per_track
                       else np.asarray(clip_bounds, dtype=np.int64))

    def __len__(self) -> int:
        return int(self.bounds[-1])

    def clip_row(self, unit: int) -> int:
        if not self.per_track:
            return int(unit)
        # np.uint64, not a Python int: against a uint64 column a Python int makes NumPy convert the whole
        # column on every call (1.5 ms at 2M tracks instead of 4 µs)
        return int(self._track_start.searchsorted(np.uint64(unit), side="right")) - 1

    def unit(self, unit: int) -> Unit:
        unit = int(unit)
        if not self.per_track:
            return Unit(self.clips.ref(unit))
        c = self.clips.columns
        track = (int(c["track_person"][unit]), int(c["track_first"][unit]), int(c["track_frames"][unit]))
        return Unit(self.clips.ref(self.clip_row(unit)), track)

    def track_lengths(self) -> np.ndarray:
        return np.asarray(self.clips.columns["track_frames"], dtype=np.int64)

    def track_clips(self) -> np.ndarray:
        """``[M]``: each track's clip row."""
        return self.clips.track_clip()


class RunUnits(Sequence):
    """A run of unit ids seen as :class:`Unit` objects, each made when indexed (nothing is kept)."""

    def __init__(self, table: UnitTable, ids: np.ndarray):
        self.table = table
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return RunUnits(self.table, self.ids[i])
        return self.table.unit(int(self.ids[i]))


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


def epoch_sequence(bounds: np.ndarray, *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The epoch's units: the shards (``bounds[s]:bounds[s+1]`` each) in a seeded order, each shard's units in file order."""
    bounds = np.asarray(bounds, dtype=np.int64)
    n_shards = len(bounds) - 1
    order = random_stream(Stream.SHARD_ORDER, seed, epoch).permutation(n_shards) if shuffle else np.arange(n_shards)
    lengths = (bounds[1:] - bounds[:-1])[order]
    if not len(lengths) or not lengths.sum():
        return np.zeros(0, np.int64)
    ends = np.cumsum(lengths)
    # position j of the sequence lies in shard block b: its id is bounds[order[b]] + (j - block start)
    shift = np.repeat(bounds[:-1][order] - (ends - lengths), lengths)
    return np.arange(int(ends[-1]), dtype=np.int64) + shift


REMAINDERS = ("drop", "pad")


class BudgetBatches:
    """Fixed mini-batches of units: batch ``b`` is ``order[starts[b]:starts[b+1]]`` (two arrays, not a list per batch)."""

    def __init__(self, order: np.ndarray, starts: np.ndarray):
        self.order, self.starts = order, starts

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, b: int) -> np.ndarray:
        return self.order[self.starts[b]:self.starts[b + 1]]

    def __iter__(self):
        return (self[b] for b in range(len(self)))


def frame_budget_batches(lengths: np.ndarray, tiebreak: Sequence[np.ndarray], frame_budget: int) -> BudgetBatches:
    """TalkNet's mini-batches over face tracks (indices into ``lengths``), fixed for every epoch.

    The tracks are sorted by length in frames, longest first; ties by the ``tiebreak`` keys in
    turn, ascending (the loader passes the clip key's rank, then person row, then first frame).
    From the longest track not yet packed (length ``L``) a batch takes the next
    ``max(frame_budget // L, 1)`` tracks, so a batch holds about ``frame_budget`` frames and its
    tracks have similar lengths: cutting them to the shortest (TalkNet's ``[:numFrames]``) loses little.
    """
    if frame_budget < 1:
        raise ValueError("batch_frames must be at least 1")
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.lexsort(tuple(np.asarray(k, dtype=np.int64) for k in reversed(list(tiebreak))) + (-lengths,))
    starts = [0]
    sorted_lengths = lengths[order]
    n = len(order)
    while starts[-1] < n:
        starts.append(min(n, starts[-1] + max(frame_budget // max(int(sorted_lengths[starts[-1]]), 1), 1)))
    return BudgetBatches(order.astype(np.int64), np.asarray(starts, dtype=np.int64))


def batch_sequence(n_batches: int, *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The epoch's order of the fixed mini-batches (TalkNet: ``DataLoader(shuffle=True)`` over them)."""
    return (random_stream(Stream.BATCH_ORDER, seed, epoch).permutation(n_batches).astype(np.int64) if shuffle
            else np.arange(n_batches, dtype=np.int64))


def plan_epoch(n_clips: int, *, slots: int, batch_size: int, drop_last: bool, samples_per_epoch: int | None, epoch: int,
               remainder: str = "drop", unit: str = "items") -> EpochPlan:
    """``unit``: what the ``n_clips`` units are, as an error message names them (clips, tracks, mini-batches)."""
    if remainder not in REMAINDERS:
        raise ValueError(f"remainder {remainder!r}: choose one of {REMAINDERS}")
    usable = n_clips if samples_per_epoch is None else min(n_clips, int(samples_per_epoch))
    per_slot = usable // slots if remainder == "drop" else -(-usable // slots)
    if per_slot == 0:
        raise ValueError(
            f"{n_clips} {unit} cannot feed {slots} readers (world_size × num_workers): every reader needs at least one; "
            "use fewer workers/ranks or more data"
        )
    batches = per_slot // batch_size if drop_last else math.ceil(per_slot / batch_size)
    if batches == 0:
        raise ValueError(f"each reader gets {per_slot} clips, fewer than batch_size={batch_size} with drop_last=True")
    return EpochPlan(epoch, slots, per_slot, batches, max(0, n_clips - per_slot * slots))


def _segment_parts(segment: int) -> tuple:
    """Random-stream parts of a segment: none for the first (so a plain epoch draws what it always drew)."""
    return (segment,) if segment else ()


def arrange_epoch(sequence: np.ndarray, plan: EpochPlan, *, seed: int, shuffle: bool, segment: int = 0) -> np.ndarray:
    """Rotate (``drop``) or wrap (``pad``) the epoch's sequence so the slots can cut it evenly."""
    sequence = np.asarray(sequence, dtype=np.int64)
    n, usable = len(sequence), plan.clips_per_slot * plan.slots
    if n == 0:
        return sequence
    if usable >= n:  # pad: wrap around as often as needed (fewer clips than readers too); exact fit: unchanged
        return np.resize(sequence, usable)
    left = n - usable
    offset = int(random_stream(Stream.EPOCH_OFFSET, seed, plan.epoch, *_segment_parts(segment)).integers(n)) if shuffle else (plan.epoch * left) % n
    return np.concatenate((sequence[offset:], sequence[:offset]))


def slot_run(sequence: np.ndarray, plan: EpochPlan, slot: int, batch_size: int, drop_last: bool) -> np.ndarray:
    run = sequence[slot * plan.clips_per_slot:(slot + 1) * plan.clips_per_slot]
    if drop_last:
        run = run[: plan.batches_per_slot * batch_size]
    return run


_PICK_CHUNK = 1 << 16


def buffered_order(n: int, buffer: int, rng: np.random.Generator) -> np.ndarray:
    """Emission order of a shuffle buffer over items read in order 0..n-1.

    Classic streaming shuffle: keep up to ``buffer`` items; when full, emit a random one and
    put the next item read in its place; at the end emit the rest in random order. With
    ``buffer <= 1`` the order is unchanged. Item ``order[t]`` is always among the first
    ``t + buffer`` items read, so a reader never holds more than ``buffer`` clips.

    The random picks are drawn vectorised (uniform doubles scaled to the number held, 65,536 at
    a time), so the loop left is list arithmetic: ~0.3 µs and no Python object kept per item.
    """
    if buffer <= 1 or n <= 1:
        return np.arange(n, dtype=np.int64)
    first = min(buffer, n) - 1  # items read before the first pick (the buffer filling, or the whole input)
    # pick k is from this many held items: a full buffer while reading, then one fewer each at the end
    sizes = np.concatenate((np.full(n - first, min(buffer, n)), np.arange(min(buffer, n) - 1, 0, -1)))
    out = np.empty(n, dtype=np.int64)
    held: list[int] = list(range(first))
    nxt, k = first, 0  # the next item to read, the next pick
    while k < n:  # in chunks, so no Python list ever holds more than a chunk of picks
        end = min(n, k + _PICK_CHUNK)
        picks = (rng.random(end - k) * sizes[k:end]).astype(np.int64).tolist()
        emitted = []
        for j in picks:
            if nxt < n:
                held.append(nxt)
                nxt += 1
            held[j], held[-1] = held[-1], held[j]
            emitted.append(held.pop())
        out[k:end] = emitted
        k = end
    return out


def slot_order(run_length: int, *, seed: int, epoch: int, slot: int, buffer: int, shuffle: bool,
               segment: int = 0) -> np.ndarray:
    if not shuffle:
        return np.arange(run_length, dtype=np.int64)
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
                        buffer: int, drop_last: bool, segment: int, batch_of: int = 1) -> np.ndarray:
    """Positions (into a sequence of ``n`` units) that ``batches`` steps of every rank in ``layout`` delivered,
    as a boolean mask of length ``n``.

    Replays the planning exactly as the readers ran it: the arranged sequence, each slot's run and
    shuffle-buffer order, and how many batches each DataLoader worker had given after ``batches``
    steps of its rank. ``batch_of``: units per batch (``layout.batch_size``, or 1 for frame-budget
    batches, where a unit is a batch).
    """
    arranged = arrange_epoch(np.arange(n, dtype=np.int64), plan, seed=seed, shuffle=shuffle, segment=segment)
    W = max(1, layout.num_workers)
    out = np.zeros(n, dtype=bool)
    for slot in range(plan.slots):
        run = slot_run(arranged, plan, slot, batch_of, drop_last)
        order = slot_order(len(run), seed=seed, epoch=plan.epoch, slot=slot, buffer=buffer, shuffle=shuffle,
                           segment=segment)
        done = batches_to_skip(batches, slot % W, W) * batch_of
        out[run[order[:done]]] = True
    return out

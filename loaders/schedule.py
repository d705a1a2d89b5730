"""The epoch schedule: which units every reader yields, in which batches — one pure function.

:func:`epoch_schedule` ``(space, config, epoch, layout, history)`` (``space``: the units an epoch
deals) answers, before any byte is read, what every reader slot (one DataLoader worker of one rank) yields in an epoch, as MosaicML
streaming partitions an epoch up front. A *unit* is what an epoch deals: an item (a clip, or a
face track in ``asd-tracks``), or with ``batch_frames`` a whole frame-budget batch of tracks
(:class:`UnitSpace`). Nothing is read from or written to any object: the same arguments give the
same schedule in every process, which is why a DataLoader worker, ``len(loader)``, a resumed
loader and :meth:`ShardStream.epoch_batches <loaders.dataset.ShardStream.epoch_batches>` agree.

1. **Sequence.** The epoch's units in a layout-free order: the shards in a seeded order (new each
   epoch), each shard's items in file order; or the frame-budget batches in a seeded order.
2. **Earlier parts.** An epoch resumed under another layout (elastic resume) is read in *parts*,
   one per layout: ``history`` lists the finished ones (layout, steps every rank took). Each is
   replayed exactly as its readers ran it, and the units it delivered leave the sequence.
3. **Slots.** What is left is rotated by a per-part offset (seeded when shuffling; by the left-over
   count per epoch when not, so every unit takes its turn) and cut into ``world_size × num_workers``
   equal contiguous runs. ``remainder="drop"``: the ``N mod slots`` units past the cut sit out the
   part; ``"pad"``: the sequence wraps so every unit is read, at most ``slots - 1`` twice
   (``DistributedSampler``'s convention, for evaluation). Every slot has the same number of units,
   hence every rank the same number of steps: no DDP hang on uneven shards, no unit twice.
4. **Order.** Each slot reads its run front to back — sequential I/O, one open per shard touched —
   and emits it through a seeded shuffle buffer whose order is computed from indices alone
   (frame-budget batches are already in random order: no buffer).
5. **Batches.** ``layout.batch_size`` consecutive emitted units make a batch (one frame-budget
   batch per step). A resume after ``k`` steps of a rank starts each worker at the batch
   :meth:`EpochSchedule.reader_start` says, without reading what came before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .sharding import BudgetBatches, Stream, batch_sequence, batches_to_skip, buffered_order, random_stream, shard_sequence

#: bumped whenever the same seed and layout would give another order (a saved loader state records it):
#: 2 — plans over integer item ids, the shuffle buffer's picks drawn vectorised;
#: 3 — one schedule: every part of an epoch (the first too) draws its own offset and shuffle-buffer streams;
#: augmentation is seeded per item, not per reader slot or batch position
PLANNER_VERSION = 3

REMAINDERS = ("drop", "pad")


@dataclass(frozen=True)
class ScheduleConfig:
    """What fixes an epoch's order besides the layout (a resume needs it unchanged)."""

    seed: int = 0
    shuffle: bool = True
    shuffle_buffer: int = 8  # units a reader holds to shuffle its run's order
    drop_last: bool = False  # each slot's final partial batch
    samples_per_epoch: int | None = None  # units an epoch deals (all ranks together); None: all
    remainder: str = "drop"

    def __post_init__(self):
        if self.remainder not in REMAINDERS:
            raise ValueError(f"remainder {self.remainder!r}: choose one of {REMAINDERS}")


@dataclass(frozen=True)
class Layout:
    """How an epoch is read: by how many ranks and DataLoader workers, in batches of how many units."""

    world_size: int
    num_workers: int  # 0 workers plan like 1: the main process is the one reader
    batch_size: int = 1  # units per batch: 1 with batch_frames, the unit being a whole batch

    @property
    def readers(self) -> int:
        return max(1, self.num_workers)

    @property
    def slots(self) -> int:
        return self.world_size * self.readers


@dataclass(frozen=True)
class EpochPart:
    """A finished part of an epoch: read in ``layout`` for ``batches`` steps of every rank, before a resume changed it."""

    layout: Layout
    batches: int


@dataclass(frozen=True, eq=False)
class ScheduledBatch:
    """One batch as a reader makes it: its items (clip or track rows) and the length ``cut`` every item is
    cut to when it is known before reading (a frame-budget batch's shortest track), else ``None``."""

    items: np.ndarray
    cut: int | None = None


class UnitSpace:
    """The units an epoch deals, and the items each stands for.

    :meth:`of_items`: each unit is one item, the items grouped by shard (``bounds``).
    :meth:`of_budget_batches`: each unit is one fixed frame-budget batch of face tracks.
    """

    def __init__(self, n_units: int, *, bounds: np.ndarray | None = None, batches: BudgetBatches | None = None,
                 cuts: np.ndarray | None = None, unit_name: str = "items"):
        self.n_units = int(n_units)
        self.unit_name = unit_name  # what an error message calls the units: clips, face tracks, mini-batches
        self.bounds = bounds
        self.batches = batches
        self.cuts = cuts

    @classmethod
    def of_items(cls, bounds: np.ndarray, unit_name: str = "items") -> "UnitSpace":
        bounds = np.asarray(bounds, dtype=np.int64)
        return cls(int(bounds[-1]) if len(bounds) else 0, bounds=bounds, unit_name=unit_name)

    @classmethod
    def of_budget_batches(cls, batches: BudgetBatches, item_lengths: np.ndarray) -> "UnitSpace":
        """``item_lengths``: each track's frames; a batch is cut to its shortest."""
        lengths = np.asarray(item_lengths, dtype=np.int64)
        cuts = (np.minimum.reduceat(lengths[batches.order], batches.starts[:-1]) if len(batches)
                else np.zeros(0, np.int64))
        return cls(len(batches), batches=batches, cuts=cuts, unit_name="mini-batches (batch_frames)")

    @property
    def are_batches(self) -> bool:
        return self.batches is not None

    def __len__(self) -> int:
        return self.n_units

    def sequence(self, *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
        """Step 1: the epoch's units in an order that does not depend on the layout."""
        if self.are_batches:
            return batch_sequence(self.n_units, seed=seed, epoch=epoch, shuffle=shuffle)
        return shard_sequence(self.bounds, seed=seed, epoch=epoch, shuffle=shuffle)

    def batch(self, units: np.ndarray) -> ScheduledBatch:
        """The batch made of these units (their items, in order)."""
        if not self.are_batches:
            return ScheduledBatch(np.asarray(units, dtype=np.int64))
        (b,) = (int(u) for u in units)  # one frame-budget batch per step
        return ScheduledBatch(self.batches[b], int(self.cuts[b]))


@dataclass(frozen=True, eq=False)
class SlotSchedule:
    """What one reader slot yields: ``run`` (unit ids, in the order they are read), ``order`` (positions in
    ``run``, in the order they are emitted) and ``n_batches`` batches of ``units_per_batch`` emitted units."""

    space: UnitSpace
    run: np.ndarray
    order: np.ndarray
    units_per_batch: int
    n_batches: int

    def batch_positions(self, k: int) -> np.ndarray:
        """Positions in ``run`` of batch ``k``'s units."""
        B = self.units_per_batch
        return self.order[k * B:(k + 1) * B]

    def batch(self, k: int) -> ScheduledBatch:
        return self.space.batch(self.run[self.batch_positions(k)])

    def batches(self) -> list[ScheduledBatch]:
        return [self.batch(k) for k in range(self.n_batches)]


@dataclass(frozen=True, eq=False)
class EpochSchedule:
    """One part of an epoch, planned: :meth:`slot` gives each reader slot's batches (computed when asked)."""

    space: UnitSpace
    config: ScheduleConfig
    epoch: int
    layout: Layout
    part: int  # how many parts of this epoch were read before (elastic resume); 0 for a plain epoch
    arranged: np.ndarray  # the part's units, rotated or wrapped, to be cut into equal runs
    units_per_slot: int
    batches_per_slot: int
    sat_out: int  # units of the part that no slot reads (N mod slots, or past samples_per_epoch)

    @property
    def batches_per_rank(self) -> int:
        """Steps every rank takes in this part (``len(loader)``)."""
        return self.batches_per_slot * self.layout.readers

    def slot_index(self, rank: int, worker: int) -> int:
        return rank * self.layout.readers + worker

    def slot(self, slot: int) -> SlotSchedule:
        B, c = self.layout.batch_size, self.config
        run = self.arranged[slot * self.units_per_slot:(slot + 1) * self.units_per_slot]
        if c.drop_last:
            run = run[: self.batches_per_slot * B]
        if c.shuffle and not self.space.are_batches:  # frame-budget batches come in random order already
            rng = random_stream(Stream.SHUFFLE_BUFFER, c.seed, self.epoch, self.part, slot)
            order = buffered_order(len(run), c.shuffle_buffer, rng)
        else:
            order = np.arange(len(run), dtype=np.int64)
        return SlotSchedule(self.space, run, order, B, self.batches_per_slot)

    def reader_start(self, rank: int, dataloader_worker: int, batches_done: int) -> tuple[int, int]:
        """The slot a DataLoader worker of ``rank`` reads, and its first batch, after ``batches_done`` steps of the rank.

        A DataLoader takes batch ``i`` from worker ``i % W`` and always asks worker 0 first; resumed
        at step ``k``, the next batch is logical worker ``k % W``'s, so DataLoader worker ``w``
        plays logical worker ``(w + k) % W``.
        """
        W = self.layout.readers
        worker = (dataloader_worker + batches_done) % W
        return self.slot_index(rank, worker), batches_to_skip(batches_done, worker, W)


def _deal(space: UnitSpace, sequence: np.ndarray, config: ScheduleConfig, epoch: int, layout: Layout,
          part: int) -> EpochSchedule:
    """Steps 3-5 for one part: rotate or wrap ``sequence`` and size the slots' runs and batches."""
    n, slots, B = len(sequence), layout.slots, layout.batch_size
    usable = n if config.samples_per_epoch is None or part else min(n, int(config.samples_per_epoch))
    per_slot = usable // slots if config.remainder == "drop" else -(-usable // slots)
    batches = per_slot // B if config.drop_last else math.ceil(per_slot / B)
    if per_slot == 0 or batches == 0:
        if part:  # the rest of a resumed epoch is too little for every reader: this part reads nothing
            return EpochSchedule(space, config, epoch, layout, part, sequence[:0], 0, 0, n)
        if per_slot == 0:
            raise ValueError(f"{n} {space.unit_name} cannot feed {slots} readers (world_size × num_workers): every reader needs "
                             "at least one; use fewer workers/ranks or more data")
        raise ValueError(f"each reader gets {per_slot} {space.unit_name}, fewer than batch_size={B} with drop_last=True")
    used = per_slot * slots
    if used >= n:  # pad: wrap around as often as needed (fewer units than readers too); exact fit: unchanged
        arranged = np.resize(sequence, used)
    else:
        left = n - used
        offset = (int(random_stream(Stream.EPOCH_OFFSET, config.seed, epoch, part).integers(n)) if config.shuffle
                  else (epoch * left) % n)
        arranged = np.concatenate((sequence[offset:], sequence[:offset]))
    return EpochSchedule(space, config, epoch, layout, part, arranged, per_slot, batches, max(0, n - used))


def _delivered(schedule: EpochSchedule, batches: int) -> np.ndarray:
    """The units that ``batches`` steps of every rank delivered in this part, each once."""
    W = schedule.layout.readers
    done = []
    for slot in range(schedule.layout.slots):
        s = schedule.slot(slot)
        k = min(s.n_batches, batches_to_skip(batches, slot % W, W))
        done.append(s.run[s.order[: k * s.units_per_batch]])
    return np.unique(np.concatenate(done)) if done else np.zeros(0, np.int64)


def epoch_schedule(space: UnitSpace, config: ScheduleConfig, epoch: int, layout: Layout,
                   history: Sequence[EpochPart] = ()) -> EpochSchedule:
    """Plan ``epoch`` as ``layout`` reads it, after the finished ``history`` parts (elastic resume): pure."""
    if space.are_batches and any(L.batch_size != 1 for L in (layout, *(p.layout for p in history))):
        raise ValueError("a frame-budget batch is one step: its layouts take batches of one unit")
    sequence = space.sequence(seed=config.seed, epoch=epoch, shuffle=config.shuffle)
    for part, done in enumerate(history):
        gone = _delivered(_deal(space, sequence, config, epoch, done.layout, part), done.batches)
        sequence = sequence[~np.isin(sequence, gone)]
    return _deal(space, sequence, config, epoch, layout, len(history))

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


class Draw(IntEnum):
    """Which random stream a draw comes from. Each purpose has its own stream (seeded by seed, epoch,
    this number and its own indices), so changing how one is used never shifts another."""

    SHARD_ORDER = 1  # the epoch's shard permutation
    SHUFFLE_BUFFER = 2  # a slot's shuffle-buffer emission order
    AUGMENT = 3  # per item: flip / crop / rotate / noise (loaders.dataset)
    EPOCH_OFFSET = 4  # where the epoch's sequence is rotated before it is cut into slots


def rng(draw: Draw, seed: int, epoch: int, *parts: int) -> np.random.Generator:
    """The generator for ``draw`` in ``epoch`` (``parts``: e.g. the slot and the item), identical on every rank."""
    return np.random.default_rng([int(p) & 0xFFFFFFFF for p in (seed, epoch, draw, *parts)])


def epoch_sequence(shard_clips: list[list[ClipRef]], *, seed: int, epoch: int, shuffle: bool) -> list[ClipRef]:
    order = rng(Draw.SHARD_ORDER, seed, epoch).permutation(len(shard_clips)) if shuffle else range(len(shard_clips))
    return [c for i in order for c in shard_clips[i]]


REMAINDERS = ("drop", "pad")


def plan_epoch(n_clips: int, *, slots: int, batch_size: int, drop_last: bool, samples_per_epoch: int | None, epoch: int,
               remainder: str = "drop") -> EpochPlan:
    if remainder not in REMAINDERS:
        raise ValueError(f"remainder {remainder!r}: choose one of {REMAINDERS}")
    usable = n_clips if samples_per_epoch is None else min(n_clips, int(samples_per_epoch))
    per_slot = usable // slots if remainder == "drop" else -(-usable // slots)
    if per_slot == 0:
        raise ValueError(
            f"{n_clips} clips cannot feed {slots} readers (world_size × num_workers): every reader needs at least one clip; "
            "use fewer workers/ranks or more data"
        )
    batches = per_slot // batch_size if drop_last else math.ceil(per_slot / batch_size)
    if batches == 0:
        raise ValueError(f"each reader gets {per_slot} clips, fewer than batch_size={batch_size} with drop_last=True")
    return EpochPlan(epoch, slots, per_slot, batches, max(0, n_clips - per_slot * slots))


def arrange_epoch(sequence: list, plan: EpochPlan, *, seed: int, shuffle: bool) -> list:
    """Rotate (``drop``) or wrap (``pad``) the epoch's sequence so the slots can cut it evenly."""
    n, usable = len(sequence), plan.clips_per_slot * plan.slots
    if usable >= n:  # pad: wrap around as often as needed (fewer clips than readers too); exact fit: unchanged
        return (sequence * -(-usable // n))[:usable]
    left = n - usable
    offset = int(rng(Draw.EPOCH_OFFSET, seed, plan.epoch).integers(n)) if shuffle else (plan.epoch * left) % n
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


def slot_order(run_length: int, *, seed: int, epoch: int, slot: int, buffer: int, shuffle: bool) -> list[int]:
    if not shuffle:
        return list(range(run_length))
    return buffered_order(run_length, buffer, rng(Draw.SHUFFLE_BUFFER, seed, epoch, slot))


def batches_to_skip(batches_done_on_rank: int, worker: int, num_workers: int) -> int:
    """A DataLoader takes batch i from worker ``i % W``; after k batches, worker w had given this many."""
    k, W = batches_done_on_rank, max(1, num_workers)
    return max(0, (k - worker + W - 1) // W)


def slot_index(rank: int, worker: int, num_workers: int) -> int:
    return rank * max(1, num_workers) + worker

"""The pure pieces an epoch schedule (:mod:`loaders.schedule`) is made of, all on integer arrays.

* :class:`Stream` / :func:`random_stream`: the named, seeded numpy random streams — one number
  each, so no two uses share draws and every rank draws the same;
* :func:`shard_sequence`: an epoch's items, the shards in a seeded order, each shard's items in
  file order (what makes a reader's run sequential I/O);
* :func:`frame_budget_batches` / :func:`batch_sequence`: TalkNet-ASD's fixed frame-budget batches
  of face tracks, and their per-epoch order;
* :func:`buffered_order`: the emission order of a streaming shuffle buffer, computed from indices
  alone (so a resume skips exactly what was emitted, without reading it);
* :func:`batches_to_skip`: what each DataLoader worker had given after ``k`` batches of its rank.

Nothing here reads a byte or keeps a Python object per item: an epoch of a million clips is an
8 MB array.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Sequence

import numpy as np


class Stream(IntEnum):
    """The numpy random streams, one number each, so no two uses ever share draws (and changing how
    one is used never shifts another). A stream is :func:`random_stream` ``(stream, seed, epoch, ...)``,
    identical on every rank. Retired numbers are never reused."""

    SHARD_ORDER = 1  # the epoch's shard permutation
    SHUFFLE_BUFFER = 2  # a slot's shuffle-buffer emission order: [.., part, slot]
    AUGMENT = 3  # one item's augmentation: [.., item id]
    EPOCH_OFFSET = 4  # where a part's sequence is rotated before it is cut into slots: [.., part]
    BATCH_ORDER = 5  # the epoch's order of the fixed frame-budget batches
    # 6: retired (planner 2 seeded a frame-budget batch's augmentation by batch and position)
    NOISE_PARTNER = 7  # which other item of its batch lends an item its noise: [.., item id]


def random_stream(stream: Stream, seed: int, epoch: int, *parts: int) -> np.random.Generator:
    """``default_rng([seed, epoch, stream, *parts])`` (each part taken mod 2**32)."""
    return np.random.default_rng([int(p) & 0xFFFFFFFF for p in (seed, epoch, stream, *parts)])


def shard_sequence(bounds: np.ndarray, *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The epoch's items: the shards (``bounds[s]:bounds[s+1]`` each) in a seeded order, each shard's items in file order."""
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


class BudgetBatches:
    """Fixed mini-batches of items: batch ``b`` is ``order[starts[b]:starts[b+1]]`` (two arrays, not a list per batch)."""

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


_PICK_CHUNK = 1 << 16


def buffered_order(n: int, buffer: int, rng: np.random.Generator) -> np.ndarray:
    """Emission order of a shuffle buffer over items read in order 0..n-1.

    Classic streaming shuffle: keep up to ``buffer`` items; when full, emit a random one and
    put the next item read in its place; at the end emit the rest in random order. With
    ``buffer <= 1`` the order is unchanged. Item ``order[t]`` is always among the first
    ``t + buffer`` items read, so a reader never holds more than ``buffer`` items.

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


def batches_to_skip(batches_done_on_rank: int, worker: int, num_workers: int) -> int:
    """A DataLoader takes batch i from worker ``i % W``; after k batches, worker w had given this many."""
    k, W = batches_done_on_rank, max(1, num_workers)
    return max(0, (k - worker + W - 1) // W)

"""The streaming dataset: what each DataLoader worker reads and yields.

:class:`ShardStream` is a ``torch.utils.data.IterableDataset`` whose every DataLoader worker
reads its own contiguous run of clips (see :mod:`loaders.sharding`), checks each clip against
the sample format, turns it into the chosen mode's item and yields whole batches. The loader
object training scripts hold, :class:`loaders.loader.ASDLoader`, wraps a DataLoader around it.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
from dataclasses import dataclass
from enum import IntEnum
from typing import Iterator

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from shardgen.core.format import FormatError
from shardgen.core.sample import ClipSample
from shardgen.core.sources import ResolvedSource
from shardgen.core.storage import TransportOptions
from shardgen.core.tario import DEFAULT_MAX_MEMBER, TarError

from .crop_cache import CropCache
from .faces import batch_faces, cuts_from_frames
from .modes import ModeOptions, TrackCollate, collate_raw, raw_item, talknet_item, track_audio, track_item
from .reader import ClipReader, ShardReadError
from .sharding import (BudgetBatches, EpochPlan, Layout, RunUnits, Segment, Stream, Unit, UnitTable, arrange_epoch,
                       batch_sequence, batches_to_skip, delivered_positions, epoch_sequence, frame_budget_batches,
                       plan_epoch, random_stream, slot_index, slot_order, slot_run)

ON_ERROR = ("raise", "skip")


class Counter(IntEnum):
    """Slots of the per-epoch counters shared by the DataLoader workers (``loader.stats``)."""

    ITEMS = 0  # items yielded in batches
    SKIPPED = 1  # items lost to damage with on_error="skip"
    FILLER = 2  # batches repeated to keep every rank's step count equal after skips
    FRAMES_DELIVERED = 3  # frames in the yielded batches (B x T, after cutting to the shortest)
    ITEM_FRAMES = 4  # frames of those items before cutting (face-track frames in asd-tracks)


@dataclass
class StreamConfig:
    batch_size: int = 1
    shuffle: bool = True
    seed: int = 0
    shuffle_buffer: int = 8
    rank: int = 0
    world_size: int = 1
    drop_last: bool = False
    samples_per_epoch: int | None = None
    remainder: str = "drop"
    on_error: str = "raise"
    max_member_bytes: int = DEFAULT_MAX_MEMBER
    batch_frames: int | None = None  # asd-tracks: TalkNet's frame-budget batches instead of batch_size items

    def __post_init__(self):
        if self.on_error not in ON_ERROR:
            raise ValueError(f"on_error {self.on_error!r}: choose one of {ON_ERROR}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.batch_frames is not None:
            if self.batch_frames < 1:
                raise ValueError("batch_frames must be at least 1")
            if self.batch_size != 1:
                raise ValueError("batch_frames and batch_size are exclusive: a frame budget decides each batch's size")
            if self.samples_per_epoch is not None:
                raise ValueError("samples_per_epoch counts items; with batch_frames an epoch is every frame-budget batch")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside world_size {self.world_size}")


class ShardStream(IterableDataset):
    def __init__(self, index: ResolvedSource, opts: ModeOptions, cfg: StreamConfig, remote_options: TransportOptions | None = None):
        super().__init__()
        self.index = index
        self.opts = opts
        self.cfg = cfg
        self.remote_options = remote_options
        self.epoch = 0
        self.resume_batches = 0
        self.history: list[Segment] = []  # this epoch's segments read in other layouts (elastic resume)
        self._sequence_cache: tuple = (None, [])
        self.counters = mp.get_context("fork").Array("q", len(Counter), lock=True)
        self.units = UnitTable(index, per_track=opts.mode == "asd-tracks")
        self.reader = ClipReader(index, remote_options, cfg.max_member_bytes)
        self.source_digest = _source_digest(index)
        self._collate = collate_raw if opts.mode == "raw" else TrackCollate(opts.faces_dtype)
        self._budget_batches = BudgetBatches(np.zeros(0, np.int64), np.zeros(1, np.int64))
        self.crop_cache = CropCache(opts.crop_cache_dir, opts.crop_cache_bytes) if opts.crop_cache_dir else None
        if self.crop_cache is not None and cfg.batch_frames is None:
            raise ValueError("crop_cache_dir works with batch_frames batches")
        if cfg.batch_frames is not None:
            if opts.mode != "asd-tracks":
                raise ValueError(f"batch_frames packs face tracks: it needs mode='asd-tracks', not {opts.mode!r}")
            c = index.clips.columns  # ties: the clip key, then the track's person row and first frame
            self._budget_batches = frame_budget_batches(
                self.units.track_lengths(), (index.clips.key_order()[self.units.track_clips()], c["track_person"],
                                             c["track_first"]), cfg.batch_frames)

    # ------------------------------------------------------------------ planning
    @property
    def n_units(self) -> int:
        return len(self.units)

    @property
    def budget_batches(self) -> list[list[Unit]]:
        """The fixed frame-budget batches (``batch_frames``), as face tracks; empty otherwise (small sources:
        a Python object per track)."""
        return [[self.units.unit(i) for i in b] for b in self._budget_batches]

    # An epoch is planned over a layout-free sequence: the clips (or tracks) in shard order, or the
    # frame-budget batches, shuffled per epoch. A resume under another layout (ranks, workers,
    # batch size) ends a *segment*: the next one plans over what the earlier ones did not deliver.

    @property
    def _budget(self) -> bool:
        return self.cfg.batch_frames is not None

    def _base_sequence(self, epoch: int) -> list:
        c = self.cfg
        if self._budget:
            return batch_sequence(len(self._budget_batches), seed=c.seed, epoch=epoch, shuffle=c.shuffle)
        return epoch_sequence(self.units.bounds, seed=c.seed, epoch=epoch, shuffle=c.shuffle)

    def layout(self, num_workers: int) -> Layout:
        """The layout this stream reads in (0 workers plan like 1: the main process is the one reader)."""
        return Layout(self.cfg.world_size, max(1, int(num_workers)), 1 if self._budget else self.cfg.batch_size)

    def _plan_n(self, n: int, layout: Layout, epoch: int, segment: int) -> EpochPlan:
        c = self.cfg
        try:
            if self._budget:  # the unit dealt to readers is a whole batch
                return plan_epoch(n, slots=layout.slots, batch_size=1, drop_last=False, samples_per_epoch=None,
                                  epoch=epoch, remainder=c.remainder)
            return plan_epoch(n, slots=layout.slots, batch_size=layout.batch_size, drop_last=c.drop_last,
                              samples_per_epoch=c.samples_per_epoch if segment == 0 else None, epoch=epoch,
                              remainder=c.remainder)
        except ValueError:
            if segment == 0:
                raise
            return EpochPlan(epoch, layout.slots, 0, 0, n)  # the rest of a resumed epoch is too little for every reader

    def _segments(self, epoch: int) -> list[Segment]:
        return self.history if epoch == self.epoch else []  # the history belongs to the current epoch only

    def _sequence(self, epoch: int) -> list:
        """What this epoch's current segment plans over: the units earlier segments did not deliver."""
        key = (epoch, tuple(self._segments(epoch)))
        if self._sequence_cache[0] == key:
            return self._sequence_cache[1]
        c = self.cfg
        seq = self._base_sequence(epoch)
        for i, seg in enumerate(self._segments(epoch)):
            plan = self._plan_n(len(seq), seg.layout, epoch, i)
            gone = delivered_positions(len(seq), plan, seg.layout, seg.batches, seed=c.seed, shuffle=c.shuffle,
                                       buffer=1 if self._budget else c.shuffle_buffer,
                                       drop_last=c.drop_last and not self._budget, segment=i,
                                       batch_of=seg.layout.batch_size)
            seq = seq[~gone]
        self._sequence_cache = (key, seq)
        return seq

    def plan(self, num_workers: int, epoch: int | None = None) -> EpochPlan:
        epoch = self.epoch if epoch is None else epoch
        return self._plan_n(len(self._sequence(epoch)), self.layout(num_workers), epoch, len(self._segments(epoch)))

    def _arranged(self, plan: EpochPlan) -> list:
        c = self.cfg
        return arrange_epoch(self._sequence(plan.epoch), plan, seed=c.seed, shuffle=c.shuffle,
                             segment=len(self._segments(plan.epoch)))

    def slot_budget_batches(self, slot: int, num_workers: int, epoch: int | None = None) -> list[int]:
        """Which frame-budget batches (indices into :attr:`budget_batches`) a slot yields this epoch, in order."""
        plan = self.plan(num_workers, epoch)
        return slot_run(self._arranged(plan), plan, slot, 1, False).tolist()

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator:
        info = get_worker_info()
        W = info.num_workers if info else 1
        # A DataLoader always asks worker 0 first; after a resume at batch k the next batch is
        # logical worker k % W's, so DataLoader worker w plays logical worker (w + k) % W.
        worker = ((info.id if info else 0) + self.resume_batches) % W
        c = self.cfg
        skip = batches_to_skip(self.resume_batches, worker, W)
        slot = slot_index(c.rank, worker, W)
        if self._budget:
            yield from self._frame_budget_batches(self.slot_budget_batches(slot, W)[skip:])
            return
        plan = self.plan(W)
        run, order = self._slot_run(slot, plan)
        emit = order[skip * c.batch_size:]
        n_batches = plan.batches_per_slot - skip
        yield from self._batches(run, emit, n_batches, slot)

    def _slot_run(self, slot: int, plan: EpochPlan) -> tuple[RunUnits, np.ndarray]:
        """A slot's run of items (read in this order) and the order the shuffle buffer emits them in."""
        c = self.cfg
        run = RunUnits(self.units, slot_run(self._arranged(plan), plan, slot, c.batch_size, c.drop_last))
        return run, slot_order(len(run), seed=c.seed, epoch=plan.epoch, slot=slot, buffer=c.shuffle_buffer,
                               shuffle=c.shuffle, segment=len(self._segments(plan.epoch)))

    def epoch_batches(self, slot: int, num_workers: int, epoch: int | None = None) -> list[list[Unit]]:
        """The items of each batch a slot (``rank * num_workers + worker``) yields in an epoch, without reading
        any data — what a planner or a frames-kept estimate needs (damage skipped at run time aside)."""
        if self._budget:
            return [[self.units.unit(i) for i in self._budget_batches[b]] for b in self.slot_budget_batches(slot, num_workers, epoch)]
        plan = self.plan(num_workers, epoch)
        run, order = self._slot_run(slot, plan)
        B = self.cfg.batch_size
        return [[run[int(t)] for t in order[i:i + B]] for i in range(0, len(order), B)]

    def _batches(self, run: RunUnits, emit: np.ndarray, n_batches: int, slot: int) -> Iterator:
        """One batch per ``batch_size`` planned positions of ``emit``, so the k-th batch always covers the
        k-th positions — which is what a resume skips by. An item lost to damage (``on_error="skip"``)
        leaves its batch shorter; a batch that lost every item is replaced in place by a filler."""
        B = self.cfg.batch_size
        reader = self.reader.read(run, np.sort(emit))
        held: dict[int, object] = {}
        noise = None
        fill = _Fill(self)
        for start in range(0, len(emit), B):
            batch = []
            for t in emit[start:start + B].tolist():
                while t not in held:
                    idxs, sample = next(reader)
                    for i in idxs:
                        held[i] = sample
                sample = held.pop(t)
                unit = run[t]  # made once here (an index lookup): the transform and the error name share it
                try:
                    if isinstance(sample, Exception):
                        raise sample
                    rng = random_stream(Stream.AUGMENT, self.cfg.seed, self.epoch, slot, t) if self.opts.augment else None
                    item, noise = self._transform(sample, unit, rng, noise)
                except Exception as exc:  # a hostile clip can fail anywhere in decoding: always named, or counted
                    fill.failed(self._failed(exc, unit))  # raises, or counts the skip
                    continue
                batch.append(item)
            yield from fill.batch(batch)
        yield from fill.finish(n_batches)

    def _frame_budget_batches(self, batch_ids: list[int]) -> Iterator:
        """Yield the given frame-budget batches: each track read sparsely, cut to the batch's shortest.

        Only the first ``T`` frames of each track (``T``: the batch's shortest, from the manifest) are
        read and decoded; the MFCC is of the whole track's audio, then cut to ``4T`` rows (TalkNet's
        ``load_audio``). Should a track of the batch fail (``on_error="skip"``), the others stay cut
        to the planned ``T``; a batch that lost every track is replaced in place by a filler.

        With ``augment=True`` a track's noise is another track of the same batch (TalkNet's
        ``overlap`` draws from its mini-batch's audio set).
        """
        use_crops = self.opts.use_derived and not self.opts.smooth_boxes
        fill = _Fill(self)
        for b in batch_ids:
            units = [self.units.unit(i) for i in self._budget_batches[b]]
            T = min(u.track[2] for u in units)  # the batch is cut to its shortest track: read and decode no more
            keys, known = self._cached_crops(units, T)
            samples: list = [None] * len(units)
            by_clip: dict = {}  # a batch's tracks of one clip (similar lengths sort together): one read
            for j, u in enumerate(units):
                by_clip.setdefault(u.clip, []).append(j)
            for group in by_clip.values():
                cached = frozenset(units[j] for j in group if known[j] is not None)
                sample = self.reader.read_tracks([units[j] for j in group], use_crops=use_crops, frames=T, cached=cached)
                for j in group:
                    samples[j] = sample
            clean = [None] * len(units)
            if self.opts.augment:
                for j, (u, s) in enumerate(zip(units, samples)):
                    if isinstance(s, ClipSample):
                        try:
                            clean[j] = track_audio(s, u.track)[0]
                        except Exception:
                            pass  # this track fails (named) below
            faces = batch_faces(samples, [u.track for u in units], keep=T, use_derived=self.opts.use_derived,
                                smooth=self.opts.smooth_boxes, known=known)  # each frame decoded once for all tracks
            self._keep_crops(keys, known, samples, faces)
            items, lengths = [], 0
            for j, (u, sample) in enumerate(zip(units, samples)):
                try:
                    for failed in (sample, faces[j]):
                        if isinstance(failed, Exception):
                            raise failed
                    rng = noise = None
                    if self.opts.augment:
                        rng = random_stream(Stream.AUGMENT_BUDGET, self.cfg.seed, self.epoch, b, j)
                        others = [k for k in range(len(units)) if k != j and clean[k] is not None]
                        noise = clean[others[int(rng.integers(len(others)))]] if others else None
                    items.append(track_item(sample, u.track, self.opts, rng, noise, keep=T, faces=faces[j])[0])
                    lengths += u.track[2]
                except Exception as exc:
                    fill.failed(self._failed(exc, u))  # raises, or counts the skip
            yield from fill.batch(items, lengths)
        yield from fill.finish(len(batch_ids))

    def _cached_crops(self, units: list[Unit], keep: int) -> tuple[list, list]:
        """The crop cache's names for these tracks' crops and the crops it holds (None where it has none)."""
        if self.crop_cache is None:
            return [None] * len(units), [None] * len(units)
        keys = [self.crop_cache.key(self.index.shards[u.clip.shard].sha256, u.clip.offset, u.track,
                                    min(keep, u.track[2]), self.opts.smooth_boxes) for u in units]
        return keys, [self.crop_cache.load(k, min(keep, u.track[2])) for k, u in zip(keys, units)]

    def _keep_crops(self, keys: list, known: list, samples: list, faces: list) -> None:
        """Put the crops just cut from frames into the crop cache (not stored crops: those decode cheaply)."""
        if self.crop_cache is None:
            return
        for key, had, sample, crops in zip(keys, known, samples, faces):
            if had is None and isinstance(crops, np.ndarray) and isinstance(sample, ClipSample) and \
                    cuts_from_frames(sample, self.opts.use_derived, self.opts.smooth_boxes):
                self.crop_cache.save(key, crops)

    def _deliver(self, items: list, item_frames: int | None = None):
        """Collate and count; ``item_frames``: the items' frames before cutting, when they were read already cut."""
        with self.counters.get_lock():
            self.counters[Counter.ITEMS] += len(items)
            if self.opts.mode != "raw":
                T = min(it[1].shape[0] for it in items)
                self.counters[Counter.FRAMES_DELIVERED] += T * len(items)
                self.counters[Counter.ITEM_FRAMES] += (sum(it[1].shape[0] for it in items) if item_frames is None
                                                       else item_frames)
        return self._collate(items)

    def _failed(self, exc: Exception, unit: Unit) -> Exception:
        """Raise the named error (``on_error="raise"``), or count the item as skipped and return it."""
        named = _named(exc, unit, self.index.shards[unit.clip.shard].url)
        if self.cfg.on_error == "raise":
            ours = isinstance(exc, (FormatError, TarError, ShardReadError, ValueError))
            raise named from (None if ours else exc)
        self._count(Counter.SKIPPED, 1)
        return named

    def _count(self, which: Counter, n: int = 1) -> None:
        with self.counters.get_lock():
            self.counters[which] += n

    def _transform(self, sample: ClipSample, unit: Unit, rng, noise):
        if self.opts.mode == "talknet":
            return talknet_item(sample, self.opts, rng, noise)
        if self.opts.mode == "asd-tracks":
            return track_item(sample, unit.track, self.opts, rng, noise)
        return raw_item(sample, self.opts, rng, noise)


class _Fill:
    """Keeps a reader's step count what ``len()`` promised when items are lost to damage (``on_error="skip"``).

    Every planned batch yields exactly once, in its place: its good items, or — when it lost them
    all — a filler batch repeating a good item. A loss before any good item is owed and paid, in
    place, just before the first good batch; a run that never had a good item raises.
    """

    def __init__(self, stream: "ShardStream"):
        self.stream = stream
        self.last_good = None
        self.first_error: Exception | None = None
        self.owed = 0
        self.made = 0

    def failed(self, error: Exception) -> None:
        self.first_error = self.first_error or error

    def batch(self, items: list, item_frames: int | None = None) -> Iterator:
        if not items:
            if self.last_good is None:
                self.owed += 1
            else:
                yield from self._filler()
            return
        self.last_good = items[0]
        while self.owed:
            self.owed -= 1
            yield from self._filler()
        self.made += 1
        yield self.stream._deliver(items, item_frames)

    def finish(self, n_batches: int) -> Iterator:
        if self.last_good is None and (self.owed or self.made < n_batches):
            raise ShardReadError(f"every clip of this reader's run failed; nothing to fill its batches with "
                                 f"(first: {self.first_error})")
        while self.made < n_batches:
            yield from self._filler()

    def _filler(self) -> Iterator:
        self.stream._count(Counter.FILLER, 1)
        self.made += 1
        yield self.stream._collate([self.last_good])


def _source_digest(index: ResolvedSource) -> str:
    """Identifies the shards (names, sizes, hashes and clips, in order): a resume must read the same ones."""
    h = hashlib.sha256()
    bounds = index.bounds
    for i, s in enumerate(index.shards):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        h.update(f"{s.name}|{s.bytes}|{s.sha256}|{hi - lo}|{index.clips.key(lo) if hi > lo else ''}\n".encode())
    return h.hexdigest()[:16]


def _named(exc: Exception, unit: Unit, url: str = "") -> Exception:
    msg = str(exc) if isinstance(exc, (FormatError, TarError, ShardReadError, ValueError)) else f"{type(exc).__name__}: {exc}"
    if unit.clip.key not in msg:
        msg = f"{msg} (clip {unit.clip.key})"
    if url and url not in msg:
        msg = f"{url}: {msg}"
    return ShardReadError(msg)

"""The streaming dataset: a source read as batches, following the epoch schedule.

:class:`ShardStream` holds what does not change between epochs — the clip index as items, the
units an epoch deals (:class:`~loaders.schedule.UnitSpace`), the reader and the mode — and no
per-epoch state (a memo of pure schedules aside). Each pass of a DataLoader gets its own :class:`EpochReader`, made by
:meth:`ShardStream.epoch_reader` from everything that pass needs (the epoch's schedule, the rank,
the steps already taken, the counters to add to), so a forked worker finds its instructions in the
object it was given, never in an attribute set before the fork.

There is one iteration path, :meth:`ShardStream.iterate`: for each of a slot's batches, *which*
items (the schedule), their samples (:class:`_ReadAhead`: the run read front to back in few range
reads; or :class:`_TrackReads`: a frame-budget batch's tracks read sparsely), then
:meth:`ShardStream.make_batch` — decoding, cropping, augmentation and MFCC of one batch's items —
and collation. For face tracks, :meth:`ShardStream.make_batch` cuts the whole batch's crops at once
(:func:`loaders.faces.batch_faces`: each frame decoded once for every track using it), and the crop
cache (:mod:`loaders.crop_cache`), when asked for, is looked up before the samples are read, so a
frame-budget batch's cached tracks are read without their frames. The loader object training scripts hold, :class:`loaders.loader.ASDLoader`, wraps a
DataLoader around an :class:`EpochReader` per epoch.
"""

from __future__ import annotations

import functools
import hashlib
import multiprocessing as mp
from dataclasses import dataclass
from enum import IntEnum
from typing import Callable, Iterator, Sequence

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from shardgen.core.format import FormatError
from shardgen.core.sample import ClipSample, Members
from shardgen.core.sources import ResolvedSource
from shardgen.core.storage import TransportOptions
from shardgen.core.tario import DEFAULT_MAX_MEMBER, TarError

from .items import Item, ItemTable, RunItems
from .crop_cache import CropCache
from .faces import batch_faces, cuts_from_frames, kept_frames
from .modes import ModeOptions, TrackCollate, collate_raw, raw_item, talknet_item, track_audio, track_item
from .omni import collate_omni, omni_item
from .reader import ClipReader, ShardReadError, stored_gray_members, track_members
from .schedule import (EpochPart, EpochSchedule, Layout, ScheduleConfig, ScheduledBatch, SlotSchedule, UnitSpace,
                       epoch_schedule)
from .sharding import Stream, frame_budget_batches, random_stream

ON_ERROR = ("raise", "skip")
#: the modes whose items are (audio, faces, labels) tensors: TalkNet augmentation and the frame counters apply
TENSOR_MODES = ("talknet", "asd-tracks")


class Counter(IntEnum):
    """Slots of the per-epoch counters shared by the DataLoader workers (``loader.stats``)."""

    ITEMS = 0  # items yielded in batches
    SKIPPED = 1  # items lost to damage with on_error="skip"
    FILLER = 2  # batches repeated to keep every rank's step count equal after skips
    FRAMES_DELIVERED = 3  # frames in the yielded batches (B x T, after cutting to the shortest)
    ITEM_FRAMES = 4  # frames of those items before cutting (face-track frames in asd-tracks)


class Tally:
    """Counters every DataLoader worker of an epoch adds to, in shared memory (``loader.stats``).

    Made once by the loader, before any worker exists, and handed to each epoch's reader."""

    def __init__(self):
        self._counts = mp.get_context("fork").Array("q", len(Counter), lock=True)

    def reset(self) -> None:
        with self._counts.get_lock():
            self._counts[:] = [0] * len(Counter)

    def add(self, which: Counter, n: int = 1) -> None:
        with self._counts.get_lock():
            self._counts[which] += n

    def __getitem__(self, which: Counter) -> int:
        return self._counts[which]


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
        _ = self.schedule  # ScheduleConfig refuses an unknown remainder now, not at the first epoch

    @property
    def schedule(self) -> ScheduleConfig:
        """The part of this configuration that fixes an epoch's order (with the layout)."""
        return ScheduleConfig(seed=self.seed, shuffle=self.shuffle, shuffle_buffer=self.shuffle_buffer,
                              drop_last=self.drop_last, samples_per_epoch=self.samples_per_epoch,
                              remainder=self.remainder)


class ShardStream:
    """A source read as batches: the units an epoch deals, the reader, the mode's transforms.

    Nothing that decides what is read changes with an epoch, a pass or a resume, and with DataLoader workers
    nothing on it changes at all (``tests/test_loader_epochs.py`` walks it before and after). Kept between
    calls: a memo of the last two schedules asked for (``len()``, the workers and ``epoch_batches`` ask for
    the same one) — pure values of (epoch, layout, history), so asking again gives an equal schedule; and,
    read in this process (``num_workers=0``), the batch buffers' pool and the crop cache's counters, which
    in workers live in each worker's copy."""

    def __init__(self, index: ResolvedSource, opts: ModeOptions, cfg: StreamConfig, transport: TransportOptions | None = None):
        self.index = index
        self.opts = opts
        self.cfg = cfg
        self.items = ItemTable(index, per_track=opts.mode == "asd-tracks")
        self.reader = ClipReader(index, transport, cfg.max_member_bytes)
        self.source_digest = _source_digest(index)
        self._collate = {"raw": collate_raw, "qwen-omni": functools.partial(collate_omni, cfg=opts.omni)}.get(
            opts.mode, TrackCollate(opts.faces_dtype))
        self.crop_cache = CropCache(opts.crop_cache_dir, opts.crop_cache_bytes) if opts.crop_cache_dir else None
        if cfg.batch_frames is None:
            self.space = UnitSpace.of_items(self.items.bounds, "face tracks" if self.items.per_track else "clips")
        else:
            if opts.mode != "asd-tracks":
                raise ValueError(f"batch_frames packs face tracks: it needs mode='asd-tracks', not {opts.mode!r}")
            c = index.clips.columns  # ties: the clip key, then the track's person row and first frame
            lengths = self.items.track_lengths()
            batches = frame_budget_batches(lengths, (index.clips.key_order()[self.items.track_clips()],
                                                     c["track_person"], c["track_first"]), cfg.batch_frames)
            self.space = UnitSpace.of_budget_batches(batches, lengths)
        self._schedule = functools.lru_cache(maxsize=2)(self._plan)

    # ------------------------------------------------------------------ the schedule
    @property
    def n_items(self) -> int:
        return len(self.items)

    def layout(self, num_workers: int) -> Layout:
        """The layout this stream reads in with ``num_workers`` DataLoader workers per rank."""
        return Layout(self.cfg.world_size, max(1, int(num_workers)), 1 if self.space.are_batches else self.cfg.batch_size)

    def schedule(self, epoch: int, num_workers: int, history: Sequence[EpochPart] = ()) -> EpochSchedule:
        """The epoch (after the ``history`` parts read in other layouts) as this stream reads it: see :mod:`loaders.schedule`."""
        return self._schedule(int(epoch), self.layout(num_workers), tuple(history))

    def _plan(self, epoch: int, layout: Layout, history: tuple) -> EpochSchedule:
        return epoch_schedule(self.space, self.cfg.schedule, epoch, layout, history)

    def epoch_batches(self, slot: int, num_workers: int, epoch: int = 0,
                      history: Sequence[EpochPart] = ()) -> list[list[Item]]:
        """The items of each batch a slot (``rank * num_workers + worker``) yields in an epoch, without reading
        any data — what a planner or a frames-kept estimate needs (damage skipped at run time aside)."""
        batches = self.schedule(epoch, num_workers, history).slot(slot).batches()
        return [[self.items.item(i) for i in b.items] for b in batches]

    def epoch_reader(self, schedule: EpochSchedule, batches_done: int, tally: Tally) -> "EpochReader":
        """What one DataLoader pass iterates: this rank's part of ``schedule`` from step ``batches_done`` on."""
        return EpochReader(self, schedule, self.cfg.rank, batches_done, tally)

    # ------------------------------------------------------------------ the one iteration path
    def iterate(self, slot: SlotSchedule, first: int, epoch: int, tally: Tally) -> Iterator:
        """Every batch of ``slot`` from batch ``first`` on, each yielded once, in its place.

        An item lost to damage (``on_error="skip"``) leaves its batch shorter; a batch that lost
        every item is replaced in place by a filler, so batch ``k`` always covers the ``k``-th
        planned units — what a resume skips by."""
        if self.space.are_batches:
            samples = _TrackReads(self.reader, use_crops=self.opts.use_derived and not self.opts.smooth_boxes)
        else:
            samples = _ReadAhead(self.reader, RunItems(self.items, slot.run), slot, first, self._stored_members())
        out = _Outcome(self, tally)
        for k in range(first, slot.n_batches):
            batch = slot.batch(k)
            items = [self.items.item(i) for i in batch.items.tolist()]
            keys, cached = self._cached_crops(items, batch.cut)
            hits = frozenset(it for it, c in zip(items, cached) if c is not None) if cached else frozenset()
            read = samples.take(k, batch, items, cached=hits)
            made, item_frames = self.make_batch(batch, items, read, epoch, out.failed, cached=cached, cache_keys=keys)
            yield from out.batch(made, item_frames)
        yield from out.finish(slot.n_batches - first)

    def _stored_members(self) -> Callable[[list[Item]], Members] | None:
        """What a clip's items take of it when the build stored 112x112 pictures for them: talknet reads the
        stored gray frames (``--derive small``) and asd-tracks its tracks' stored crops (``--derive crops``),
        not the original frames — so a local clip is read sparsely (see :meth:`ClipReader.read`). None when
        the items need the whole clip (or the source's manifests do not say every clip has them)."""
        if not self.opts.use_derived:
            return None
        if self.opts.mode == "talknet" and _derived_everywhere(self.index, "small"):
            return lambda items: stored_gray_members()
        if self.opts.mode == "asd-tracks" and not self.opts.smooth_boxes and _derived_everywhere(self.index, "crops"):
            return lambda items: track_members([it.track for it in items], use_crops=True)
        return None

    def make_batch(self, batch: ScheduledBatch, items: list[Item], samples: list, epoch: int,
                   failed: Callable[[Exception, Item], None], *, cached: list | None = None,
                   cache_keys: list | None = None) -> tuple[list, int]:
        """One batch's samples → its items (tensors, and metadata with ``with_meta``), and the items' frames before cutting.

        ``batch.cut``: decode only each item's first this many frames (known before reading for a
        frame-budget batch). Augmentation is seeded by ``(seed, epoch, item id)``, so an item gets the
        same flip/crop/rotation and noise level whichever rank and worker read it; its noise is another
        item of its batch (TalkNet's ``overlap``), so a batch of one item gets none. A sample that is an
        error, or an item whose transform fails, goes to ``failed`` (which raises, or counts the skip).

        Face tracks (``asd-tracks``): the batch's crops are cut first, all at once — each frame decoded once
        for every track using it (:func:`loaders.faces.batch_faces`) — or taken from ``cached[j]`` (the crop
        cache's, found under ``cache_keys[j]`` by :meth:`_cached_crops`); crops cut from frames are kept there.
        """
        augment = self.opts.augment and self.opts.mode in TENSOR_MODES
        clean = [_clean_audio(s, it) for s, it in zip(samples, items)] if augment else []
        faces = [None] * len(items)
        if self.opts.mode == "asd-tracks":
            faces = batch_faces(samples, [it.track for it in items], keep=batch.cut, use_derived=self.opts.use_derived,
                                smooth=self.opts.smooth_boxes, known=cached)
            self._keep_crops(cache_keys, cached, samples, faces)
        made, item_frames = [], 0
        for j, (item_id, item, sample) in enumerate(zip(batch.items.tolist(), items, samples)):
            try:
                for bad in (sample, faces[j]):
                    if isinstance(bad, Exception):
                        raise bad
                rng = noise = None
                if augment:
                    rng = random_stream(Stream.AUGMENT, self.cfg.seed, epoch, item_id)
                    others = [k for k in range(len(items)) if k != j and clean[k] is not None]
                    if others:
                        pick = random_stream(Stream.NOISE_PARTNER, self.cfg.seed, epoch, item_id).integers(len(others))
                        noise = clean[others[int(pick)]]
                made.append(self._transform(sample, item, rng, noise, batch.cut, faces[j]))
            except Exception as exc:  # a hostile clip can fail anywhere in decoding: always named, or counted
                failed(exc, item)
                continue
            if self.opts.mode in TENSOR_MODES:
                item_frames += item.track[2] if item.track is not None else made[-1][1].shape[0]
        return made, item_frames

    def _transform(self, sample: ClipSample, item: Item, rng, noise, cut: int | None, faces=None):
        if self.opts.mode == "talknet":
            return talknet_item(sample, self.opts, rng, noise)
        if self.opts.mode == "asd-tracks":
            return track_item(sample, item.track, self.opts, rng, noise, keep=cut, faces=faces)
        if self.opts.mode == "qwen-omni":
            return omni_item(sample, self.opts)
        return raw_item(sample, self.opts)

    def _cached_crops(self, items: list[Item], cut: int | None) -> tuple[list | None, list | None]:
        """The crop cache's names for these face tracks' crops, and the crops it holds (None where it has none)."""
        if self.crop_cache is None:
            return None, None
        keys, found = [], []
        for it in items:
            kept = kept_frames(it.track, cut)
            keys.append(self.crop_cache.key(self.index.shards[it.clip.shard].sha256, it.clip.offset, it.track, kept,
                                            self.opts.smooth_boxes, self.opts.use_derived))
            found.append(self.crop_cache.load(keys[-1], kept))
        return keys, found

    def _keep_crops(self, keys: list | None, had: list | None, samples: list, faces: list) -> None:
        """Put the crops just cut from frames into the crop cache (not stored crops: those decode cheaply)."""
        if self.crop_cache is None:
            return
        for key, known, sample, crops in zip(keys, had, samples, faces):
            if known is None and isinstance(crops, np.ndarray) and isinstance(sample, ClipSample) and \
                    cuts_from_frames(sample, self.opts.use_derived, self.opts.smooth_boxes):
                self.crop_cache.save(key, crops)

    def named_error(self, exc: Exception, item: Item) -> ShardReadError:
        return _named(exc, item, self.index.shards[item.clip.shard].url)


class EpochReader(IterableDataset):
    """One DataLoader pass: rank ``rank``'s part of ``schedule``, from step ``batches_done`` on.

    Everything a worker needs is in this object, made fresh for each pass; each DataLoader worker
    reads the slot :meth:`~loaders.schedule.EpochSchedule.reader_start` gives it."""

    def __init__(self, stream: ShardStream, schedule: EpochSchedule, rank: int, batches_done: int, tally: Tally):
        super().__init__()
        self.stream, self.schedule, self.rank, self.batches_done, self.tally = stream, schedule, rank, batches_done, tally

    def __iter__(self) -> Iterator:
        info = get_worker_info()
        if info is not None and info.num_workers != self.schedule.layout.readers:
            raise RuntimeError(f"planned for {self.schedule.layout.readers} workers, run by {info.num_workers}")
        return self.worker_batches(info.id if info else 0)

    def worker_batches(self, dataloader_worker: int) -> Iterator:
        """What DataLoader worker ``dataloader_worker`` of this rank yields."""
        slot, first = self.schedule.reader_start(self.rank, dataloader_worker, self.batches_done)
        return self.stream.iterate(self.schedule.slot(slot), first, self.schedule.epoch, self.tally)


class _ReadAhead:
    """A slot's run read front to back (consecutive clips of a shard in one range read, or one sparse read a clip
    where ``members_for`` says the items take less than the clip) from batch ``first`` on; each sample is held
    until its batch takes it — at most ``shuffle_buffer`` of them, by the buffer's order."""

    def __init__(self, reader: ClipReader, run: RunItems, slot: SlotSchedule, first: int,
                 members_for: Callable[[list[Item]], Members] | None = None):
        self.slot = slot
        self._read = reader.read(run, np.sort(slot.order[first * slot.units_per_batch:]), members_for)
        self._held: dict[int, object] = {}

    def take(self, k: int, batch: ScheduledBatch, items: list[Item], cached: frozenset = frozenset()) -> list:
        """Batch ``k``'s samples (whole clips: ``cached`` tracks' frames are read with the rest of the run)."""
        out = []
        for t in self.slot.batch_positions(k).tolist():
            while t not in self._held:
                positions, sample = next(self._read)
                for i in positions:
                    self._held[i] = sample
            out.append(self._held.pop(t))
        return out


class _TrackReads:
    """A frame-budget batch's face tracks read sparsely: one read per clip for all its tracks in the batch
    (similar lengths sort together), only their first ``cut`` frames (or stored crops)."""

    def __init__(self, reader: ClipReader, use_crops: bool):
        self.reader, self.use_crops = reader, use_crops

    def take(self, k: int, batch: ScheduledBatch, items: list[Item], cached: frozenset = frozenset()) -> list:
        """Batch ``k``'s samples; ``cached``: tracks whose crops the crop cache holds, read without their frames."""
        out: list = [None] * len(items)
        by_clip: dict = {}
        for j, item in enumerate(items):
            by_clip.setdefault(item.clip, []).append(j)
        for group in by_clip.values():
            sample = self.reader.read_tracks([items[j] for j in group], use_crops=self.use_crops, frames=batch.cut,
                                             cached=cached)
            for j in group:
                out[j] = sample
        return out


def _clean_audio(sample, item: Item):
    """The item's own audio before augmentation (what it lends a batch-mate as noise), or None if unreadable
    (the item's own transform then fails, named)."""
    if not isinstance(sample, ClipSample):
        return None
    try:
        return track_audio(sample, item.track)[0] if item.track is not None else sample.audio()[0]
    except Exception:
        return None


class _Outcome:
    """Keeps a reader's step count what ``len()`` promised when items are lost to damage (``on_error="skip"``),
    and counts what it yields.

    Every planned batch yields exactly once, in its place: its good items, or — when it lost them
    all — a filler batch repeating a good item. A loss before any good item is owed and paid, in
    place, just before the first good batch; a run that never had a good item raises.
    """

    def __init__(self, stream: ShardStream, tally: Tally):
        self.stream, self.tally = stream, tally
        self.count_frames = stream.opts.mode in TENSOR_MODES
        self.last_good = None
        self.first_error: Exception | None = None
        self.owed = 0
        self.made = 0

    def failed(self, exc: Exception, item: Item) -> None:
        """Raise the named error (``on_error="raise"``), or count the item as skipped."""
        named = self.stream.named_error(exc, item)
        if self.stream.cfg.on_error == "raise":
            ours = isinstance(exc, (FormatError, TarError, ShardReadError, ValueError))
            raise named from (None if ours else exc)
        self.tally.add(Counter.SKIPPED)
        self.first_error = self.first_error or named

    def batch(self, items: list, item_frames: int) -> Iterator:
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
        self.tally.add(Counter.ITEMS, len(items))
        if self.count_frames:
            self.tally.add(Counter.FRAMES_DELIVERED, min(it[1].shape[0] for it in items) * len(items))
            self.tally.add(Counter.ITEM_FRAMES, item_frames)
        yield self.stream._collate(items)

    def finish(self, n_batches: int) -> Iterator:
        if self.last_good is None and (self.owed or self.made < n_batches):
            raise ShardReadError(f"every clip of this reader's run failed; nothing to fill its batches with "
                                 f"(first: {self.first_error})")
        while self.made < n_batches:
            yield from self._filler()

    def _filler(self) -> Iterator:
        self.tally.add(Counter.FILLER)
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


def _named(exc: Exception, item: Item, url: str = "") -> ShardReadError:
    msg = str(exc) if isinstance(exc, (FormatError, TarError, ShardReadError, ValueError)) else f"{type(exc).__name__}: {exc}"
    if item.clip.key not in msg:
        msg = f"{msg} (clip {item.clip.key})"
    if url and url not in msg:
        msg = f"{url}: {msg}"
    return ShardReadError(msg)


def _derived_everywhere(index: ResolvedSource, what: str) -> bool:
    """Whether every manifest of the source records a build with ``--derive`` ``what`` (none read: unknown, no)."""
    return bool(index.manifests) and all(what in ((m.get("params") or {}).get("derive") or ()) for m in index.manifests)

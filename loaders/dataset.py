"""The streaming dataset and the loader object training scripts hold.

:class:`ShardStream` is a ``torch.utils.data.IterableDataset`` whose every DataLoader worker
reads its own contiguous run of clips (see :mod:`loaders.sharding`), checks each clip against
the sample format, turns it into the chosen mode's item and yields whole batches.
:class:`ASDLoader` wraps a DataLoader around it and adds what a training loop needs: epochs,
``len()``, ``state_dict()`` / ``load_state_dict()`` for mid-epoch resume, and error counters.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import warnings
from dataclasses import dataclass
from enum import IntEnum
from typing import Iterator

from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from shardgen.core.format import FormatError
from shardgen.core.sample import ClipSample
from shardgen.core.sources import SourceIndex
from shardgen.core.storage import TransportOptions
from shardgen.core.tario import DEFAULT_MAX_MEMBER, TarError

from .modes import ModeOptions, collate_raw, collate_talknet, raw_item, talknet_item, track_item
from .reader import ClipReader, ShardReadError
from .sharding import (Draw, EpochPlan, Unit, arrange_epoch, batches_to_skip, epoch_sequence, plan_epoch, slot_index,
                       rng, slot_order, slot_run)

ON_ERROR = ("raise", "skip")


class Count(IntEnum):
    """The epoch's counters, shared by the DataLoader workers (one slot each in ``ShardStream.counters``)."""

    ITEMS = 0  # items yielded
    SKIPPED = 1  # clips skipped on error (on_error="skip")
    FILLER_BATCHES = 2  # batches repeated to keep every rank's step count equal after skips


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

    def __post_init__(self):
        if self.on_error not in ON_ERROR:
            raise ValueError(f"on_error {self.on_error!r}: choose one of {ON_ERROR}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside world_size {self.world_size}")


class ShardStream(IterableDataset):
    def __init__(self, index: SourceIndex, opts: ModeOptions, cfg: StreamConfig, remote_options: TransportOptions | None = None):
        super().__init__()
        self.index = index
        self.opts = opts
        self.cfg = cfg
        self.remote_options = remote_options
        self.epoch = 0
        self.resume_batches = 0
        self.counters = mp.get_context("fork").Array("q", len(Count), lock=True)
        self._units = self._units_by_shard()
        self.reader = ClipReader(index, remote_options, cfg.max_member_bytes)
        self.source_digest = _source_digest(index)

    # ------------------------------------------------------------------ planning
    def _units_by_shard(self) -> list[list[Unit]]:
        if self.opts.mode == "asd-tracks":
            return [[Unit(c, t) for c in s.clips for t in c.tracks] for s in self.index.shards]
        return [[Unit(c) for c in s.clips] for s in self.index.shards]

    @property
    def n_units(self) -> int:
        return sum(len(u) for u in self._units)

    def plan(self, num_workers: int, epoch: int | None = None) -> EpochPlan:
        c = self.cfg
        return plan_epoch(self.n_units, slots=c.world_size * max(1, num_workers), batch_size=c.batch_size,
                          drop_last=c.drop_last, samples_per_epoch=c.samples_per_epoch,
                          epoch=self.epoch if epoch is None else epoch, remainder=c.remainder)

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator:
        info = get_worker_info()
        W = info.num_workers if info else 1
        # A DataLoader always asks worker 0 first; after a resume at batch k the next batch is
        # logical worker k % W's, so DataLoader worker w plays logical worker (w + k) % W.
        worker = ((info.id if info else 0) + self.resume_batches) % W
        c = self.cfg
        plan = self.plan(W)
        seq = epoch_sequence(self._units, seed=c.seed, epoch=self.epoch, shuffle=c.shuffle)
        seq = arrange_epoch(seq, plan, seed=c.seed, shuffle=c.shuffle)
        slot = slot_index(c.rank, worker, W)
        run = slot_run(seq, plan, slot, c.batch_size, c.drop_last)
        order = slot_order(len(run), seed=c.seed, epoch=self.epoch, slot=slot, buffer=c.shuffle_buffer, shuffle=c.shuffle)
        skip = batches_to_skip(self.resume_batches, worker, W)
        emit = order[skip * c.batch_size:]
        n_batches = plan.batches_per_slot - skip
        yield from self._batches(run, emit, n_batches, slot)

    def _batches(self, run: list[Unit], emit: list[int], n_batches: int, slot: int) -> Iterator:
        B = self.cfg.batch_size
        collate = collate_raw if self.opts.mode == "raw" else collate_talknet
        reader = self.reader.read(run, sorted(emit))
        held: dict[int, object] = {}
        batch: list = []
        last_good = None
        first_error = None
        noise = None
        made = 0
        for t in emit:
            while t not in held:
                idxs, sample = next(reader)
                for i in idxs:
                    held[i] = sample
            sample = held.pop(t)
            try:
                if isinstance(sample, Exception):
                    raise sample
                draws = rng(Draw.AUGMENT, self.cfg.seed, self.epoch, slot, t) if self.opts.augment else None
                item, noise = self._transform(sample, run[t], draws, noise)
            except Exception as exc:  # a hostile clip can fail anywhere in decoding: always named, or counted
                named = _named(exc, run[t], self.index.shards[run[t].clip.shard].url)
                if self.cfg.on_error == "raise":
                    ours = isinstance(exc, (FormatError, TarError, ShardReadError, ValueError))
                    raise named from (None if ours else exc)
                first_error = first_error or named
                self._count(Count.SKIPPED)
                continue
            self._count(Count.ITEMS)
            batch.append(item)
            last_good = item
            if len(batch) == B:
                yield collate(batch)
                made += 1
                batch = []
        if batch:
            yield collate(batch)
            made += 1
        while made < n_batches:  # only after skips: keep every rank's step count equal
            if last_good is None:
                raise ShardReadError(f"every clip of this reader's run failed; nothing to fill its batches with "
                                     f"(first: {first_error})")
            self._count(Count.FILLER_BATCHES)
            yield collate([last_good])
            made += 1

    def _count(self, which: Count, n: int = 1) -> None:
        with self.counters.get_lock():
            self.counters[which] += n

    def _transform(self, sample: ClipSample, unit: Unit, rng, noise):
        if self.opts.mode == "talknet":
            return talknet_item(sample, self.opts, rng, noise)
        if self.opts.mode == "asd-tracks":
            return track_item(sample, unit.track, self.opts, rng, noise)
        return raw_item(sample, self.opts, rng, noise)


def _source_digest(index: SourceIndex) -> str:
    """Identifies the shards (names, sizes, hashes and clips, in order): a resume must read the same ones."""
    h = hashlib.sha256()
    for s in index.shards:
        h.update(f"{s.name}|{s.bytes}|{s.sha256}|{len(s.clips)}|{s.clips[0].key if s.clips else ''}\n".encode())
    return h.hexdigest()[:16]


def _named(exc: Exception, unit: Unit, url: str = "") -> Exception:
    msg = str(exc) if isinstance(exc, (FormatError, TarError, ShardReadError, ValueError)) else f"{type(exc).__name__}: {exc}"
    if unit.clip.key not in msg:
        msg = f"{msg} (clip {unit.clip.key})"
    if url and url not in msg:
        msg = f"{url}: {msg}"
    return ShardReadError(msg)


class ASDLoader:
    """What :func:`loaders.make_loader` returns: iterate it once per epoch.

    ``len(loader)`` is the number of batches this rank gets per epoch, the same on every rank.
    ``state_dict()`` taken after k batches and given to ``load_state_dict()`` of a fresh loader
    (same source and arguments) makes it yield exactly the batches an uninterrupted run would
    have yielded after those k.
    """

    def __init__(self, stream: ShardStream, *, num_workers: int = 0, pin_memory: bool = False,
                 prefetch_factor: int | None = None, timeout: float = 0):
        self.stream = stream
        self.num_workers = int(num_workers)
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor
        self.timeout = timeout
        self.epoch = 0
        self._done = 0  # batches consumed this epoch (including those skipped by a resume)

    def __len__(self) -> int:
        return self.stream.plan(self.num_workers, self.epoch).batches_per_slot * max(1, self.num_workers)

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self._done = int(epoch), 0

    def __iter__(self):
        self.stream.epoch = self.epoch
        self.stream.resume_batches = self._done
        with self.stream.counters.get_lock():  # stats are per epoch
            self.stream.counters[:] = [0] * len(Count)
        kwargs = {}
        if self.num_workers:
            kwargs = {"multiprocessing_context": "fork", "prefetch_factor": self.prefetch_factor or 2}
        dl = DataLoader(self.stream, batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory,
                        timeout=self.timeout, **kwargs)
        it = iter(dl)
        try:
            for batch in it:
                self._done += 1
                yield batch
        finally:  # on an error or a break too: otherwise a traceback cycle keeps the workers until a GC (10+ s)
            getattr(it, "_shutdown_workers", lambda: None)()
        skipped = self.stats["skipped"]
        if skipped:
            warnings.warn(f"epoch {self.epoch}: {skipped} clip(s) skipped on error (on_error='skip')", RuntimeWarning, stacklevel=2)
        self.epoch += 1
        self._done = 0

    @property
    def stats(self) -> dict:
        c = self.stream.counters
        return {which.name.lower(): c[which] for which in Count}

    _MUST_MATCH = ("source", "units", "mode", "seed", "shuffle", "shuffle_buffer", "batch_size", "drop_last",
                   "samples_per_epoch", "remainder", "world_size", "num_workers")

    def state_dict(self) -> dict:
        """Where this rank is in the epoch, plus everything that fixes the order of the batches."""
        s, c = self.stream, self.stream.cfg
        return {"epoch": self.epoch, "batches_done": self._done, "source": s.source_digest, "units": s.n_units,
                "mode": s.opts.mode, "seed": c.seed, "shuffle": c.shuffle, "shuffle_buffer": c.shuffle_buffer,
                "batch_size": c.batch_size, "drop_last": c.drop_last, "samples_per_epoch": c.samples_per_epoch,
                "remainder": c.remainder, "world_size": c.world_size, "rank": c.rank, "num_workers": self.num_workers}

    def load_state_dict(self, state: dict) -> None:
        """Resume where ``state`` was taken; refuses (naming the difference) anything that would change the order."""
        mine = self.state_dict()
        for k in self._MUST_MATCH:
            if state.get(k) != mine[k]:
                raise ValueError(f"cannot resume: {k} was {state.get(k)!r}, this loader has {mine[k]!r}")
        self.epoch, self._done = int(state["epoch"]), int(state["batches_done"])

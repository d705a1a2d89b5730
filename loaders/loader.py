"""The object a training script holds: epochs, ``len()``, mid-epoch (and elastic) resume, stats.

:class:`ASDLoader` wraps a ``torch.utils.data.DataLoader`` around one
:class:`~loaders.dataset.EpochReader` per pass and adds what a training loop needs on top of
iteration: the epoch counter, the batch count every rank shares, ``state_dict()`` /
``load_state_dict()`` and the per-epoch counters. Where the loader stands is an
:class:`EpochPosition` held here; each pass hands the DataLoader a reader made from it, so nothing
is set on the shared :class:`~loaders.dataset.ShardStream` before the workers fork.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

from torch.utils.data import DataLoader

from .dataset import TENSOR_MODES, Counter, ShardStream, Tally
from .batch_memory import BufferPool
from .modes import faces_as
from .schedule import PLANNER_VERSION, EpochPart, Layout
from .worker_memory import keep_heap


@dataclass(frozen=True)
class EpochPosition:
    """Where reading an epoch stands: the parts read before in other layouts (elastic resume), and the
    steps this rank took in the current layout."""

    epoch: int
    history: tuple[EpochPart, ...] = ()
    batches_done: int = 0


class ASDLoader:
    """What :func:`loaders.make_loader` returns: iterate it once per epoch.

    ``len(loader)`` is the number of batches this rank gets per epoch, the same on every rank.
    ``state_dict()`` taken after k batches and given to ``load_state_dict()`` of a fresh loader
    (same source and arguments) makes its next pass yield exactly the batches an uninterrupted run
    would have yielded after those k. A pass left early (a ``break``, an error) is not continued by
    the next ``iter()``, which starts that epoch again from its first batch; only
    ``load_state_dict`` resumes mid-epoch.
    """

    def __init__(self, stream: ShardStream, *, num_workers: int = 0, pin_memory: bool = False,
                 prefetch_factor: int | None = None, timeout: float = 0):
        self.stream = stream
        self.num_workers = int(num_workers)
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor
        self.timeout = timeout
        self.tally = Tally()
        self._buffers = BufferPool()  # the float faces of batches from workers (loaders.batch_memory)
        self._position = EpochPosition(0)  # where the current, last or next pass stands
        self._resume = False  # load_state_dict asked the next pass to continue from _position
        self._running = False

    @property
    def epoch(self) -> int:
        """The epoch the current pass reads, or the next pass will."""
        return self._position.epoch

    def _next_start(self) -> EpochPosition:
        return self._position if self._resume else EpochPosition(self._position.epoch)

    def __len__(self) -> int:
        """Batches per rank of the epoch the current (or next) pass reads. Changes nothing.

        Normally the whole epoch. After a ``load_state_dict`` in the same layout it is still the whole
        epoch, and the resumed pass yields ``len(loader) - batches_done`` of it (a scheduler stepping per
        batch keeps its epoch length). After an elastic resume (another world size, workers or batch size)
        there is no whole epoch in the new layout: it is the part not yet delivered, dealt to the new
        ranks × workers, and the pass yields all of it."""
        p = self._position if self._running else self._next_start()
        return self.stream.schedule(p.epoch, self.num_workers, p.history).batches_per_rank

    def set_epoch(self, epoch: int) -> None:
        self._position, self._resume = EpochPosition(int(epoch)), False

    def __iter__(self):
        start = self._next_start()
        schedule = self.stream.schedule(start.epoch, self.num_workers, start.history)
        self.tally.reset()  # stats are per pass
        kwargs = {}
        if self.num_workers:
            kwargs = {"multiprocessing_context": "fork", "prefetch_factor": self.prefetch_factor or 2,
                      "worker_init_fn": keep_heap}  # glibc keeps the workers' heap mapped (loaders.worker_memory)
        dl = DataLoader(self.stream.epoch_reader(schedule, start.batches_done, self.tally), batch_size=None,
                        num_workers=self.num_workers, pin_memory=self.pin_memory, timeout=self.timeout, **kwargs)
        self._position, self._resume, self._running = start, False, True
        it = None
        tensors = self.stream.opts.mode in TENSOR_MODES
        try:
            it = iter(dl)
            for batch in it:
                self._position = dataclasses.replace(self._position, batches_done=self._position.batches_done + 1)
                yield faces_as(batch, self.stream.opts.faces_dtype, self._buffers) if tensors else batch  # workers send uint8
        finally:  # on an error or a break too: otherwise a traceback cycle keeps the workers until a GC (10+ s)
            self._running = False
            getattr(it, "_shutdown_workers", lambda: None)()
        skipped = self.stats["skipped"]
        if skipped:
            warnings.warn(f"epoch {start.epoch}: {skipped} clip(s) skipped on error (on_error='skip')", RuntimeWarning,
                          stacklevel=2)
        self._position = EpochPosition(start.epoch + 1)

    @property
    def stats(self) -> dict:
        """This pass's counts so far: items, skipped, filler batches, and the frames delivered in
        batches (``B × T`` after cutting to the shortest) against the frames of those items before
        cutting (``item_frames``: the face tracks' frames in asd-tracks)."""
        c = self.tally
        return {"items": c[Counter.ITEMS], "skipped": c[Counter.SKIPPED], "filler_batches": c[Counter.FILLER],
                "frames_delivered": c[Counter.FRAMES_DELIVERED], "item_frames": c[Counter.ITEM_FRAMES]}

    # What fixes the epoch's sequence and its batches: a resume needs these unchanged. The layout
    # (world_size, num_workers, batch_size) may change: see load_state_dict.
    _MUST_MATCH = ("planner", "source", "items", "mode", "seed", "shuffle", "shuffle_buffer", "batch_frames", "drop_last",
                   "samples_per_epoch", "remainder")

    def state_dict(self) -> dict:
        """Where this rank stands in the epoch, plus everything that fixes the order of the batches.

        Ranks step in lockstep, so the state of rank 0 serves every rank (``rank`` is informational).
        """
        s, c, p = self.stream, self.stream.cfg, self._position
        return {"planner": PLANNER_VERSION, "epoch": p.epoch, "batches_done": p.batches_done, "source": s.source_digest,
                "items": s.n_items, "mode": s.opts.mode, "seed": c.seed, "shuffle": c.shuffle,
                "shuffle_buffer": c.shuffle_buffer, "batch_size": c.batch_size, "batch_frames": c.batch_frames,
                "drop_last": c.drop_last, "samples_per_epoch": c.samples_per_epoch, "remainder": c.remainder,
                "world_size": c.world_size, "rank": c.rank, "num_workers": self.num_workers,
                "history": [[g.layout.world_size, g.layout.num_workers, g.layout.batch_size, g.batches]
                            for g in p.history]}

    def load_state_dict(self, state: dict) -> None:
        """Make the next pass resume where ``state`` was taken; refuses (naming the difference) anything that
        would change the order.

        Saved under another ``world_size``, ``num_workers`` or ``batch_size`` (elastic resume), the
        epoch continues with exactly the items not yet delivered — none twice — dealt evenly to the new
        ranks × workers (their sit-out remainder aside); the next epochs run in the new layout.
        """
        mine = self.state_dict()
        for k in self._MUST_MATCH:
            if state.get(k) != mine[k]:
                raise ValueError(f"cannot resume: {k} was {state.get(k)!r}, this loader has {mine[k]!r}")
        try:
            history = [EpochPart(Layout(int(w), int(nw), int(b)), int(k)) for w, nw, b, k in state.get("history", [])]
            saved = Layout(int(state["world_size"]), max(1, int(state["num_workers"])),
                           1 if state.get("batch_frames") is not None else int(state["batch_size"]))
            epoch, done = int(state["epoch"]), int(state["batches_done"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"cannot resume: malformed loader state ({exc!r})") from None
        if saved != self.stream.layout(self.num_workers):
            if self.stream.cfg.samples_per_epoch is not None:
                raise ValueError("cannot resume under another world_size / num_workers / batch_size with "
                                 "samples_per_epoch set: the epoch's length would be ambiguous")
            if done:
                history.append(EpochPart(saved, done))
            done = 0
        self._position, self._resume = EpochPosition(epoch, tuple(history), done), True

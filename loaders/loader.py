"""The object a training script holds: epochs, ``len()``, mid-epoch (and elastic) resume, stats.

:class:`ASDLoader` wraps a ``torch.utils.data.DataLoader`` around a :class:`~loaders.dataset.ShardStream`
and adds what a training loop needs on top of iteration: the epoch counter, the batch count
every rank shares, ``state_dict()`` / ``load_state_dict()`` and the per-epoch counters.
"""

from __future__ import annotations

import warnings

from torch.utils.data import DataLoader

from .dataset import Counter, ShardStream
from .modes import faces_as
from .sharding import PLANNER_VERSION, Layout, Segment


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
        self.stream.epoch = self.epoch
        return self.stream.plan(self.num_workers, self.epoch).batches_per_slot * max(1, self.num_workers)

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self._done = int(epoch), 0
        self.stream.history = []

    def __iter__(self):
        self.stream.epoch = self.epoch
        self.stream.resume_batches = self._done
        with self.stream.counters.get_lock():  # stats are per epoch
            self.stream.counters[:] = [0] * len(Counter)
        kwargs = {}
        if self.num_workers:
            kwargs = {"multiprocessing_context": "fork", "prefetch_factor": self.prefetch_factor or 2}
        dl = DataLoader(self.stream, batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory,
                        timeout=self.timeout, **kwargs)
        it = iter(dl)
        try:
            for batch in it:
                self._done += 1
                yield faces_as(batch, self.stream.opts.faces_dtype)  # workers send uint8 faces
        finally:  # on an error or a break too: otherwise a traceback cycle keeps the workers until a GC (10+ s)
            getattr(it, "_shutdown_workers", lambda: None)()
        skipped = self.stats["skipped"]
        if skipped:
            warnings.warn(f"epoch {self.epoch}: {skipped} clip(s) skipped on error (on_error='skip')", RuntimeWarning, stacklevel=2)
        self.epoch += 1
        self._done = 0
        self.stream.history = []

    @property
    def stats(self) -> dict:
        """This epoch's counts so far: items, skipped, filler batches, and the frames delivered in
        batches (``B × T`` after cutting to the shortest) against the frames of those items before
        cutting (``item_frames``: the face tracks' frames in asd-tracks)."""
        c = self.stream.counters
        return {"items": c[Counter.ITEMS], "skipped": c[Counter.SKIPPED], "filler_batches": c[Counter.FILLER],
                "frames_delivered": c[Counter.FRAMES_DELIVERED], "item_frames": c[Counter.ITEM_FRAMES]}

    # What fixes the epoch's sequence and its batches: a resume needs these unchanged. The layout
    # (world_size, num_workers, batch_size) may change: see load_state_dict.
    _MUST_MATCH = ("planner", "source", "units", "mode", "seed", "shuffle", "shuffle_buffer", "batch_frames", "drop_last",
                   "samples_per_epoch", "remainder")

    def state_dict(self) -> dict:
        """Where this rank is in the epoch, plus everything that fixes the order of the batches.

        Ranks step in lockstep, so the state of rank 0 serves every rank (``rank`` is informational).
        """
        s, c = self.stream, self.stream.cfg
        return {"planner": PLANNER_VERSION, "epoch": self.epoch, "batches_done": self._done, "source": s.source_digest, "units": s.n_units,
                "mode": s.opts.mode, "seed": c.seed, "shuffle": c.shuffle, "shuffle_buffer": c.shuffle_buffer,
                "batch_size": c.batch_size, "batch_frames": c.batch_frames, "drop_last": c.drop_last,
                "samples_per_epoch": c.samples_per_epoch, "remainder": c.remainder, "world_size": c.world_size,
                "rank": c.rank, "num_workers": self.num_workers,
                "history": [[g.layout.world_size, g.layout.num_workers, g.layout.batch_size, g.batches]
                            for g in s.history]}

    def load_state_dict(self, state: dict) -> None:
        """Resume where ``state`` was taken; refuses (naming the difference) anything that would change the order.

        Saved under another ``world_size``, ``num_workers`` or ``batch_size`` (elastic resume), the
        epoch continues with exactly the items not yet delivered — none twice — dealt evenly to the new
        ranks × workers (their sit-out remainder aside); the next epochs run in the new layout.
        """
        mine = self.state_dict()
        for k in self._MUST_MATCH:
            if state.get(k) != mine[k]:
                raise ValueError(f"cannot resume: {k} was {state.get(k)!r}, this loader has {mine[k]!r}")
        try:
            history = [Segment(Layout(int(w), int(nw), int(b)), int(k)) for w, nw, b, k in state.get("history", [])]
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
                history.append(Segment(saved, done))
            done = 0
        self.epoch, self._done = epoch, done
        self.stream.epoch, self.stream.history = epoch, history

"""Items: what one row of a batch is — a whole clip, or one face track of it (``asd-tracks``).

An epoch is planned on integer *item ids* (a clip's row in the clip index, or a face track's row
in its track table) held in numpy arrays, never on a Python object per clip: a million clips are
an 8 MB array. An :class:`Item`, with its :class:`~shardgen.core.clip_index.ClipRef`, is made
only for an item about to be read (:meth:`ItemTable.item`, :class:`RunItems`).

Vocabulary shared by :mod:`loaders.sharding`, :mod:`loaders.schedule` and :mod:`loaders.dataset`:
an *item* is a row of a batch; a *unit* is what an epoch deals to its readers — an item, or, with
``batch_frames``, a whole frame-budget batch of items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from shardgen.core.clip_index import ClipRef
from shardgen.core.sources import ResolvedSource


@dataclass(frozen=True)
class Item:
    """One row of a batch: a whole clip, or (``track = (person row, first frame, frames)``) one face track of it."""

    clip: ClipRef
    track: tuple | None = None


class ItemTable:
    """The items of a source as integers: clip rows of its clip index, or (``per_track``) face-track rows.

    ``bounds[s]:bounds[s+1]`` are shard ``s``'s items, in file order; :meth:`item` makes the
    :class:`Item` of one id when it is about to be read.
    """

    def __init__(self, index: ResolvedSource, per_track: bool):
        self.clips = index.clips
        self.per_track = per_track
        self._track_start = self.clips.columns["track_start"]
        self.bounds = (np.asarray(self._track_start[index.bounds], dtype=np.int64) if per_track
                       else np.asarray(index.bounds, dtype=np.int64))

    def __len__(self) -> int:
        return int(self.bounds[-1])

    def clip_row(self, item: int) -> int:
        if not self.per_track:
            return int(item)
        # np.uint64, not a Python int: against a uint64 column a Python int makes NumPy convert the whole
        # column on every call (1.5 ms at 2M tracks instead of 4 µs)
        return int(self._track_start.searchsorted(np.uint64(item), side="right")) - 1

    def item(self, item: int) -> Item:
        item = int(item)
        if not self.per_track:
            return Item(self.clips.ref(item))
        c = self.clips.columns
        track = (int(c["track_person"][item]), int(c["track_first"][item]), int(c["track_frames"][item]))
        return Item(self.clips.ref(self.clip_row(item)), track)

    def track_lengths(self) -> np.ndarray:
        """``[M]``: each face track's length in frames."""
        return np.asarray(self.clips.columns["track_frames"], dtype=np.int64)

    def track_clips(self) -> np.ndarray:
        """``[M]``: each face track's clip row."""
        return self.clips.track_clip()


class RunItems(Sequence):
    """A run of item ids seen as :class:`Item` objects, each made when indexed (nothing is kept)."""

    def __init__(self, table: ItemTable, ids: np.ndarray):
        self.table = table
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return RunItems(self.table, self.ids[i])
        return self.table.item(int(self.ids[i]))

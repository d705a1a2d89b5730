"""The clips being watched: each read whole once, checked, and kept while there is room.

A clip's page, its frames and its audio are separate requests; they are served from one read of
the clip's byte range (:func:`shardgen.core.sources.read_clip`: the safe tar reader, the format's
checks, the index's sha256), kept in a small least-recently-used store bounded by bytes. Two
requests for a clip not yet read wait for one read. A clip that cannot be read is not kept: its
error is raised to the caller each time, naming the shard and the member, so a damaged clip never
stops the server and a transient network failure is retried on the next request.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from shardgen.core.format import FormatError
from shardgen.core.sample import ClipSample
from shardgen.core.sources import read_clip
from shardgen.core.storage import TransportOptions

from .catalog import Split

DEFAULT_BUDGET = 512 << 20


class ClipUnreadable(Exception):
    """A clip that could not be read or failed the format's checks; the message names the shard and member."""


class ClipStore:
    """Whole clips by (split, row), least recently used dropped first once ``budget`` bytes are held."""

    def __init__(self, options: TransportOptions, budget: int = DEFAULT_BUDGET):
        self._options = options
        self._budget = budget
        self._held: OrderedDict[tuple[str, int], tuple[ClipSample, int]] = OrderedDict()
        self._reading: dict[tuple[str, int], threading.Event] = {}
        self._lock = threading.Lock()

    def get(self, split: Split, row: int) -> ClipSample:
        slot = (split.name, int(row))
        while True:
            with self._lock:
                if slot in self._held:
                    self._held.move_to_end(slot)
                    return self._held[slot][0]
                done = self._reading.get(slot)
                if done is None:
                    done = self._reading[slot] = threading.Event()
                    break
            done.wait()  # another request is reading this clip: take its result (or read again after its error)
        try:
            sample = self._read(split, row)
            with self._lock:
                self._keep(slot, sample)
            return sample
        finally:
            with self._lock:
                self._reading.pop(slot, None)
            done.set()

    def _read(self, split: Split, row: int) -> ClipSample:
        try:
            sample = read_clip(split.index, row, options=self._options)
            try:
                sample.audio()  # decoded now, so that a clip whose audio does not decode is refused with its page
            except FormatError as exc:
                raise FormatError(f"{split.index.shards[int(split.index.clips.columns['shard'][row])].url}: {exc}") from None
            return sample
        except Exception as exc:  # a hostile clip must never escape un-named, nor stop the server
            key = split.index.clips.key(row)
            raise ClipUnreadable(f"clip {key} cannot be shown: {type(exc).__name__}: {exc}") from exc

    def _keep(self, slot: tuple[str, int], sample: ClipSample) -> None:
        size = sum(len(v) for v in sample.fields.values())
        self._held[slot] = (sample, size)
        total = sum(s for _, s in self._held.values())
        while total > self._budget and len(self._held) > 1:
            _, (_, s) = self._held.popitem(last=False)
            total -= s

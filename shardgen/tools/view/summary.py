"""One line per clip for the browse pages, and the filters that find suspicious clips.

A summary needs the clip's metadata and label arrays only: they are read through
:func:`shardgen.core.sources.read_clip` with ``members=LABELS``, which passes over the audio and frames
(seeked past on disk; the read stops once the labels — the first members after the audio — are in). Summaries are small, so they are kept once made; a video page or a filter scan reads the
clips it has not seen yet in parallel.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from shardgen.core.format import FormatError
from shardgen.core.sample import LABELS, ClipSample
from shardgen.core.sources import read_clip
from shardgen.core.storage import TransportOptions
from shardgen.core.tario import TarError

from .catalog import Split


@dataclass(frozen=True)
class ClipSummary:
    """What the clip tables show about one clip; ``error`` instead when it could not be read."""

    key: str
    frames: int
    fps: float
    persons: int = 0  # persons the clip's metadata lists (the camera wearer included)
    faces: int = 0  # persons with a face box somewhere in the clip
    voice_share: float = 0.0  # frames with any voice segment
    speaking_share: float = 0.0  # frames where some person with a face box is speaking
    speech_without_face: int = 0  # frames with voice and no face box at all
    faces_without_voice: bool = False  # face boxes in the clip, and no voice anywhere in it
    audio_padded_samples: int = 0  # zeros where the source audio ended early
    pad_frames: int = 0  # frames repeated to pad a short tail
    error: str | None = None

    @property
    def seconds(self) -> float:
        return self.frames / self.fps

    def flags(self) -> list[str]:
        """The names of the :data:`FILTERS` this clip matches."""
        return [name for name, f in FILTERS.items() if f.test(self)]


@dataclass(frozen=True)
class Filter:
    title: str
    test: Callable[[ClipSummary], bool]


FILTERS: dict[str, Filter] = {
    "speech-no-face": Filter("speech but no visible face", lambda s: s.speech_without_face > 0),
    "faces-no-voice": Filter("faces but no voice", lambda s: s.faces_without_voice),
    "audio-padded": Filter("audio zero-padded", lambda s: s.audio_padded_samples > 0),
    "padded-frames": Filter("padded tail frames", lambda s: s.pad_frames > 0),
    "unreadable": Filter("metadata or labels unreadable", lambda s: s.error is not None),
}


def summarize(sample: ClipSample) -> ClipSummary:
    """A checked clip's summary, from its metadata and label arrays."""
    m = sample.meta
    face = ~np.isnan(sample.boxes[..., 0])  # [P, T]
    with_face = face.any(axis=1)
    speaking = (sample.speaking.astype(bool) & with_face[:, None]).any(axis=0) if len(with_face) else np.zeros(0, bool)
    voice = sample.voice.astype(bool)
    visible = sample.visible.astype(bool)
    T = sample.n_frames
    return ClipSummary(
        key=sample.key, frames=T, fps=float(m["fps"]), persons=len(m["persons"]), faces=int(with_face.sum()),
        voice_share=float(voice.mean()) if T else 0.0, speaking_share=float(speaking.mean()) if speaking.size else 0.0,
        speech_without_face=int((voice & ~visible).sum()), faces_without_voice=bool(visible.any() and not voice.any()),
        audio_padded_samples=int(m.get("audio_padded_samples", 0)), pad_frames=int(m.get("pad_frames", 0)),
    )


def read_summary(split: Split, row: int, options: TransportOptions) -> ClipSummary:
    """Clip ``row``'s summary, reading its metadata and labels only; a damaged clip's summary carries the error."""
    clips = split.index.clips
    shard = split.index.shards[int(clips.columns["shard"][row])]
    try:
        return summarize(read_clip(split.index, row, members=LABELS, options=options))
    except (FormatError, TarError, OSError) as exc:
        where = "" if shard.url in str(exc) else f"{shard.url}: "  # read_clip's errors name the shard already
        return ClipSummary(clips.key(row), int(clips.columns["n_frames"][row]), split.fps, error=f"{where}{exc}")


class Summaries:
    """Every summary made so far, by (split, row); ``get`` reads the missing ones in parallel."""

    def __init__(self, options: TransportOptions, threads: int = 8):
        self._options = options
        self._done: dict[tuple[str, int], ClipSummary] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="view-summary")

    def get(self, split: Split, rows) -> list[ClipSummary]:
        rows = [int(r) for r in rows]
        with self._lock:
            missing = [r for r in rows if (split.name, r) not in self._done]
        for r, summary in zip(missing, self._pool.map(lambda r: read_summary(split, r, self._options), missing)):
            with self._lock:
                self._done[(split.name, r)] = summary
        with self._lock:
            return [self._done[(split.name, r)] for r in rows]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class ScanPage:
    """One page of a filter scan: the matches found, and where the next page starts (None at the end)."""

    matches: list[tuple[int, ClipSummary]]
    scanned: range
    next_row: int | None


def scan(summaries: Summaries, split: Split, flag: str, start: int, *, max_matches: int = 50,
         max_scanned: int = 400, batch: int = 50) -> ScanPage:
    """Clips of ``split`` from row ``start`` on that match the filter ``flag``: at most ``max_matches``, reading
    at most ``max_scanned`` clips, so one request stays short however large the split (the page links onwards)."""
    test = FILTERS[flag].test
    n = len(split.index.clips)
    start = max(0, min(int(start), n))
    matches: list[tuple[int, ClipSummary]] = []
    row = start
    while row < n and row - start < max_scanned and len(matches) < max_matches:
        rows = range(row, min(n, row + batch, start + max_scanned))
        for r, s in zip(rows, summaries.get(split, rows)):
            row = r + 1
            if test(s):
                matches.append((r, s))
                if len(matches) == max_matches:
                    break
    return ScanPage(matches, range(start, row), row if row < n else None)

"""``shardgen eval-gt``: a built split's face tracks as AVA-ActiveSpeaker ground truth.

One row per frame of every face track of the split — the tracks its clip index (``clips.idx``)
lists and the loader's ``asd-tracks`` mode yields, their interior gaps filled exactly as the loader fills them
— labelled ``SPEAKING_AUDIBLE`` where that person's voice segment covers the frame, else
``NOT_SPEAKING``. Only each clip's metadata and label arrays are read (the frames and audio are
seeked past), through the same range reads as the loader, so a build on disk, behind HTTP or in
S3 gives the same file. A frame in several clips (``--stride-seconds`` shorter than the clip)
appears once.
"""

from __future__ import annotations

from typing import Iterator

from ..core.ava_eval import GT_COLUMNS, NOT_SPEAKING, SPEAKING, FrameRow, track_rows, write_csv
from ..core.crops import interpolate_boxes
from ..core.sample import LABELS
from ..core.sources import read_clip, resolve
from ..core.storage import TransportOptions


def ground_truth(source, *, split: str = "val", remote_options: TransportOptions | dict | None = None
                 ) -> Iterator[tuple[FrameRow, str]]:
    """``(row, label)`` for every face-track frame of the split, once each, in (video, entity, frame) order."""
    remote_options = TransportOptions.coerce(remote_options)
    index = resolve(source, split=split, remote_options=remote_options)
    rows: dict[tuple, tuple[FrameRow, str]] = {}
    for clip in range(len(index.clips)):  # each clip's metadata and label arrays, read and checked; nothing else
        sample = read_clip(index, clip, members=LABELS, options=remote_options)
        meta, boxes, speaking = sample.meta, sample.boxes, sample.speaking
        for p, first, n in index.clips.tracks(clip):  # the face tracks the loader's asd-tracks mode yields
            filled, _ = interpolate_boxes(boxes[p, first:first + n].astype("float64"))
            pid = meta["persons"][p]["person_id"]
            for i, row in enumerate(track_rows(meta["video_id"], pid, meta["start_frame"] + first, filled,
                                               meta["fps"], meta["frame_size"])):
                rows.setdefault(row.key, (row, SPEAKING if speaking[p, first + i] else NOT_SPEAKING))
    for key in sorted(rows, key=lambda k: (rows[k][0].video_id, k)):
        yield rows[key]


def write_ground_truth(source, out, *, split: str = "val", remote_options: TransportOptions | dict | None = None,
                       dialect: str = "talknet") -> tuple[int, int]:
    """Write the CSV (atomically; ``dialect`` ``activitynet``: no header row, as the official script reads it);
    returns ``(rows, positives)``."""
    positives = 0

    def cells():
        nonlocal positives
        for row, label in ground_truth(source, split=split, remote_options=remote_options):
            positives += label == SPEAKING
            yield [*row.cells(), label, row.entity]

    n = write_csv(out, GT_COLUMNS, cells(), dialect=dialect)
    return n, positives

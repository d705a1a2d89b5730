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

from pathlib import Path
from typing import Iterator

from ..core import codecs
from ..core import format as fmt
from ..core.ava_eval import GT_COLUMNS, NOT_SPEAKING, SPEAKING, FrameRow, track_rows, write_csv
from ..core.crops import interpolate_boxes
from ..core.manifest import MANIFEST_NAME
from ..core.sources import ResolvedSource, read_clip_members, resolve
from ..core.storage import TransportOptions

_WANTED = {fmt.META_EXT, fmt.BOXES_EXT, fmt.SPEAKING_EXT}


def split_source(source: str, split: str) -> str:
    """A build directory names its splits: ``OUT`` → ``OUT/<split>`` when ``OUT`` holds no manifest itself."""
    s = str(source)
    if "://" in s or s.endswith((".json", ".tar")) or (Path(s) / MANIFEST_NAME).is_file():
        return s
    if (Path(s) / split / MANIFEST_NAME).is_file():
        return str(Path(s) / split)
    return s


def _clip_labels(index: ResolvedSource, clip, remote_options) -> tuple[dict, object, object]:
    shard = index.shards[clip.shard]
    fields = read_clip_members(shard, clip, remote_options, wanted=lambda ext, _: ext in _WANTED,
                               complete=_WANTED.issubset)
    missing = sorted(_WANTED.difference(fields))
    if missing:
        raise fmt.FormatError(f"{shard.url}: clip {clip.key} has no .{missing[0]} member")
    meta = fmt.decode_metadata(fields[fmt.META_EXT], name=f"{clip.key}.json")
    boxes = codecs.decode_npy(fields[fmt.BOXES_EXT], name=f"{clip.key}.{fmt.BOXES_EXT}", dtype="float32", ndim=3)
    speaking = codecs.decode_npy(fields[fmt.SPEAKING_EXT], name=f"{clip.key}.{fmt.SPEAKING_EXT}", dtype="uint8", ndim=2)
    P, T = len(meta["persons"]), meta["n_frames"]
    if boxes.shape != (P, T, 4) or speaking.shape != (P, T):
        raise fmt.FormatError(f"{shard.url}: clip {clip.key}: boxes {boxes.shape} / speaking {speaking.shape} "
                              f"do not match [{P},{T}]")
    return meta, boxes, speaking


def ground_truth(source, *, split: str = "val", remote_options: TransportOptions | dict | None = None
                 ) -> Iterator[tuple[FrameRow, str]]:
    """``(row, label)`` for every face-track frame of the split, once each, in (video, entity, frame) order."""
    remote_options = TransportOptions.coerce(remote_options)
    index = resolve(split_source(source, split), remote_options=remote_options)
    rows: dict[tuple, tuple[FrameRow, str]] = {}
    for shard in range(len(index.shards)):
        for clip in index.shard_refs(shard):  # one shard's clips at a time, from the clip index
            meta, boxes, speaking = _clip_labels(index, clip, remote_options)
            tracks = clip.tracks or fmt.person_tracks(boxes)
            for p, first, n in tracks:
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

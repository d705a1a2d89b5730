"""AVA-ActiveSpeaker CSV rows.

Columns: ``video_id, frame_timestamp, x1, y1, x2, y2, label, entity_id`` with box corners
normalised to 0-1 and labels ``SPEAKING_AUDIBLE``, ``SPEAKING_NOT_AUDIBLE``,
``NOT_SPEAKING``. A header row is allowed.

Timing: a row at ``t`` seconds belongs to 0-based frame ``round(t*fps - time_offset*fps)``,
i.e. the source layout's first image is at ``time_offset`` seconds (AVA movies' annotated
segments start at 900 s: pass ``--ava-time-offset 900`` if the frames were extracted from
there). AVA annotates each entity at ~20-30 Hz, so at 30 fps some frames of a track have no
row: gaps of at most ``max_gap`` frames between two rows of the same entity are filled
(box linearly, label from the nearer row), longer gaps stay absent.

Only ``SPEAKING_AUDIBLE`` counts as speaking and as voice (TalkNet trains on exactly that);
an unknown label is an error naming the file and line.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

from ...core.format import round_half_up
from ..source import SourceError
from .model import Person, VideoAnnotations

LABELS = {"SPEAKING_AUDIBLE": 1, "SPEAKING_NOT_AUDIBLE": 0, "NOT_SPEAKING": 0}


def parse_file(path: Path, fps: float, *, time_offset: float = 0.0, max_gap: int = 3) -> dict[str, VideoAnnotations]:
    rows: dict[str, dict[str, list[tuple[int, tuple, int]]]] = defaultdict(lambda: defaultdict(list))
    dropped_by_video: dict[str, dict] = defaultdict(lambda: defaultdict(int))
    try:
        fh = open(path, newline="")
    except OSError as exc:
        raise SourceError(f"{path}: cannot read annotation file ({exc.strerror})") from None
    with fh:
        for lineno, row in enumerate(csv.reader(fh), 1):
            if not row or all(not c.strip() for c in row):
                continue
            if lineno == 1 and not _is_number(row[1] if len(row) > 1 else ""):
                continue  # header
            if len(row) < 8:
                raise SourceError(f"{path}:{lineno}: expected 8 columns (video_id, frame_timestamp, x1, y1, x2, y2, label, entity_id), got {len(row)}")
            vid, ts, x1, y1, x2, y2, label, entity = (c.strip() for c in row[:8])
            if label not in LABELS:
                raise SourceError(f"{path}:{lineno}: unknown label {label!r} (expected one of {sorted(LABELS)})")
            try:
                t = float(ts)
                box = tuple(float(v) for v in (x1, y1, x2, y2))
            except ValueError:
                raise SourceError(f"{path}:{lineno}: non-numeric timestamp or box") from None
            if not all(math.isfinite(v) for v in (t, *box)):
                dropped_by_video[vid]["row with a non-finite value"] += 1
                continue
            if box[2] <= box[0] or box[3] <= box[1]:
                dropped_by_video[vid]["box with zero or negative size"] += 1
                continue
            frame = round_half_up((t - time_offset) * fps)
            if frame < 0:
                dropped_by_video[vid]["row before the first frame"] += 1
                continue
            rows[vid][entity].append((frame, box, LABELS[label]))

    out: dict[str, VideoAnnotations] = {}
    for vid in sorted(set(rows) | set(dropped_by_video)):
        ann = VideoAnnotations(video_id=vid, source="ava-csv", file=Path(path).name)
        ann.dropped.update(dropped_by_video.get(vid, {}))
        for entity in sorted(rows.get(vid, {})):
            ann.persons.append(_entity_person(entity, rows[vid][entity], max_gap, ann.dropped))
        out[vid] = ann
    return out


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _entity_person(entity: str, points: list, max_gap: int, dropped) -> Person:
    person = Person(entity, track_ids=[entity], normalised_boxes=True)
    points.sort(key=lambda p: p[0])
    labels: dict[int, int] = {}
    for frame, box, label in points:
        if frame in labels:
            dropped["two rows of one entity in the same frame (first kept)"] += 1
            continue
        x1, y1, x2, y2 = box
        person.boxes[frame] = (x1, y1, x2 - x1, y2 - y1)
        labels[frame] = label
    frames = sorted(labels)
    for a, b in zip(frames, frames[1:]):
        if 1 < b - a <= max_gap + 1:
            ba, bb = person.boxes[a], person.boxes[b]
            for f in range(a + 1, b):
                w = (f - a) / (b - a)
                person.boxes[f] = tuple(pa + (pb - pa) * w for pa, pb in zip(ba, bb))
                labels[f] = labels[a] if (f - a) <= (b - f) else labels[b]
    # speaking frames → inclusive runs
    run_start = None
    prev = None
    for f in sorted(labels):
        if labels[f] and run_start is None:
            run_start = f
        elif (not labels[f] or (prev is not None and f != prev + 1)) and run_start is not None:
            person.voice.append((run_start, prev))
            run_start = f if labels[f] else None
        prev = f
    if run_start is not None:
        person.voice.append((run_start, prev))
    return person

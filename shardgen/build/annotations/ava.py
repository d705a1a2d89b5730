"""AVA-ActiveSpeaker CSV rows.

Columns: ``video_id, frame_timestamp, entity_box_x1, entity_box_y1, entity_box_x2, entity_box_y2,
label, entity_id`` with box corners normalised to 0-1 and labels ``SPEAKING_AUDIBLE``,
``SPEAKING_NOT_AUDIBLE``, ``NOT_SPEAKING`` — the AVA-ActiveSpeaker files have no header and take the
columns in that order. A header row (TalkNet's CSVs have one) is read as column names: the eight
must be there, in any order; ``label_id``, ``instance_id`` and ``score`` may be there too (unread);
any other name is a finding naming the nearest known column.

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

from ...core.ava_eval import GT_COLUMNS
from ...core.format import round_half_up
from ..findings import Finding, FindingCode, did_you_mean
from ..source import SourceError
from .model import Person, VideoAnnotations

LABELS = {"SPEAKING_AUDIBLE": 1, "SPEAKING_NOT_AUDIBLE": 0, "NOT_SPEAKING": 0}
#: columns a header may name besides the eight read (TalkNet's label_id and instance_id, a prediction's score)
OTHER_COLUMNS = ("label_id", "instance_id", "score")


def parse_file(path: Path, fps, *, time_offset: float = 0.0, max_gap: int = 3) -> dict[str, VideoAnnotations]:
    return parse_file_checked(path, fps, time_offset=time_offset, max_gap=max_gap)[0]


def parse_file_checked(path: Path, fps, *, time_offset: float = 0.0, max_gap: int = 3
                       ) -> tuple[dict[str, VideoAnnotations], list[Finding]]:
    """``(video id → annotations, findings about the file)``. ``fps``: a number, or a function of the video id."""
    rate = fps if callable(fps) else (lambda _vid, f=fps: f)
    rows: dict[str, dict[str, list[tuple[int, tuple, int]]]] = defaultdict(lambda: defaultdict(list))
    dropped_by_video: dict[str, dict] = defaultdict(lambda: defaultdict(int))
    findings: list[Finding] = []
    order = list(range(8))  # where each of GT_COLUMNS is in a row
    try:
        fh = open(path, newline="")
    except OSError as exc:
        raise SourceError(f"{path}: cannot read annotation file ({exc.strerror})") from None
    with fh:
        for lineno, row in enumerate(csv.reader(fh), 1):
            if not row or all(not c.strip() for c in row):
                continue
            if lineno == 1 and not _is_number(row[1] if len(row) > 1 else ""):
                order = _header(path, [c.strip() for c in row], findings)
                continue
            if len(row) < 8 or len(row) <= max(order):
                raise SourceError(f"{path}:{lineno}: expected 8 columns ({', '.join(GT_COLUMNS)}), got {len(row)}")
            vid, ts, x1, y1, x2, y2, label, entity = (row[i].strip() for i in order)
            if label not in LABELS:
                raise SourceError(f"{path}:{lineno}: unknown label {label!r}{did_you_mean(label, LABELS)} "
                                  f"(expected one of {sorted(LABELS)})")
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
            frame = round_half_up((t - time_offset) * rate(vid))
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
    return out, findings


def _header(path: Path, names: list[str], findings: list[Finding]) -> list[int]:
    """A header row → where each of the eight columns is; every other name is a finding, a missing one an error."""
    known = set(GT_COLUMNS) | set(OTHER_COLUMNS)
    unknown = [n for n in names if n not in known]
    for n in unknown:
        findings.append(Finding(FindingCode.UNKNOWN_COLUMN, f"{Path(path).name}: header: unknown column {n!r}"
                                                            f"{did_you_mean(n, known)}: it is not read"))
    missing = [c for c in GT_COLUMNS if c not in names]
    if missing:
        raise SourceError(f"{path}:1: the header has no column {missing[0]!r} (it names {', '.join(names)}): a header "
                          f"must name {', '.join(GT_COLUMNS)}, in any order (AVA-ActiveSpeaker files have no header)")
    return [names.index(c) for c in GT_COLUMNS]


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

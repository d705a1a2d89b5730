"""Annotation files → per-video person tracks and voice segments (pure parsing, no clips).

Two source formats feed one in-memory model, :class:`VideoAnnotations`:

* Ego4D AV JSON (``av_<split>.json``): frame numbers count from 0 (frame f is
  ``img_{f+1:05d}.jpg``); voice segments cover ``start_frame .. end_frame`` inclusive, as in
  the Ego4D TalkNet port's ``range(start_frame, end_frame + 1)``. See :mod:`.ego4d`.
* AVA-ActiveSpeaker CSV rows: a timestamp in seconds maps to frame ``round(t * fps)``
  (frame f at f/fps, as above). See :mod:`.ava`.

Entries that cannot be used (a box with no size, a segment that ends before it starts, a
track point missing a field) are dropped and counted by reason in ``dropped``: the build
report lists the counts, so nothing disappears unseen. Keys and columns the formats do not have
(a misspelt ``tracking_path``, a header column ``x1``) are findings
(:class:`~shardgen.build.findings.Finding`) naming the file, the place and the nearest known
name. A file that cannot be parsed at all raises :class:`~shardgen.build.source.SourceError`
naming the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..findings import Finding
from ..source import SourceError
from . import ava, ego4d
from .model import Box, Person, VideoAnnotations

__all__ = ["Box", "Person", "VideoAnnotations", "annotation_digest", "load_annotations", "load_annotation_files",
           "find_annotation_files"]

def annotation_digest(ann: VideoAnnotations | None, start: int, stop: int) -> str:
    """Fingerprint of what a clip over frames [start, stop) takes from the annotations: the file's
    name, every person (id, wearer flag, track ids in order, normalisation) and their boxes and voice
    segments inside the window. A resumed build compares it: a clip is rebuilt exactly when it changes."""
    if ann is None:
        return "none"
    persons = [[p.person_id, p.camera_wearer, p.normalised_boxes, list(p.track_ids),
                sorted((f, b) for f, b in p.boxes.items() if start <= f < stop),
                sorted((a, b) for a, b in p.voice if b >= start and a < stop)] for p in ann.persons]
    return hashlib.sha256(json.dumps([ann.source, ann.file, persons]).encode()).hexdigest()


def load_annotations(paths: list[Path], fps, *, ava_time_offset: float = 0.0) -> dict[str, VideoAnnotations]:
    """Parse every annotation file (JSON → Ego4D AV, CSV → AVA) into one id → annotations map."""
    return load_annotation_files(paths, fps, ava_time_offset=ava_time_offset)[0]


def load_annotation_files(paths: list[Path], fps, *, ava_time_offset: float = 0.0
                          ) -> tuple[dict[str, VideoAnnotations], list[Finding]]:
    """``(video id → annotations, findings about the files as a whole)``; each video's own findings are on it.

    ``fps``: the build's frame rate, or a function of the video id (``--fps native``: each video's own)."""
    merged: dict[str, VideoAnnotations] = {}
    file_findings: list[Finding] = []
    for path in paths:
        if path.suffix.lower() == ".json":
            parsed, found = ego4d.parse_file_checked(path, fps)
        elif path.suffix.lower() == ".csv":
            parsed, found = ava.parse_file_checked(path, fps, time_offset=ava_time_offset)
        else:
            raise SourceError(f"{path}: unknown annotation format (expected .json Ego4D AV or .csv AVA)")
        file_findings += found
        for vid, ann in parsed.items():
            if vid in merged:
                if merged[vid].source == "ava-csv" and ann.source == "ava-csv":
                    _merge_ava(merged[vid], ann)
                    continue
                raise SourceError(f"{path}: video {vid!r} is also annotated in {merged[vid].file}")
            merged[vid] = ann
    return merged, file_findings


def _merge_ava(into: VideoAnnotations, other: VideoAnnotations) -> None:
    """AVA ships one CSV per video or per split: entities of the same video may span files."""
    by_id = {p.person_id: p for p in into.persons}
    for person in other.persons:
        if person.person_id in by_id:
            target = by_id[person.person_id]
            for f, box in person.boxes.items():
                target.boxes.setdefault(f, box)
            target.voice.extend(person.voice)
        else:
            into.persons.append(person)
    into.persons.sort(key=lambda p: p.person_id)
    into.dropped.update(other.dropped)
    into.findings += other.findings
    into.file = ",".join(sorted(set(into.file.split(",")) | {other.file}))


def find_annotation_files(data_dir: Path, split: str) -> list[Path]:
    """Annotations by convention: ``DIR/json/av_<split>.json`` (Ego4D TalkNet port), else ``DIR/csv/*.csv``."""
    js = data_dir / "json" / f"av_{split}.json"
    if js.is_file():
        return [js]
    csv_dir = data_dir / "csv"
    if csv_dir.is_dir():
        return sorted(csv_dir.glob("*.csv"))
    return []

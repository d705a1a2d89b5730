"""Ego4D audio-visual diarization JSON (``av_train.json`` / ``av_val.json``).

Shape: ``videos[].clips[].persons[]`` with ``person_id``, ``camera_wearer``,
``tracking_paths[].track[]{frame, x, y, width, height}`` and
``voice_segments[]{start_frame, end_frame, start_time, end_time, person}``. The frames were
extracted per clip, so the source layout's video id is the ``clip_uid`` (falling back to
``video_uid`` for files without clips). Older (v1) files name the clip frame ``clip_frame``
and may carry voice segments at clip level with a ``person`` field; both are read. v2 files keep
the camera wearer in a clip-level ``camera_wearer`` object {``person_id``, ``voice_segments``}
beside ``persons[]``: its segments are read too (the wearer's speech is in ``voice``), and a
wearer listed in both places is one person.

``frame`` counts from 0: frame f is ``img_{f+1:05d}.jpg`` and is at f/fps seconds. The Ego4D
TalkNet port reads ``img_{f:05d}.jpg`` instead (one frame late); we do not copy that.
Tracks whose id marks a visual anchor are skipped, as in that port.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from ...core.format import round_half_up
from ..source import SourceError
from .model import Person, VideoAnnotations


def parse_file(path: Path, fps: float) -> dict[str, VideoAnnotations]:
    try:
        data = json.loads(Path(path).read_bytes())
    except json.JSONDecodeError as exc:
        raise SourceError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot read annotation file ({exc.strerror})") from None
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list):
        raise SourceError(f"{path}: not an Ego4D AV file: expected an object with a 'videos' list")
    return parse(data, fps, file=Path(path).name, where=str(path))


def parse(data: dict, fps: float, *, file: str, where: str) -> dict[str, VideoAnnotations]:
    out: dict[str, VideoAnnotations] = {}
    for vi, video in enumerate(data["videos"]):
        if not isinstance(video, dict):
            raise SourceError(f"{where}: videos[{vi}] is not an object")
        clips = video.get("clips")
        if clips is None:
            clips = [video]
        if not isinstance(clips, list):
            raise SourceError(f"{where}: videos[{vi}].clips is not a list")
        for ci, clip in enumerate(clips):
            if not isinstance(clip, dict):
                raise SourceError(f"{where}: videos[{vi}].clips[{ci}] is not an object")
            vid = clip.get("clip_uid") or clip.get("video_uid") or video.get("video_uid")
            if not isinstance(vid, str) or not vid:
                raise SourceError(f"{where}: videos[{vi}].clips[{ci}] has no clip_uid or video_uid")
            if vid in out:
                raise SourceError(f"{where}: clip {vid!r} appears twice")
            out[vid] = _parse_clip(clip, vid, fps, file)
    return out


def _parse_clip(clip: dict, vid: str, fps: float, file: str) -> VideoAnnotations:
    ann = VideoAnnotations(video_id=vid, source="ego4d-av", file=file)
    persons_raw = clip.get("persons")
    if not isinstance(persons_raw, list):
        ann.dropped["clip without a persons list"] += 1
        persons_raw = []
    by_id: dict[str, Person] = {}
    for pi, raw in enumerate(persons_raw):
        if not isinstance(raw, dict):
            ann.dropped["person entry is not an object"] += 1
            continue
        pid = str(raw.get("person_id", f"#{pi}"))
        person = by_id.get(pid)
        if person is None:
            person = by_id[pid] = Person(pid, camera_wearer=bool(raw.get("camera_wearer", False)))
        for path in raw.get("tracking_paths") or []:
            _add_track(person, path, ann.dropped)
        for seg in raw.get("voice_segments") or []:
            _add_voice(person, seg, fps, ann.dropped)
    _add_camera_wearer(clip.get("camera_wearer"), by_id, fps, ann.dropped)
    # v1 files may keep voice segments at clip level, naming the person.
    for seg in clip.get("voice_segments") or []:
        pid = str(seg.get("person")) if isinstance(seg, dict) and seg.get("person") is not None else None
        if pid is None:
            ann.dropped["clip-level voice segment without a person"] += 1
            continue
        person = by_id.setdefault(pid, Person(pid))
        _add_voice(person, seg, fps, ann.dropped)
    ann.persons = list(by_id.values())
    return ann


def _add_camera_wearer(raw, by_id: dict[str, Person], fps: float, dropped: Counter) -> None:
    """v2 files keep the camera wearer beside ``persons[]``: a clip-level object {person_id, voice_segments}.

    The wearer's speech is someone speaking, so it belongs in the ``voice`` label. A wearer also
    listed in ``persons[]`` (same ``person_id``) stays one person: its segments from both places
    are joined, a segment present in both counted once."""
    if raw is None:
        return
    if not isinstance(raw, dict):
        dropped["camera_wearer entry is not an object"] += 1
        return
    pid = str(raw.get("person_id", "camera_wearer"))
    person = by_id.get(pid)
    if person is None:
        person = by_id[pid] = Person(pid, camera_wearer=True)
    person.camera_wearer = True
    known = set(person.voice)
    for seg in raw.get("voice_segments") or []:
        before = len(person.voice)
        _add_voice(person, seg, fps, dropped)
        if len(person.voice) > before and person.voice[-1] in known:
            person.voice.pop()  # the same segment under persons[]: once
        known.update(person.voice[before:])


def _num(entry: dict, *names):
    for n in names:
        v = entry.get(n)
        if v is not None:
            return v
    return None


def _add_track(person: Person, path, dropped: Counter) -> None:
    if not isinstance(path, dict) or not isinstance(path.get("track"), list):
        dropped["tracking path without a track list"] += 1
        return
    track_id = str(path.get("track_id", ""))
    if "visual_anchor" in track_id or path.get("visual_anchor"):
        dropped["visual anchor track (skipped as in the TalkNet port)"] += 1
        return
    if track_id and track_id not in person.track_ids:
        person.track_ids.append(track_id)
    for point in path["track"]:
        if not isinstance(point, dict):
            dropped["track point is not an object"] += 1
            continue
        frame = _num(point, "frame", "clip_frame")
        vals = [point.get(k) for k in ("x", "y", "width", "height")]
        if frame is None or any(v is None for v in vals):
            dropped["track point missing frame/x/y/width/height"] += 1
            continue
        try:
            frame = int(frame)
            x, y, w, h = (float(v) for v in vals)
        except (TypeError, ValueError):
            dropped["track point with non-numeric fields"] += 1
            continue
        if frame < 0:
            dropped["track point with a negative frame"] += 1
            continue
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            dropped["track point with a non-finite box"] += 1
            continue
        if w <= 0 or h <= 0:
            dropped["box with zero or negative size"] += 1
            continue
        if frame in person.boxes:
            dropped["second box for the same person and frame (first kept)"] += 1
            continue
        person.boxes[frame] = (x, y, w, h)


def _add_voice(person: Person, seg, fps: float, dropped: Counter) -> None:
    if not isinstance(seg, dict):
        dropped["voice segment is not an object"] += 1
        return
    try:
        if seg.get("start_frame") is not None and seg.get("end_frame") is not None:
            s, e = int(seg["start_frame"]), int(seg["end_frame"])
        elif seg.get("start_time") is not None and seg.get("end_time") is not None:
            s = round_half_up(float(seg["start_time"]) * fps)
            e = round_half_up(float(seg["end_time"]) * fps)
        else:
            dropped["voice segment without start/end"] += 1
            return
    except (TypeError, ValueError, OverflowError):
        dropped["voice segment with non-numeric bounds"] += 1
        return
    if e < s or e < 0:
        dropped["voice segment that ends before it starts"] += 1
        return
    person.voice.append((max(s, 0), e))

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

**Validated, not guessed.** Every object's keys are checked against Ego4D's published schema
(v2, plus the v1 keys above: :data:`KNOWN_KEYS`): a key we do not know — ``tracking_path`` for
``tracking_paths``, ``X`` for ``x`` — is a finding naming the file, the place in the document
(``videos[3].clips[0].persons[1]``) and the nearest known key, because the data under it is not
read. A person left with no face box and no voice segment is a finding too. Voice segments that
give both a frame and a time tell the frame rate the annotators counted in
(:attr:`~.model.VideoAnnotations.implied_fps`); the planner compares it with the build's.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Callable

from ...core.format import round_half_up
from ..findings import Finding, FindingCode, did_you_mean
from ..source import SourceError
from .model import Person, VideoAnnotations

_VOICE = frozenset({"start_time", "end_time", "start_frame", "end_frame", "video_start_time", "video_end_time",
                    "video_start_frame", "video_end_frame", "person"})
_VIDEO = frozenset({"video_uid", "split", "clips"})
_CLIP = frozenset({"clip_uid", "source_clip_uid", "video_uid", "video_start_sec", "video_end_sec",
                   "video_start_frame", "video_end_frame", "clip_start_sec", "clip_end_sec", "clip_start_frame",
                   "clip_end_frame", "valid", "camera_wearer", "persons", "missing_voice_segments", "transcriptions",
                   "social_segments_talking", "social_segments_looking",
                   "social_segments", "looking_at_me", "voice_segments"})  # the last three: v1
#: the keys each level of the document may have (Ego4D's "AV Diarization" schema, v2 and v1); others are findings
KNOWN_KEYS: dict[str, frozenset[str]] = {
    "file": frozenset({"date", "version", "description", "manifest", "split", "videos"}),
    "video": _VIDEO,
    "clip": _CLIP,
    "video without clips": _VIDEO | _CLIP,  # a video object that is its own clip
    "person": frozenset({"person_id", "camera_wearer", "tracking_paths", "voice_segments"}),
    "camera_wearer object": frozenset({"person_id", "camera_wearer", "voice_segments"}),
    "tracking path": frozenset({"track_id", "track", "suspect", "unmapped_frames_count", "unmapped_frames",
                                "visual_anchor"}),
    "track point": frozenset({"frame", "video_frame", "clip_frame", "x", "y", "width", "height"}),
    "voice segment": _VOICE,
}
_POINT = KNOWN_KEYS["track point"]
#: segments at least this far in count towards the implied frame rate (frame / time): rounding a frame
#: number moves the ratio by at most 1/(2 s * fps), under 1 % at 25-30 fps
IMPLIED_FPS_MIN_SECONDS = 2.0

Rate = Callable[[str], float]


def parse_file(path: Path, fps: float | Rate) -> dict[str, VideoAnnotations]:
    """Parse one file (its findings: :func:`parse_file_checked`)."""
    return parse_file_checked(path, fps)[0]


def parse_file_checked(path: Path, fps: float | Rate) -> tuple[dict[str, VideoAnnotations], list[Finding]]:
    """``(video id → annotations, findings about the file as a whole)``; each video's own findings are on it.

    ``fps``: the build's frame rate, or a function of the video id (``--fps native``) — used only
    for voice segments that give times and no frames."""
    try:
        data = json.loads(Path(path).read_bytes())
    except json.JSONDecodeError as exc:
        raise SourceError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot read annotation file ({exc.strerror})") from None
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list):
        raise SourceError(f"{path}: not an Ego4D AV file: expected an object with a 'videos' list"
                          + (did_you_mean_videos(data) if isinstance(data, dict) else ""))
    return parse_checked(data, fps, file=Path(path).name, where=str(path))


def did_you_mean_videos(data: dict) -> str:
    near = [k for k in data if did_you_mean(k, {"videos"})]
    return f" (found {near[0]!r}: did you mean 'videos'?)" if near else ""


def parse(data: dict, fps: float | Rate, *, file: str, where: str) -> dict[str, VideoAnnotations]:
    return parse_checked(data, fps, file=file, where=where)[0]


def parse_checked(data: dict, fps: float | Rate, *, file: str, where: str
                  ) -> tuple[dict[str, VideoAnnotations], list[Finding]]:
    rate: Rate = fps if callable(fps) else (lambda _vid, f=fps: f)
    file_keys = _KeyCheck(file)
    file_keys(data, "file", lambda: "(top level)")
    out: dict[str, VideoAnnotations] = {}
    for vi, video in enumerate(data["videos"]):
        if not isinstance(video, dict):
            raise SourceError(f"{where}: videos[{vi}] is not an object")
        clips = video.get("clips")
        if clips is None:
            clips, own = [video], True
        else:
            file_keys(video, "video", lambda: f"videos[{vi}]")
            own = False
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
            path = f"videos[{vi}]" if own else f"videos[{vi}].clips[{ci}]"
            out[vid] = _ClipParser(vid, rate(vid), file, path).parse(clip, "video without clips" if own else "clip")
    return out, file_keys.findings()


class _KeyCheck:
    """Unknown keys, gathered per (video, level, key): a misspelt key in 9,000 track points is one finding.

    ``where`` is a function, called only for the first entry with a given unknown key, so the check
    costs one subset test per object."""

    def __init__(self, file: str, video_id: str | None = None):
        self.file = file
        self.video_id = video_id
        self.seen: dict[tuple[str, str], list] = {}  # (level, key) → [where of the first, count]

    def __call__(self, entry: dict, level: str, where: Callable[[], str]) -> None:
        known = KNOWN_KEYS[level]
        if entry.keys() <= known:
            return
        for key in sorted(entry.keys() - known):
            slot = self.seen.get((level, key))
            if slot is None:
                self.seen[(level, key)] = [where(), 1]
            else:
                slot[1] += 1

    def findings(self) -> list[Finding]:
        out = []
        for (level, key), (where, n) in self.seen.items():
            more = f"; also in {n - 1} more {level}(s) of this clip" if n > 1 else ""
            out.append(Finding(FindingCode.UNKNOWN_KEY,
                               f"{self.file}: {where}: unknown key {key!r} in a {level}"
                               f"{did_you_mean(key, KNOWN_KEYS[level])}: its data is not read{more}", self.video_id))
        return out


class _ClipParser:
    """One clip of the document → its :class:`VideoAnnotations`, with the clip's findings on it."""

    def __init__(self, video_id: str, fps: float, file: str, where: str):
        self.fps = fps
        self.where = where
        self.ann = VideoAnnotations(video_id=video_id, source="ego4d-av", file=file)
        self.keys = _KeyCheck(file, video_id)
        self.ratios: list[float] = []  # frame / time of voice-segment bounds that give both

    def parse(self, clip: dict, level: str) -> VideoAnnotations:
        ann, dropped = self.ann, self.ann.dropped
        self.keys(clip, level, lambda: self.where)
        persons_raw = clip.get("persons")
        if not isinstance(persons_raw, list):
            dropped["clip without a persons list"] += 1
            persons_raw = []
        by_id: dict[str, Person] = {}
        places: dict[str, str] = {}  # person id → where it is first listed
        for pi, raw in enumerate(persons_raw):
            where = f"{self.where}.persons[{pi}]"
            if not isinstance(raw, dict):
                dropped["person entry is not an object"] += 1
                continue
            self.keys(raw, "person", lambda: where)
            pid = str(raw.get("person_id", f"#{pi}"))
            person = by_id.get(pid)
            if person is None:
                person = by_id[pid] = Person(pid, camera_wearer=bool(raw.get("camera_wearer", False)))
                places[pid] = where
            for ti, path in enumerate(raw.get("tracking_paths") or []):
                self._track(person, path, f"{where}.tracking_paths[{ti}]")
            for si, seg in enumerate(raw.get("voice_segments") or []):
                self._voice(person, seg, lambda si=si: f"{where}.voice_segments[{si}]")
        self._camera_wearer(clip.get("camera_wearer"), by_id, places)
        # v1 files may keep voice segments at clip level, naming the person.
        for si, seg in enumerate(clip.get("voice_segments") or []):
            pid = str(seg.get("person")) if isinstance(seg, dict) and seg.get("person") is not None else None
            if pid is None:
                dropped["clip-level voice segment without a person"] += 1
                continue
            if pid not in by_id:
                by_id[pid], places[pid] = Person(pid), f"{self.where}.voice_segments[{si}]"
            self._voice(by_id[pid], seg, lambda si=si: f"{self.where}.voice_segments[{si}]")
        ann.persons = list(by_id.values())
        ann.findings = self.keys.findings() + [
            Finding(FindingCode.PERSON_WITHOUT_LABELS,
                    f"{ann.file}: {places[p.person_id]}: person {p.person_id!r} has no face box and no voice segment: "
                    "it adds an empty row to every clip's labels (a misspelt tracking_paths / voice_segments, or "
                    "entries dropped?)", ann.video_id)
            for p in ann.persons if not p.boxes and not p.voice]
        usable = [r for r in self.ratios if math.isfinite(r)]
        if len(usable) >= 2:
            ann.implied_fps, ann.implied_from = statistics.median(usable), len(usable)
        return ann

    def _camera_wearer(self, raw, by_id: dict[str, Person], places: dict[str, str]) -> None:
        """v2 files keep the camera wearer beside ``persons[]``: a clip-level object {person_id, voice_segments}.

        The wearer's speech is someone speaking, so it belongs in the ``voice`` label. A wearer also
        listed in ``persons[]`` (same ``person_id``) stays one person: its segments from both places
        are joined, a segment present in both counted once."""
        if raw is None:
            return
        where = f"{self.where}.camera_wearer"
        if not isinstance(raw, dict):
            self.ann.dropped["camera_wearer entry is not an object"] += 1
            return
        self.keys(raw, "camera_wearer object", lambda: where)
        pid = str(raw.get("person_id", "camera_wearer"))
        person = by_id.get(pid)
        if person is None:
            person = by_id[pid] = Person(pid, camera_wearer=True)
            places[pid] = where
        person.camera_wearer = True
        known = set(person.voice)
        for si, seg in enumerate(raw.get("voice_segments") or []):
            before = len(person.voice)
            self._voice(person, seg, lambda si=si: f"{where}.voice_segments[{si}]")
            if len(person.voice) > before and person.voice[-1] in known:
                person.voice.pop()  # the same segment under persons[]: once
            known.update(person.voice[before:])

    def _track(self, person: Person, path, where: str) -> None:
        dropped = self.ann.dropped
        if not isinstance(path, dict) or not isinstance(path.get("track"), list):
            if isinstance(path, dict):
                self.keys(path, "tracking path", lambda: where)
            dropped["tracking path without a track list"] += 1
            return
        self.keys(path, "tracking path", lambda: where)
        track_id = str(path.get("track_id", ""))
        if "visual_anchor" in track_id or path.get("visual_anchor"):
            dropped[VISUAL_ANCHOR] += 1
            return
        if track_id and track_id not in person.track_ids:
            person.track_ids.append(track_id)
        for k, point in enumerate(path["track"]):
            if not isinstance(point, dict):
                dropped["track point is not an object"] += 1
                continue
            if not _POINT.issuperset(point):  # the common case costs one subset test, no closure
                self.keys(point, "track point", lambda k=k: f"{where}.track[{k}]")
            frame = _num(point, "frame", "clip_frame")
            vals = [point.get(c) for c in ("x", "y", "width", "height")]
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

    def _voice(self, person: Person, seg, where: Callable[[], str]) -> None:
        dropped = self.ann.dropped
        if not isinstance(seg, dict):
            dropped["voice segment is not an object"] += 1
            return
        self.keys(seg, "voice segment", where)
        try:
            if seg.get("start_frame") is not None and seg.get("end_frame") is not None:
                s, e = int(seg["start_frame"]), int(seg["end_frame"])
                self._ratios(seg, s, e)
            elif seg.get("start_time") is not None and seg.get("end_time") is not None:
                s = round_half_up(float(seg["start_time"]) * self.fps)
                e = round_half_up(float(seg["end_time"]) * self.fps)
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

    def _ratios(self, seg: dict, s: int, e: int) -> None:
        """Frame / time of each bound given both ways: what frame rate the annotators' frame numbers count in."""
        for frame, key in ((s, "start_time"), (e, "end_time")):
            try:
                t = float(seg.get(key)) if seg.get(key) is not None else None
            except (TypeError, ValueError):
                continue
            if t is not None and math.isfinite(t) and t >= IMPLIED_FPS_MIN_SECONDS:
                self.ratios.append(frame / t)


#: the one deliberate drop (policy, not a problem with the file): not a finding
VISUAL_ANCHOR = "visual anchor track (skipped as in the TalkNet port)"


def _num(entry: dict, *names):
    for n in names:
        v = entry.get(n)
        if v is not None:
            return v
    return None

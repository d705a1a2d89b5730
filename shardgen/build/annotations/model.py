"""The in-memory annotation model both parsers fill: persons with face boxes and voice ranges, per video."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

Box = tuple[float, float, float, float]  # x, y (top-left), width, height


@dataclass
class Person:
    """One person of a video: face boxes by 0-based frame, and inclusive voice ranges."""

    person_id: str
    camera_wearer: bool = False
    track_ids: list[str] = field(default_factory=list)
    boxes: dict[int, Box] = field(default_factory=dict)
    voice: list[tuple[int, int]] = field(default_factory=list)
    normalised_boxes: bool = False  # AVA: boxes in 0-1 units of the frame size


@dataclass
class VideoAnnotations:
    """Everything the labels of one video's clips are computed from."""

    video_id: str
    source: str  # "ego4d-av" | "ava-csv"
    file: str  # the annotation file's name, for provenance
    persons: list[Person] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    findings: list = field(default_factory=list)  # build.findings.Finding about this video's annotation
    implied_fps: float | None = None  # frame rate its frame numbers and times imply (Ego4D voice segments)
    implied_from: int = 0  # how many segment bounds gave both

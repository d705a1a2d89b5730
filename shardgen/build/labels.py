"""Per-frame label arrays of one clip, computed from a video's annotations (pure functions).

For a clip covering 0-based source frames ``[start, start + n_real)`` (plus ``pad`` padded
frames at the end, which get no labels):

* ``visible[i]`` = 1 when any person who is not the camera wearer has a face box in frame i;
* ``voice[i]``   = 1 when any voice segment (any person, camera wearer included) covers frame i;
* ``boxes[p, i]`` = person p's box (x, y, w, h in source pixels), NaN where absent;
* ``speaking[p, i]`` = 1 when one of person p's voice segments covers frame i
  (segments are inclusive: ``start_frame .. end_frame``).

Persons keep the annotation file's order and the same rows in every clip of a video, so row p
is the same person throughout. Boxes wholly outside the frame are dropped and counted; boxes
partly outside are kept as annotated (the crop recipe pads with gray).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .annotations import VideoAnnotations


@dataclass
class ClipLabels:
    visible: np.ndarray  # uint8 [T]
    voice: np.ndarray  # uint8 [T]
    boxes: np.ndarray  # float32 [P, T, 4]
    speaking: np.ndarray  # uint8 [P, T]
    persons: list[dict]
    provenance: dict
    dropped: Counter = field(default_factory=Counter)


def clip_labels(
    ann: VideoAnnotations | None,
    start: int,
    n_real: int,
    pad: int = 0,
    frame_size: tuple[int, int] | None = None,
) -> ClipLabels:
    n = n_real + pad
    if ann is None:
        return ClipLabels(
            visible=np.zeros(n, np.uint8),
            voice=np.zeros(n, np.uint8),
            boxes=np.full((0, n, 4), np.nan, np.float32),
            speaking=np.zeros((0, n), np.uint8),
            persons=[],
            provenance={"present": False, "source": "none", "file": None,
                        "note": "no annotations were given: label arrays are all zero"},
        )
    persons = ann.persons
    boxes = np.full((len(persons), n, 4), np.nan, np.float32)
    speaking = np.zeros((len(persons), n), np.uint8)
    voice = np.zeros(n, np.uint8)
    dropped: Counter = Counter()
    W, H = frame_size if frame_size else (None, None)
    for p, person in enumerate(persons):
        for i in range(n_real):
            box = person.boxes.get(start + i)
            if box is None:
                continue
            x, y, w, h = box
            if person.normalised_boxes:
                if W is None:
                    raise ValueError("normalised (AVA) boxes need the frame size")
                x, y, w, h = x * W, y * H, w * W, h * H
            if W is not None and (x >= W or y >= H or x + w <= 0 or y + h <= 0):
                dropped["box wholly outside the frame"] += 1
                continue
            boxes[p, i] = (x, y, w, h)
        for s, e in person.voice:
            lo, hi = max(s - start, 0), min(e - start + 1, n_real)
            if lo < hi:
                speaking[p, lo:hi] = 1
                voice[lo:hi] = 1
    seen = ~np.isnan(boxes[..., 0])
    wearer = np.array([p.camera_wearer for p in persons], bool)
    visible = (seen[~wearer].any(axis=0) if len(persons) else np.zeros(n, bool)).astype(np.uint8)
    return ClipLabels(
        visible=visible,
        voice=voice,
        boxes=boxes,
        speaking=speaking,
        persons=[
            {"person_id": p.person_id, "camera_wearer": p.camera_wearer, "track_ids": list(p.track_ids),
             "frames_with_box": int(seen[i].sum())}
            for i, p in enumerate(persons)
        ],
        provenance={"present": True, "source": ann.source, "file": ann.file,
                    "frame_numbering": "0-based (frame f is img_{f+1:05d}.jpg)",
                    "voice_segments": "inclusive start_frame..end_frame"},
        dropped=dropped,
    )

"""Why a clip (or a whole video) is not built: a code, decided where the problem is found, and a message.

The build report counts skips by code (``skip_reasons``) and lists each with its message. The
code travels with the message from the check that found the problem (frames, wav, annotations,
tail policy), so grouping never depends on how a message happens to be worded. The codes' values
are the labels build-report.json uses; three read as cut-off words before ("frames directory",
"no img_", "tail of") and now say what happened ("video not found", "no frames", "short tail").

A tail left out by ``--tail`` / ``--min-clip-seconds`` is the policy asked for (:data:`POLICY`), not
a problem: it is counted, but it does not make the build's exit status 3 and the summary does not
list it video by video.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple


class SkipCode(StrEnum):
    NO_FRAMES_DIRECTORY = "video not found"
    NO_FRAMES = "no frames"
    MISSING_FRAME = "missing frame"
    ZERO_BYTE_FRAME = "zero-byte frame"
    NOT_A_JPEG = "not a JPEG"
    TRUNCATED_JPEG = "truncated JPEG"
    UNREADABLE_FRAME = "unreadable frame"
    UNREADABLE_JPEG_HEADER = "unreadable JPEG header"
    MISSING_WAV = "missing wav"
    UNREADABLE_WAV = "unreadable wav"
    EMPTY_WAV = "empty wav"
    SHORT_TAIL = "short tail"
    NO_ANNOTATIONS = "no annotations"
    AMBIGUOUS_VIDEO_SOURCE = "ambiguous video source"
    VIDEO_DAMAGED = "video file damaged"
    NO_VIDEO_STREAM = "video file without a video stream"
    UNREADABLE_VIDEO = "unreadable video file"
    NO_VIDEO_FRAMES = "video file without frames"
    NO_FRAME_RATE = "no frame rate"  # --fps native and a source that states none


#: skips that are the policy asked for (--tail, --min-clip-seconds), not problems with the source
POLICY = frozenset({SkipCode.SHORT_TAIL})


class Reason(NamedTuple):
    """A problem found while probing: its code and the message naming the file."""

    code: SkipCode
    message: str


@dataclass
class Skip:
    """One clip (``key`` set) or whole video (``key`` None: no clip could be planned) left out, and why."""

    split: str
    video_id: str
    reason: Reason
    key: str | None = None
    start_frame: int | None = None
    n_frames: int | None = None

    @property
    def code(self) -> SkipCode:
        return self.reason.code

    @property
    def is_problem(self) -> bool:
        """Not the tail policy: something in the source kept this clip or video out."""
        return self.reason.code not in POLICY

    def to_json(self) -> dict:
        """The build report's row for this skip."""
        return {"split": self.split, "video_id": self.video_id, "reason": self.reason.message, "key": self.key,
                "start_frame": self.start_frame, "n_frames": self.n_frames, "policy": not self.is_problem}

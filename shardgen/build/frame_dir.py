"""A frame directory (``video_imgs/<id>/img_NNNNN.jpg``) as a source the planner cuts into clips.

This is the frame-directory half of the one planner (:mod:`shardgen.build.probe`): it says how
many frames the video spans and, per clip, whether every frame is a whole JPEG (structural check:
start/end markers, size, mtime; no decoding) and what the clip's resume fingerprint is made of.
Everything both source kinds share — the clip windows, the wav check, the annotation checks, skip
bookkeeping and the :class:`~shardgen.build.plan.ClipPlan` itself — is the planner's.
"""

from __future__ import annotations

from fractions import Fraction

from .plan import AudioChoice, BuildParams, PlannedFrames, Span, frame_sizes_digest
from .skips import Reason, SkipCode
from .source import SourceError, VideoFrames, check_jpeg_file, jpeg_size

KIND = "frames"


class FrameDirectory:
    """The frames of one video on disk, checked clip by clip."""

    kind = KIND

    def __init__(self, frames: VideoFrames, params: BuildParams):
        self.frames = frames
        self.name = f"video_imgs/{frames.video_id}"
        self.n_frames = frames.n_frames
        self.params = params
        self.fps: Fraction | None = params.frame_rate  # frames on disk state no rate: --fps gives it
        self.findings: list = []
        self.warnings: list[str] = []
        self.strict_problems: list[str] = []
        self._frame_size: tuple[int, int] | None = None

    def empty_reason(self) -> Reason | None:
        """Why the video has nothing to plan (None: it has frames)."""
        if self.n_frames == 0:
            return Reason(SkipCode.NO_FRAMES, f"no img_NNNNN.jpg frames in {self.name}")
        if self.fps is None:
            return Reason(SkipCode.NO_FRAME_RATE, f"--fps native: {self.name} is a frame directory, which states no "
                                                  "frame rate (only video files do): build it with --fps N")
        return None

    def without_wav(self, wav_name: str) -> AudioChoice | Reason:
        """A frame directory has no other audio: no wav, no clips."""
        return Reason(SkipCode.MISSING_WAV, f"missing wav: {wav_name}")

    def clip(self, span: Span, audio: AudioChoice) -> PlannedFrames | Reason:
        """Check every frame of ``span``; their exact sizes and mtimes go into the plan and the fingerprint."""
        sizes, mtimes = [], []
        for f in range(span.start, span.start + span.n_real):
            check = check_jpeg_file(self.frames.path(f))
            if check.problem:
                return check.problem
            sizes.append(check.size)
            mtimes.append(check.mtime_ns)
        if self._frame_size is None:  # one header read per video: every frame of a video has its size
            first = self.frames.path(span.start)
            try:
                self._frame_size = jpeg_size(first)
            except SourceError as exc:
                return Reason(SkipCode.UNREADABLE_JPEG_HEADER, str(exc).split(": ", 1)[-1] + f" ({first.name})")
        return PlannedFrames(
            frame_size=self._frame_size, sizes=tuple(sizes), frame_sizes=frame_sizes_digest(sizes),
            digest=f"{sizes}|{mtimes}|{audio.wav_size}:{audio.wav_mtime_ns}|{self.params.fps_key(self.fps)}",
        )

"""A video file (``videos/<id>.<ext>``) as a source the planner cuts into clips.

This is the video-file half of the one planner (:mod:`shardgen.build.probe`). A video file needs
a different look at the disk than a frame directory — one probe of the file (its packets'
timestamps, no decoding but the first frame) instead of one check per JPEG — but gives the same
kind of plan: the planner applies the same clip windows, wav and annotation checks, skip
bookkeeping and :class:`~shardgen.build.plan.ClipPlan` construction to both, so shards from both
look alike and one build can mix them.

Audio is ``wav/<id>.wav`` when that exists (sample 0 at the first frame, as for frame directories;
the planner checks it), else the file's audio stream by container time, else zeros (flagged;
``--strict`` refuses it).
"""

from __future__ import annotations

from array import array
from fractions import Fraction
from pathlib import Path

from .findings import Finding, FindingCode
from .plan import AudioChoice, BuildParams, PlannedFrames, Span, fmt_fps
from .skips import Reason, SkipCode
from .source import SourceError
from .video import VideoProbe, output_size, probe_file, stream_rate

KIND = "video_file"
#: planning estimate of a frame: the first frame's JPEG size times this (shard cutting and the disk pre-flight only)
EST_JPEG_MARGIN = 1.25


#: ``--fps`` against the stream's own rate: when more than this share of the output frames are repeats of
#: the frame before (or input frames are never shown), the clips are not the video as it was recorded —
#: a finding. Below it (29.97 fps built at 30: one repeat in a thousand) it is only a warning.
RESAMPLED_SHARE = 0.01


class VideoFile:
    """One probed video file: the fps filter's output slots, checked clip by clip against the damage point."""

    kind = KIND

    def __init__(self, probe: VideoProbe, params: BuildParams, fps: Fraction):
        self.probe = probe
        self.src = probe.source
        self.name = self.src.name
        self.n_frames = probe.nominal_slots
        self.params = params
        self.fps = fps
        self.warnings: list[str] = []
        self.strict_problems: list[str] = []
        self.findings: list[Finding] = []
        self.ffmpeg_log = list(probe.ffmpeg_log)
        self._check_rate()
        if probe.damage:
            self.warnings.append(probe.damage)
        if probe.rotation:
            self.warnings.append(f"{self.name} asks to be shown rotated by {probe.rotation} degrees: frames are stored "
                                 "as coded, unrotated (the ffmpeg CLI would rotate them), and annotations must be in "
                                 "coded pixels")
        self._frame_size = output_size(self.src.width, self.src.height, params.max_side)
        self._est = max(1024, int(probe.sample_jpeg_bytes * EST_JPEG_MARGIN))

    def empty_reason(self) -> Reason | None:
        return None  # probe_file raises for a file without frames

    def _check_rate(self) -> None:
        """What ffmpeg's fps filter does to this file at the build's rate: frames repeated or dropped per second."""
        p, n = self.probe, self.n_frames
        if not (p.repeated or p.dropped) or not n:
            return
        native = Fraction(self.src.native_fps)
        seconds = n / self.fps
        parts = [f"{what} {k} of its frames ({float(k / seconds):.1f} a second)"
                 for what, k in (("repeats", p.repeated), ("drops", p.dropped)) if k]
        message = (f"{self.name} runs at {fmt_fps(native) if native else 'an unstated rate'} fps and is built at "
                   f"{fmt_fps(self.fps)} fps: ffmpeg's fps filter {' and '.join(parts)} over {n} output frames"
                   + (f"; pass --fps {fmt_fps(native)} or --fps native to keep every frame once" if native else ""))
        if (p.repeated + p.dropped) / n > RESAMPLED_SHARE:
            self.findings.append(Finding(FindingCode.FPS_RESAMPLED, message))
        else:
            self.warnings.append(message)

    def without_wav(self, wav_name: str) -> AudioChoice | Reason:
        """No wav beside the file: its audio stream by container time, else zeros (flagged)."""
        if self.src.audio_stream is not None:
            self._warn_audio_coverage()
            return AudioChoice("stream")
        problem = f"{self.name} has no audio stream and {wav_name} does not exist: clips get zero audio (flagged)"
        self.warnings.append(problem)
        self.strict_problems.append(problem)
        return AudioChoice("none")

    def clip(self, span: Span, audio: AudioChoice) -> PlannedFrames | Reason:
        """The clip's output slots, unless they reach past the damage point."""
        end = span.start + span.n_real
        if end > len(self.probe.slot_pts):
            return Reason(SkipCode.VIDEO_DAMAGED, f"{self.probe.damage}; the clip needs frames up to "
                                                  f"{float(self.src.v0 + end / self.fps):.3f} s (container time)")
        p = self.params
        audio_digest = f"wav:{audio.wav_size}:{audio.wav_mtime_ns}" if audio.origin == "wav" else audio.origin
        return PlannedFrames(
            frame_size=self._frame_size, sizes=(self._est,) * span.n_real, frame_sizes="",
            digest=f"video|{self.src.size}:{self.src.mtime_ns}|{p.fps_key(self.fps)}|q{p.jpeg_quality}|m{p.max_side}"
                   f"|{audio_digest}",
            extra={"video": self.src, "frame_pts": array("q", self.probe.slot_pts[span.start:end]),
                   "audio_from": audio.origin},
        )

    def _warn_audio_coverage(self) -> None:
        """Say so when the audio stream starts after the first frame or ends before the last (zeros there, flagged)."""
        src, fps = self.src, self.fps
        v0, v1 = src.v0, src.v0 + Fraction(self.n_frames) / fps
        a0 = Fraction(src.audio_start)
        a1 = Fraction(src.audio_end) if src.audio_end is not None else None
        if a0 - v0 > 1 / fps or (a1 is not None and v1 - a1 > 1 / fps):
            self.warnings.append(
                f"{src.name}: audio stream covers {float(a0):.3f}-{float(a1) if a1 is not None else float('nan'):.3f} s, "
                f"the frames {float(v0):.3f}-{float(v1):.3f} s (container time): clip audio outside the stream is "
                "zero-padded and flagged (audio_padded_samples)")


def open_video_file(path: Path, name: str, params: BuildParams, native_fps: Fraction | None = None) -> VideoFile:
    """Probe the file at ``--fps``, or with ``--fps native`` at its stream's rate (``native_fps`` when the
    driver looked it up already). Raises :class:`~shardgen.build.source.SourceError` with a skip code
    when the file is unusable or, with ``--fps native``, states no rate."""
    fps = params.frame_rate or native_fps or stream_rate(path)
    if fps is None:
        raise SourceError(f"--fps native: {name} does not state its frame rate: build it with --fps N",
                          SkipCode.NO_FRAME_RATE)
    return VideoFile(probe_file(path, name, fps, params.jpeg_quality, params.max_side), params, fps)

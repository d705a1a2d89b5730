"""One listed video → its :class:`~shardgen.build.plan.VideoPlan`: the one planner for both source kinds.

A listed video is taken from ``video_imgs/<id>/`` when that directory exists, else from
``<videos>/<id>.<ext>`` (``--videos``, default ``DIR/videos``; ext one of
:data:`shardgen.build.video.VIDEO_EXTS`). The source kind is a small adapter
(:class:`~shardgen.build.frame_dir.FrameDirectory`, :class:`~shardgen.build.video_file.VideoFile`)
that answers two questions: how many frames the video spans (at which rate), and whether one
clip's frames are usable (and what its resume fingerprint is made of). Everything else happens
here, once, for both:

* the clip windows (:func:`shardgen.build.plan.plan_spans`) and the tails the policy skips;
* the audio: ``wav/<id>.wav`` when it exists (its header checked against the frames' length),
  else what the source kind offers without one;
* the annotation checks: boxes or voice past the last frame, frame numbers and times that imply
  another rate, a video the annotation files do not cover, and the annotation's own findings
  (unknown keys, empty persons, dropped entries);
* every skip, with its code and a message naming the file, every finding, and the
  :class:`~shardgen.build.plan.ClipPlan` of every clip that is built.

Only this planning step reads the source before writing; it decides nothing the plan's pure
arithmetic (:mod:`shardgen.build.plan`) could not redo.
"""

from __future__ import annotations

import dataclasses
import hashlib
from fractions import Fraction
from pathlib import Path

import soundfile as sf

from ..core import format as fmt
from .annotations import VideoAnnotations, annotation_digest
from .annotations.ego4d import VISUAL_ANCHOR
from .findings import Finding, FindingCode
from .frame_dir import FrameDirectory
from .plan import AudioChoice, BuildParams, ClipPlan, Span, VideoPlan, estimate_clip_bytes, fmt_fps, plan_spans
from .skips import Reason, Skip, SkipCode
from .source import SourceError, scan_frames, wav_path
from .video import VIDEO_EXTS, find_video_files
from .video_file import VideoFile, open_video_file

#: an annotation's frame numbers and times that imply a rate this far from the build's are a finding
#: (25 vs 30 fps is 17 %; rounding frame numbers moves the estimate by well under 1 %)
RATE_TOLERANCE = 0.03
#: rates cameras and extraction tools use: frames over a wav's length that land within 1 % of one of these
#: (and not on --fps) mean frames extracted at that rate, not a wav that is merely short or long
COMMON_RATES = (Fraction(24000, 1001), 24, 25, Fraction(30000, 1001), 30, 50, Fraction(60000, 1001), 60)


def probe_source(
    data_dir: Path, split: str, video_id: str, params: BuildParams,
    annotations: dict[str, VideoAnnotations] | None, videos_dir: Path | None = None,
    native_fps: Fraction | None = None,
) -> VideoPlan:
    """Plan one listed video from whichever source it has; every clip is planned or skipped with a reason.

    ``native_fps``: with ``--fps native``, the video file's rate as the driver found it (else looked up here)."""
    ann = annotations.get(video_id) if annotations is not None else None
    opened = open_source(data_dir, split, video_id, params, videos_dir, native_fps)
    vp = opened if isinstance(opened, VideoPlan) else plan_video(opened, data_dir, split, video_id, params, annotations)
    vp.annotated = None if annotations is None else ann is not None
    if ann is not None:  # what is wrong with the annotation itself, whether or not the video could be planned
        vp.findings += [dataclasses.replace(f, split=split, video_id=video_id) for f in annotation_findings(ann)]
    return vp


def open_source(data_dir: Path, split: str, video_id: str, params: BuildParams, videos_dir: Path | None,
                native_fps: Fraction | None = None) -> FrameDirectory | VideoFile | VideoPlan:
    """The adapter of the video's source kind, or a plan that skips the whole video with the reason."""
    frames = scan_frames(data_dir, video_id)
    if frames is not None:
        return FrameDirectory(frames, params)
    vdir = Path(videos_dir) if videos_dir is not None else data_dir / "videos"
    files = find_video_files(vdir, video_id)

    def whole(reason: Reason, **kw) -> VideoPlan:
        return VideoPlan(split, video_id, skips=[Skip(split, video_id, reason)], **kw)

    if not files:
        reason = f"frames directory video_imgs/{video_id} is missing"
        if vdir.is_dir():  # a corpus with video files: say where the file was looked for
            where = f"{vdir}/{video_id}" if videos_dir is not None else f"videos/{video_id}"
            reason += f", and so is a video file {where}.{{{','.join(VIDEO_EXTS)}}}"
        return whole(Reason(SkipCode.NO_FRAMES_DIRECTORY, reason), found=False)
    if len(files) > 1:
        return whole(Reason(SkipCode.AMBIGUOUS_VIDEO_SOURCE, f"ambiguous video source: "
                            f"{', '.join(p.name for p in files)} all exist; keep one"), found=True, source="video_file")
    try:
        return open_video_file(files[0], relative_name(data_dir, files[0]), params, native_fps)
    except SourceError as exc:
        return whole(Reason(exc.code or SkipCode.UNREADABLE_VIDEO, str(exc)), found=True, source="video_file")


def plan_video(src: FrameDirectory | VideoFile, data_dir: Path, split: str, video_id: str, params: BuildParams,
               annotations: dict[str, VideoAnnotations] | None) -> VideoPlan:
    """The common checks and the one construction of a video's clip plans, for either source kind."""
    vp = VideoPlan(split, video_id, found=True, n_frames=src.n_frames, source=src.kind, fps=src.fps)

    def skip(span: Span | None, reason: Reason) -> None:
        if span is None:
            vp.skips.append(Skip(split, video_id, reason))
        else:
            vp.skips.append(Skip(split, video_id, reason, fmt.clip_key(video_id, span.start), span.start, span.n_real))

    def finding(code: FindingCode, message: str) -> None:
        vp.findings.append(Finding(code, message, video_id, split))

    empty = src.empty_reason() or _too_short(params, src.fps)
    if empty:
        skip(None, empty)
        return _adopt(vp, src, split, video_id)
    fps = src.fps
    spans, tails = plan_spans(src.n_frames, params.clip_frames_at(fps), params.stride_frames_at(fps), params.tail,
                              params.min_tail_frames_at(fps))
    for span, reason in tails:
        skip(span, reason)

    audio = choose_audio(src, data_dir, video_id, fps, vp.warnings, finding)
    ann = annotations.get(video_id) if annotations is not None else None
    past = frames_past_the_end(ann, src.n_frames)
    if past:  # labels exist only for frames the source has: say so rather than drop them unseen
        finding(FindingCode.PAST_THE_END,
                f"{ann.file}: annotations of {video_id} reach frame {max(past)} but {src.name} ends at frame "
                f"{src.n_frames - 1} (0-based, at {fmt_fps(fps)} fps): {len(past)} box(es)/voice segment end(s) past "
                "the last frame are unused (wrong --fps, or frames missing at the end?)")
    if ann is not None and ann.implied_fps and abs(ann.implied_fps / float(fps) - 1) > RATE_TOLERANCE:
        finding(FindingCode.FPS_CONTRADICTED,
                f"{ann.file}: the voice segments of {video_id} give frame numbers and times that imply "
                f"{ann.implied_fps:.3f} fps (median frame/time of {ann.implied_from} segment bounds), but {src.name} "
                f"is built at {fmt_fps(fps)} fps: its boxes and voice would land on frames of another time "
                f"(pass --fps {ann.implied_fps:.4g}{' or --fps native' if src.kind == 'video_file' else ''})")
    video_reason = audio if isinstance(audio, Reason) else unannotated(annotations, ann, params)
    if video_reason:
        for span in spans:
            skip(span, video_reason)
        return _adopt(vp, src, split, video_id)
    n_persons = len(ann.persons) if ann else 0
    for span in spans:
        planned = src.clip(span, audio)
        if isinstance(planned, Reason):
            skip(span, planned)
            continue
        key = fmt.clip_key(video_id, span.start)
        end = span.start + span.n_real
        vp.clips.append(ClipPlan(
            key=key, split=split, video_id=video_id, start=span.start, n_real=span.n_real, pad=span.pad,
            frame_size=planned.frame_size, frame_sizes=planned.frame_sizes,
            planned_bytes=estimate_clip_bytes(params, planned.sizes, span.n_frames, n_persons, len(key) + 20, fps),
            source_digest=hashlib.sha256(
                f"{span}|{planned.digest}|{annotation_digest(ann, span.start, end)}".encode()).hexdigest(),
            fps=fps, **(planned.extra or {}),
        ))
    return _adopt(vp, src, split, video_id)


def _adopt(vp: VideoPlan, src: FrameDirectory | VideoFile, split: str, video_id: str) -> VideoPlan:
    """Take over what the adapter noticed while looking at its source."""
    vp.warnings += src.warnings
    vp.strict_problems += src.strict_problems
    vp.findings += [dataclasses.replace(f, split=split, video_id=video_id) for f in src.findings]
    vp.ffmpeg_log += getattr(src, "ffmpeg_log", [])
    return vp


def _too_short(params: BuildParams, fps: Fraction) -> Reason | None:
    """With ``--fps native`` a clip's length in frames depends on the video: one shorter than a frame is a skip."""
    try:
        params.check_frames(fps)
    except ValueError as exc:
        return Reason(SkipCode.NO_FRAME_RATE, str(exc))
    return None


def choose_audio(src: FrameDirectory | VideoFile, data_dir: Path, video_id: str, fps: Fraction,
                 warnings: list[str], finding) -> AudioChoice | Reason:
    """``wav/<id>.wav`` when it exists (checked), else whatever the source kind offers without one."""
    wav = wav_path(data_dir, video_id)
    if not wav.is_file():
        return src.without_wav(f"wav/{video_id}.wav")
    problem = check_wav(wav, src.n_frames, fps, warnings, src.name, finding)
    if problem:
        return problem
    st = wav.stat()
    return AudioChoice("wav", st.st_size, st.st_mtime_ns)


def annotation_findings(ann: VideoAnnotations) -> list[Finding]:
    """What the annotation file says wrong about one video: its own findings, and the entries dropped."""
    dropped = {reason: n for reason, n in sorted(ann.dropped.items()) if reason != VISUAL_ANCHOR}
    out = list(ann.findings)
    if dropped:
        out.append(Finding(FindingCode.ENTRIES_DROPPED, f"{ann.file}: {sum(dropped.values())} annotation entries of "
                           f"{ann.video_id} dropped: " + ", ".join(f"{r} ({n})" for r, n in dropped.items())))
    return out


def frames_past_the_end(ann: VideoAnnotations | None, n_frames: int) -> list[int]:
    """Annotated frames (boxes, voice-segment ends) at or past ``n_frames``: unused, worth a finding."""
    if not ann:
        return []
    return [f for p in ann.persons for f in p.boxes if f >= n_frames] + [e for p in ann.persons for _, e in p.voice if e >= n_frames]


def unannotated(annotations: dict[str, VideoAnnotations] | None, ann: VideoAnnotations | None,
                params: BuildParams) -> Reason | None:
    """Why a video the split's annotation files do not cover is skipped (None: it is covered, or allowed)."""
    if annotations is not None and ann is None and not params.allow_unannotated:
        return Reason(SkipCode.NO_ANNOTATIONS, "no annotations for this video in the split's annotation file "
                                               "(--allow-unannotated builds it unlabelled)")
    return None


def check_wav(path: Path, n_frames: int, fps, warnings: list[str], frames_name: str = "the frames",
              finding=None) -> Reason | None:
    """Why the wav cannot be used (None: it can). A length that disagrees with the frames by more than a
    frame is a warning; when frames over the wav's length give another common rate (200 frames over
    8 s: 25 fps, built at 30) it is a finding too: a wrong ``--fps`` drifts audio and labels apart."""
    try:
        info = sf.info(str(path))
    except Exception as exc:
        return Reason(SkipCode.UNREADABLE_WAV, f"unreadable wav wav/{path.name} ({exc})")
    if info.frames == 0:
        return Reason(SkipCode.EMPTY_WAV, f"empty wav wav/{path.name}")
    video_s = n_frames / float(fps)
    audio_s = info.frames / info.samplerate
    implied = n_frames / audio_s
    rate = next((r for r in COMMON_RATES if abs(implied / float(r) - 1) < 0.01), None)
    if finding is not None and rate is not None and abs(implied / float(fps) - 1) > RATE_TOLERANCE:
        finding(FindingCode.FPS_CONTRADICTED,
                f"wav/{path.name} is {audio_s:.3f} s and {frames_name} has {n_frames} frames: that is {fmt_fps(rate)} "
                f"fps, but it is built at {fmt_fps(fps)} fps: audio and labels would drift apart "
                f"(pass --fps {fmt_fps(rate)})")
    if abs(audio_s - video_s) > 1.0 / float(fps):
        what = "shorter" if audio_s < video_s else "longer"
        warnings.append(
            f"wav/{path.name} is {audio_s:.3f} s, {what} than the {video_s:.3f} s of frames"
            + (": clips past its end are zero-padded and flagged" if what == "shorter" else ": the extra audio is unused")
        )
    return None


def relative_name(data_dir: Path, path: Path) -> str:
    """How reports name a file: relative to the source directory when inside it."""
    try:
        return str(path.relative_to(data_dir))
    except ValueError:
        return str(path)

"""One video on disk → its :class:`~shardgen.build.plan.VideoPlan`: the only planning step that reads the source.

For each clip the probe checks every frame structurally (JPEG start/end markers, size, mtime),
the wav's header and the annotations, then records either a :class:`~shardgen.build.plan.ClipPlan`
(with its exact frame sizes and a fingerprint of its sources, for resume) or a
:class:`~shardgen.build.skips.Skip` with the reason. Clip windows come from the pure
:func:`shardgen.build.plan.plan_spans`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import soundfile as sf

from .annotations import VideoAnnotations, annotation_digest
from ..core import format as fmt
from .plan import BuildParams, ClipPlan, Span, VideoPlan, estimate_clip_bytes, frame_sizes_digest, plan_spans
from .skips import Reason, Skip, SkipCode
from .source import SourceError, check_jpeg_file, jpeg_size, scan_frames, wav_path


def probe_video(
    data_dir: Path, split: str, video_id: str, params: BuildParams,
    annotations: dict[str, VideoAnnotations] | None,
) -> VideoPlan:
    """Look at one video on disk and plan its clips; every clip is planned or skipped with a reason."""
    frames = scan_frames(data_dir, video_id)
    if frames is None:
        return VideoPlan(split, video_id, found=False,
                         skips=[Skip(split, video_id, Reason(SkipCode.NO_FRAMES_DIRECTORY, f"frames directory video_imgs/{video_id} is missing"))])
    vp = VideoPlan(split, video_id, found=True, n_frames=frames.n_frames)
    if frames.n_frames == 0:
        vp.skips.append(Skip(split, video_id, Reason(SkipCode.NO_FRAMES, f"no img_NNNNN.jpg frames in video_imgs/{video_id}")))
        return vp
    spans, tails = plan_spans(frames.n_frames, params.clip_frames, params.stride_frames, params.tail, params.min_tail_frames)

    def skip(span: Span, reason: Reason) -> None:
        vp.skips.append(Skip(split, video_id, reason, fmt.clip_key(video_id, span.start), span.start, span.n_real))

    for span, reason in tails:
        skip(span, reason)

    video_reason = None
    wav = wav_path(data_dir, video_id)
    if not wav.is_file():
        video_reason = Reason(SkipCode.MISSING_WAV, f"missing wav: wav/{video_id}.wav")
    else:
        video_reason = check_wav(wav, frames.n_frames, params.fps, vp.warnings)
    ann = annotations.get(video_id) if annotations is not None else None
    past = frames_past_the_end(ann, frames.n_frames)
    if past:  # labels exist only for frames with an image: say so rather than drop them unseen
        vp.warnings.append(f"annotations reach frame {max(past)} but video_imgs/{video_id} ends at frame {frames.n_frames - 1} "
                           f"(0-based): {len(past)} box(es)/voice segment end(s) past the last image are unused "
                           "(wrong --fps, or frames missing at the end?)")
    video_reason = video_reason or unannotated(annotations, ann, params)
    if video_reason:
        for span in spans:
            skip(span, video_reason)
        return vp

    frame_size = None
    n_persons = len(ann.persons) if ann else 0
    wav_st = wav.stat()
    video_digest = f"{wav_st.st_size}:{wav_st.st_mtime_ns}|{params.fps}"
    for span in spans:
        sizes, mtimes = [], []
        problem = None
        for f in range(span.start, span.start + span.n_real):
            check = check_jpeg_file(frames.path(f))
            problem = check.problem
            if problem:
                break
            sizes.append(check.size)
            mtimes.append(check.mtime_ns)
        if problem:
            skip(span, problem)
            continue
        if frame_size is None:
            try:
                frame_size = jpeg_size(frames.path(span.start))
            except SourceError as exc:
                skip(span, Reason(SkipCode.UNREADABLE_JPEG_HEADER, str(exc).split(": ", 1)[-1] + f" ({frames.path(span.start).name})"))
                continue
        key = fmt.clip_key(video_id, span.start)
        vp.clips.append(ClipPlan(
            key=key, split=split, video_id=video_id, start=span.start, n_real=span.n_real, pad=span.pad,
            frame_size=frame_size, frame_sizes=frame_sizes_digest(sizes),
            planned_bytes=estimate_clip_bytes(params, tuple(sizes), span.n_real + span.pad, n_persons, len(key) + 20),
            source_digest=hashlib.sha256(
                f"{span}|{sizes}|{mtimes}|{video_digest}|{annotation_digest(ann, span.start, span.start + span.n_real)}".encode()
            ).hexdigest(),
        ))
    return vp


def frames_past_the_end(ann: VideoAnnotations | None, n_frames: int) -> list[int]:
    """Annotated frames (boxes, voice-segment ends) at or past ``n_frames``: unused, worth a warning."""
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


def check_wav(path: Path, n_frames: int, fps: float, warnings: list[str]) -> Reason | None:
    try:
        info = sf.info(str(path))
    except Exception as exc:
        return Reason(SkipCode.UNREADABLE_WAV, f"unreadable wav wav/{path.name} ({exc})")
    if info.frames == 0:
        return Reason(SkipCode.EMPTY_WAV, f"empty wav wav/{path.name}")
    video_s = n_frames / float(fps)
    audio_s = info.frames / info.samplerate
    if abs(audio_s - video_s) > 1.0 / float(fps):
        what = "shorter" if audio_s < video_s else "longer"
        warnings.append(
            f"wav/{path.name} is {audio_s:.3f} s, {what} than the {video_s:.3f} s of frames"
            + (": clips past its end are zero-padded and flagged" if what == "shorter" else ": the extra audio is unused")
        )
    return None

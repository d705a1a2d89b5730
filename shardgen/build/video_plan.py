"""Which source a listed video is built from, and the clip plan of a video file.

Why a module of its own: :mod:`shardgen.build.plan` plans frame directories; a video file needs a
different look at the disk (one probe of the file instead of one check per JPEG) but must give
the same kind of plan — the same clip spans, keys, skips with reasons and resume fingerprints —
so that shards from both look alike and one build can mix them.

A listed video is taken from ``video_imgs/<id>/`` when that directory exists, else from
``<videos>/<id>.<ext>`` (``--videos``, default ``DIR/videos``; ext one of
:data:`shardgen.build.video.VIDEO_EXTS`). Its audio is ``wav/<id>.wav`` when that exists (sample 0 at the
first frame, as for frame directories), else the file's audio stream by container time, else zeros
(flagged; ``--strict`` refuses it).
"""

from __future__ import annotations

import hashlib
from array import array
from fractions import Fraction
from pathlib import Path

from .annotations import VideoAnnotations, annotation_digest
from ..core import format as fmt
from .plan import BuildParams, ClipPlan, Span, VideoPlan, estimate_clip_bytes, plan_spans
from .probe import check_wav, frames_past_the_end, probe_video, unannotated
from .skips import Reason, Skip, SkipCode
from .source import SourceError, wav_path
from .video import VIDEO_EXTS, find_video_files, output_size, probe_file

#: planning estimate of a frame: the first frame's JPEG size times this (shard cutting and the disk pre-flight only)
EST_JPEG_MARGIN = 1.25


def probe_source(
    data_dir: Path, split: str, video_id: str, params: BuildParams,
    annotations: dict[str, VideoAnnotations] | None, videos_dir: Path | None = None,
) -> VideoPlan:
    """Plan one listed video from whichever source it has (frame directory first, then a video file)."""
    if (data_dir / "video_imgs" / video_id).is_dir():
        return probe_video(data_dir, split, video_id, params, annotations)
    vdir = Path(videos_dir) if videos_dir is not None else data_dir / "videos"
    files = find_video_files(vdir, video_id)
    if not files:
        reason = f"frames directory video_imgs/{video_id} is missing"
        if vdir.is_dir():  # a corpus with video files: say where the file was looked for
            where = f"{vdir}/{video_id}" if videos_dir is not None else f"videos/{video_id}"
            reason += f", and so is a video file {where}.{{{','.join(VIDEO_EXTS)}}}"
        return VideoPlan(split, video_id, found=False, skips=[Skip(split, video_id, Reason(SkipCode.NO_FRAMES_DIRECTORY, reason))])
    if len(files) > 1:
        return VideoPlan(split, video_id, found=True, source="video_file", skips=[Skip(split, video_id, Reason(
            SkipCode.AMBIGUOUS_VIDEO_SOURCE, f"ambiguous video source: {', '.join(p.name for p in files)} all exist; keep one"))])
    return probe_video_file(data_dir, split, video_id, files[0], params, annotations)


def _name(data_dir: Path, path: Path) -> str:
    try:
        return str(path.relative_to(data_dir))
    except ValueError:
        return str(path)


def _warn_audio_coverage(vp: VideoPlan, src, n_frames: int, fps: float) -> None:
    """Say so when the audio stream starts after the first frame or ends before the last (zeros there, flagged)."""
    v0, v1 = src.v0, src.v0 + Fraction(n_frames) / fmt.fps_fraction(fps)
    a0 = Fraction(src.audio_start)
    a1 = Fraction(src.audio_end) if src.audio_end is not None else None
    frame = 1 / fmt.fps_fraction(fps)
    if a0 - v0 > frame or (a1 is not None and v1 - a1 > frame):
        vp.warnings.append(
            f"{src.name}: audio stream covers {float(a0):.3f}-{float(a1) if a1 is not None else float('nan'):.3f} s, "
            f"the frames {float(v0):.3f}-{float(v1):.3f} s (container time): clip audio outside the stream is "
            "zero-padded and flagged (audio_padded_samples)")


def probe_video_file(
    data_dir: Path, split: str, video_id: str, path: Path, params: BuildParams,
    annotations: dict[str, VideoAnnotations] | None,
) -> VideoPlan:
    """Probe one video file and plan its clips; every clip is planned or skipped with a reason."""
    name = _name(data_dir, path)
    vp = VideoPlan(split, video_id, found=True, source="video_file")
    try:
        probe = probe_file(path, name, fmt.fps_fraction(params.fps), params.jpeg_quality, params.max_side)
    except SourceError as exc:
        vp.skips.append(Skip(split, video_id, Reason(exc.code or SkipCode.UNREADABLE_VIDEO, str(exc))))
        return vp
    src = probe.source
    vp.n_frames = probe.nominal_slots
    spans, tails = plan_spans(probe.nominal_slots, params.clip_frames, params.stride_frames, params.tail,
                              params.min_tail_frames)

    def skip(span: Span, reason: Reason) -> None:
        vp.skips.append(Skip(split, video_id, reason, fmt.clip_key(video_id, span.start), span.start, span.n_real))

    for span, reason in tails:
        skip(span, reason)

    wav = wav_path(data_dir, video_id)
    video_reason = None
    if wav.is_file():
        audio_from = "wav"
        video_reason = check_wav(wav, probe.nominal_slots, params.fps, vp.warnings)
        wst = wav.stat()
        audio_digest = f"wav:{wst.st_size}:{wst.st_mtime_ns}"
    elif src.audio_stream is not None:
        audio_from, audio_digest = "stream", "stream"
        _warn_audio_coverage(vp, src, probe.nominal_slots, params.fps)
    else:
        audio_from, audio_digest = "none", "none"
        problem = f"{name} has no audio stream and wav/{video_id}.wav does not exist: clips get zero audio (flagged)"
        vp.warnings.append(problem)
        vp.strict_problems.append(problem)
    if probe.damage:
        vp.warnings.append(probe.damage)
    if probe.rotation:
        vp.warnings.append(f"{name} asks to be shown rotated by {probe.rotation} degrees: frames are stored as coded, "
                           "unrotated (the ffmpeg CLI would rotate them), and annotations must be in coded pixels")
    ann = annotations.get(video_id) if annotations is not None else None
    past = frames_past_the_end(ann, probe.nominal_slots)
    if past:
        vp.warnings.append(f"annotations reach frame {max(past)} but {name} ends at frame {probe.nominal_slots - 1} "
                           f"(0-based, at --fps {params.fps}): {len(past)} box(es)/voice segment end(s) are unused")
    video_reason = video_reason or unannotated(annotations, ann, params)
    if video_reason:
        for span in spans:
            skip(span, video_reason)
        return vp

    size = output_size(src.width, src.height, params.max_side)
    est = max(1024, int(probe.sample_jpeg_bytes * EST_JPEG_MARGIN))
    n_persons = len(ann.persons) if ann else 0
    file_digest = (f"{src.size}:{src.mtime_ns}|{params.fps}|q{params.jpeg_quality}|m{params.max_side}|{audio_digest}")
    for span in spans:
        end = span.start + span.n_real
        if end > len(probe.slot_pts):
            skip(span, Reason(SkipCode.VIDEO_DAMAGED, f"{probe.damage}; the clip needs frames up to "
                                                      f"{float(src.v0) + end / float(params.fps):.3f} s (container time)"))
            continue
        key = fmt.clip_key(video_id, span.start)
        sizes = (est,) * span.n_real
        vp.clips.append(ClipPlan(
            key=key, split=split, video_id=video_id, start=span.start, n_real=span.n_real, pad=span.pad,
            frame_size=size, frame_sizes="",
            planned_bytes=estimate_clip_bytes(params, sizes, span.n_real + span.pad, n_persons, len(key) + 20),
            source_digest=hashlib.sha256(
                f"{span}|video|{file_digest}|{annotation_digest(ann, span.start, end)}".encode()).hexdigest(),
            video=src, frame_pts=array("q", probe.slot_pts[span.start:end]), audio_from=audio_from,
        ))
    return vp

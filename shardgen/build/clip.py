"""One planned clip → its tar members (name, bytes), in the format's member order.

This is the only place source bytes are read during a build. Frames are stored as the
original JPEG bytes; a frame whose size differs from the size seen at planning time means the
source changed under a running build, which would make the output depend on timing, so it is
an error rather than a skip. Clips of a video file are decoded here (:mod:`shardgen.build.video`) and
their audio taken by container time (:mod:`shardgen.build.video_audio`); the members are the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core import codecs
from ..core import format as fmt
from .annotations import VideoAnnotations
from .audio import cut_clip_audio, load_video_audio
from .derive import derived_members
from .labels import clip_labels
from .plan import BuildParams, ClipPlan, frame_sizes_digest
from .source import SourceError, frame_filename, wav_path
from .video import decode_clip
from .video_audio import cut_stream_audio, load_stream_audio


@dataclass
class BuildContext:
    """What every worker needs to turn plans into bytes (shipped once per worker)."""

    data_dir: Path
    params: BuildParams
    annotations: dict[str, VideoAnnotations] | None
    videos_dir: Path | None = None  # --videos: where video files are looked up (default data_dir/videos)
    decode_threads: int = 1  # FFmpeg decoding threads per worker (cores / workers, so none are oversubscribed)
    native_rates: dict | None = None  # --fps native: video id → its file's frame rate, as the driver found it


def clip_entry(clip: ClipPlan, ctx: BuildContext) -> tuple[str, list[tuple[str, bytes]], dict]:
    """``(key, members, info)``: what the writer stores, plus what the clip index keeps of the clip (its face tracks)."""
    members, labels = _members_and_labels(clip, ctx)
    return clip.key, members, {"tracks": [list(t) for t in fmt.person_tracks(labels.boxes)]}


def _frames_and_audio(clip: ClipPlan, ctx: BuildContext):
    """A frame-directory clip: the original JPEGs and the wav's samples."""
    frames_dir = ctx.data_dir / "video_imgs" / clip.video_id
    jpegs = [(frames_dir / frame_filename(clip.start + i)).read_bytes() for i in range(clip.n_real)]
    # an OSError (names the file) stays one: executors may retry it
    if frame_sizes_digest([len(j) for j in jpegs]) != clip.frame_sizes:
        raise SourceError(f"{frames_dir}: frames {frame_filename(clip.start)}..{frame_filename(clip.start + clip.n_real - 1)} "
                          "changed size since they were planned: the source changed during the build")
    audio = load_video_audio(wav_path(ctx.data_dir, clip.video_id))
    samples, audio_start, padded = cut_clip_audio(audio, clip.start, clip.n_real, clip.fps, clip.pad)
    return jpegs, samples, audio_start, padded, audio.info, None


def _video_frames_and_audio(clip: ClipPlan, ctx: BuildContext):
    """A video-file clip: decoded frames as JPEGs, audio from the wav or by container time from the stream."""
    src, params = clip.video, ctx.params
    st = Path(src.path).stat()
    if (st.st_size, st.st_mtime_ns) != (src.size, src.mtime_ns):
        raise SourceError(f"{src.path}: changed since it was planned (size or mtime): the source changed during the build")
    jpegs = decode_clip(src, list(clip.frame_pts), params.jpeg_quality, params.max_side, ctx.decode_threads)
    source = {**src.metadata(), "jpeg_quality": params.jpeg_quality, "max_side": params.max_side or None,
              "audio_from": clip.audio_from}
    if clip.audio_from == "wav":
        audio = load_video_audio(wav_path(ctx.data_dir, clip.video_id))
        samples, audio_start, padded = cut_clip_audio(audio, clip.start, clip.n_real, clip.fps, clip.pad)
        return jpegs, samples, audio_start, padded, audio.info, {**source, "audio_padded_start_samples": 0}
    stream = None
    if clip.audio_from == "stream":
        stream = load_stream_audio(src.path, src.name, src.size, src.mtime_ns, src.audio_stream)
    samples, audio_start, before, after = cut_stream_audio(stream, src.v0, clip.start, clip.n_real, clip.fps, clip.pad)
    info = stream.info if stream is not None else {"kind": "none", "reason": f"{src.name} has no audio stream"}
    return jpegs, samples, audio_start, before + after, info, {**source, "audio_padded_start_samples": before}


def _members_and_labels(clip: ClipPlan, ctx: BuildContext):
    params = ctx.params
    read = _video_frames_and_audio if clip.video is not None else _frames_and_audio
    jpegs, samples, audio_start, padded, audio_info, source = read(clip, ctx)
    jpegs.extend([jpegs[-1]] * clip.pad)

    ann = ctx.annotations.get(clip.video_id) if ctx.annotations is not None else None
    labels = clip_labels(ann, clip.start, clip.n_real, clip.pad, clip.frame_size)

    derived: list[tuple[str, bytes]] = []
    if params.derive:
        try:
            derived = derived_members(jpegs, labels.boxes, clip.frame_size, params.derive)
        except fmt.FormatError as exc:  # more persons than crop members can name; a frame or box no crop comes from
            raise fmt.FormatError(f"{clip.key}: {exc}") from None

    meta = fmt.make_metadata(
        key=clip.key, video_id=clip.video_id, split=clip.split, start_frame=clip.start,
        n_frames=clip.n_frames, fps=clip.fps, frame_size=clip.frame_size,
        audio_ext=params.audio_format, audio_start_sample=audio_start, audio_samples=len(samples),
        audio_padded_samples=padded, audio_source=audio_info, source=source,
        labels={**labels.provenance, "dropped": dict(sorted(labels.dropped.items()))},
        persons=labels.persons, pad_frames=clip.pad,
        derived=sorted({"small": "g", "crops": "c"}[d] for d in params.derive),
    )
    meta["originals"] = params.originals
    members = [
        (fmt.META_EXT, fmt.encode_metadata(meta)),
        (params.audio_format, codecs.encode_audio(samples, params.audio_format)),
        (fmt.VISIBLE_EXT, codecs.encode_npy(labels.visible)),
        (fmt.VOICE_EXT, codecs.encode_npy(labels.voice)),
        (fmt.BOXES_EXT, codecs.encode_npy(labels.boxes)),
        (fmt.SPEAKING_EXT, codecs.encode_npy(labels.speaking)),
    ]
    if params.originals:
        members.extend((fmt.frame_ext(i + 1), data) for i, data in enumerate(jpegs))
    members.extend(derived)
    members.sort(key=lambda m: fmt.member_order(m[0]))
    return [(f"{clip.key}.{ext}", data) for ext, data in members], labels

"""Video files as a frame source: find, probe, pick frames as ffmpeg's fps filter does, decode to JPEG.

Why this module exists: a listed video with no ``video_imgs/<id>/`` may be a file,
``DIR/videos/<id>.<ext>`` (or under ``--videos``). We decode it with FFmpeg's libraries through
PyAV (``av``: its wheels carry their own FFmpeg, so nothing outside pip is needed and the torch-free
builder stays torch-free) and never write an intermediate file.
torchcodec was the alternative: it returns torch tensors, each release needs its matching torch, and
it loads a system FFmpeg (4-8) at run time instead of carrying one; its public API is decoded frames
and samples, not packets (timestamps and flags without decoding), which probing and damage detection
here rely on.

**Which frame is clip frame f.** Exactly the f-th (0-based) frame that ``ffmpeg -i V -vf fps=FPS``
hands to its output — the fps filter's output, as ``-f framemd5`` or ``-fps_mode passthrough``
shows it (the image2 muxer's default CFR mode adds copies of the first frame in front when the
video stream starts after the file's start; we do not). The filter's rule, which
:func:`fps_slots` implements from the packets' timestamps alone (no decoding):

* timestamps are taken relative to the file's start time (the CLI's input offset), converted to
  output slots of 1/FPS with round-to-nearest, halves away from zero (``av_rescale_q_rnd`` NEAR_INF);
* the first slot is the first frame's; slot n shows the *last* frame whose slot is <= n (of two
  frames rounding to one slot the later wins; a slot no frame reaches repeats the previous frame);
* output ends at the slot of the end of the last frame (its timestamp + duration), rounded alike.

At a native rate equal to FPS this is simply every decoded frame; variable frame rate works by
timestamps. Clip frame i is at container time ``v0 + (start_frame + i) / fps``, v0 the first
frame's timestamp (the video stream's start): audio is cut at those container times
(:mod:`shardgen.build.video_audio`).

**Damage.** Probing demuxes every video packet (cheap: no decoding). A demuxer error, a packet
flagged corrupt (read short: a truncated file) or packets ending before the stream's stated
duration mark the damage at the decode timestamp of the first lost packet; no frame lost there can
be shown before that time (pts >= dts), so every slot before it is exactly known and the clips
before it are built, the rest skipped with a reason naming the file and the time.

**Determinism.** Every clip is decoded on its own (seek to the keyframe at or before its first
frame), its frames picked by timestamp, so the bytes do not depend on which worker decodes which
clip. YUV 4:2:0 frames go to libjpeg-turbo as planes (range-expanded from TV to full range with a
fixed table, resized with Pillow for ``--max-side``): no swscale, whose SIMD paths are not
bit-exact across CPUs. Other pixel formats go through swscale's RGB conversion.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import av.logging
import numpy as np
import simplejpeg
from PIL import Image

from .skips import SkipCode
from .source import SourceError

VIDEO_EXTS = ("mp4", "mkv", "mov", "webm", "avi")
#: libjpeg quality whose quantisation matches ffmpeg's ``-q:v 2`` MJPEG extraction (README: measured)
DEFAULT_JPEG_QUALITY = 90
_YUV420 = {"yuv420p": False, "yuvj420p": True}  # pixel format → already full range


@dataclass(frozen=True)
class VideoSource:
    """What probing learnt about one video file; shipped with each of its clip plans (small)."""

    path: str
    name: str  # as the report and metadata name it: videos/<id>.mp4
    size: int
    mtime_ns: int
    container: str
    stream: int  # video stream index
    codec: str
    native_fps: str  # "2997/100"; "0/1" when the container does not say
    width: int
    height: int
    pix_fmt: str
    time_base: str  # video stream time base "1/11988"
    video_start: str  # first frame's container time, exact seconds as "num/den"
    file_start_pts: int  # the CLI's input offset, in video time base units (subtracted before rounding)
    audio_stream: int | None
    audio_codec: str | None
    audio_start: str | None  # audio stream start, exact seconds "num/den"
    audio_end: str | None = None  # audio stream end as the container states it (start + duration), when it does

    @property
    def tb(self) -> Fraction:
        return Fraction(self.time_base)

    @property
    def v0(self) -> Fraction:
        return Fraction(self.video_start)

    def metadata(self) -> dict:
        """The clip metadata's ``source`` record (format.make_metadata)."""
        return {"kind": "video_file", "file": self.name, "container": self.container, "codec": self.codec,
                "native_fps": self.native_fps, "pix_fmt": self.pix_fmt, "size": [self.width, self.height],
                "video_start_time": float(self.v0),
                "audio_start_time": float(Fraction(self.audio_start)) if self.audio_start is not None else None,
                "audio_codec": self.audio_codec}


@dataclass
class VideoProbe:
    """A probed file: its facts, the frame timestamps of every output slot, and any damage."""

    source: VideoSource
    slot_pts: list[int]  # for each fps-filter output slot (clip frame index), the input frame's pts
    nominal_slots: int  # output slots the undamaged file would have (>= len(slot_pts))
    damage: str | None = None  # reason, naming the file and the time, when the file is damaged
    sample_jpeg_bytes: int = 0  # size of the first frame as encoded (the planning estimate per frame)
    rotation: int = 0  # degrees the container asks players to rotate by (not applied: frames are stored as coded)
    repeated: int = 0  # output slots that show the same input frame as the slot before (fps above the native rate)
    dropped: int = 0  # input frames no output slot shows (fps below the native rate)
    ffmpeg_log: list[str] = field(default_factory=list)  # FFmpeg's warnings and errors while probing


@contextlib.contextmanager
def captured_ffmpeg_log():
    """FFmpeg's own warnings and errors while the block runs, as ``[component] message`` lines for the
    report, instead of FFmpeg printing them to stderr (PyAV versions differ in what they print by
    default); the previous log level is restored."""
    previous = av.logging.get_level()
    av.logging.set_level(av.logging.WARNING)
    lines: list[str] = []
    try:
        with av.logging.Capture(local=False) as logs:
            yield lines
    finally:
        av.logging.set_level(previous)
        lines.extend(f"[{name}] {message.strip()}" for _, name, message in logs)


def describe_ffmpeg_error(exc: BaseException) -> str:
    """An FFmpeg error as a reader wants it: what failed and FFmpeg's own last word, without the errno
    and the path the message names already (``Invalid data found when processing input; FFmpeg: moov
    atom not found``)."""
    what = getattr(exc, "strerror", None) or str(exc)
    log = getattr(exc, "log", None)
    if log and len(log) == 3 and str(log[2]).strip():
        what += f"; FFmpeg: {str(log[2]).strip()}"
    return what


def stream_rate(path: Path) -> Fraction | None:
    """A video file's frame rate as its container states it (the video stream's average rate), or None
    when the file does not open, has no video stream or does not say: ``--fps native`` cuts it at this."""
    try:
        with captured_ffmpeg_log(), av.open(str(path)) as container:
            rate = container.streams.video[0].average_rate if container.streams.video else None
    except (av.FFmpegError, OSError):
        return None
    return Fraction(rate) if rate else None


def find_video_files(directory: Path, video_id: str) -> list[Path]:
    """``<directory>/<video_id>.<ext>`` for every supported extension that exists."""
    return [p for p in (Path(directory) / f"{video_id}.{ext}" for ext in VIDEO_EXTS) if p.is_file()]


def round_near_inf(x: Fraction) -> int:
    """FFmpeg's AV_ROUND_NEAR_INF: nearest integer, halves away from zero (exact)."""
    x = Fraction(x)
    n = int(abs(x) + Fraction(1, 2))
    return n if x >= 0 else -n


def fps_slots(pts: list[int], tb: Fraction, offset: int, fps: Fraction, end_pts: int) -> list[int]:
    """Index into sorted ``pts`` of the frame ffmpeg's fps filter outputs in each of its slots.

    ``offset`` is subtracted from every timestamp first (the CLI's input offset, in ``tb`` units);
    ``end_pts`` is where the input ends (last frame's pts + duration, or the damage point).
    """
    if not pts:
        return []
    scale = tb * fps
    r = [round_near_inf((p - offset) * scale) for p in pts]
    end = round_near_inf((end_pts - offset) * scale)
    out, i = [], 0
    for n in range(r[0], end):
        while i + 1 < len(r) and r[i + 1] <= n:
            i += 1
        out.append(i)
    return out


def probe_file(path: Path, name: str, fps: Fraction, quality: int = DEFAULT_JPEG_QUALITY, max_side: int = 0) -> VideoProbe:
    """Open a video file, demux its video packets and plan the fps filter's output slots.

    The first frame is decoded and encoded too: it proves the decoder works, and its JPEG size is
    the planning estimate of a frame (shard cutting, the disk pre-flight). Raises
    :class:`SourceError` naming the file when it cannot be opened, has no video stream or its
    first frame does not decode.
    """
    st = path.stat()
    with captured_ffmpeg_log() as log:  # opening and demuxing only: no decoder threads run under it
        try:
            container = av.open(str(path))
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(f"{name}: unreadable video file ({describe_ffmpeg_error(exc)})",
                              SkipCode.UNREADABLE_VIDEO) from None
        with container:
            source, slots, pts, nominal, damage_dts, damage_why = _demux(container, path, name, st, fps)
    sample, rotation = _first_frame_jpeg(path, name, quality, max_side)
    damage = None
    if damage_dts is not None:
        damage = f"{name} is damaged at {float(damage_dts * source.tb):.3f} s (container time): {damage_why}"
    repeated = sum(1 for a, b in zip(slots, slots[1:]) if a == b)
    dropped = (slots[-1] + 1 - len(set(slots))) if slots else 0
    return VideoProbe(source, [pts[i] for i in slots], nominal, damage, len(sample), rotation, repeated, dropped, log)


def _demux(container, path: Path, name: str, st, fps: Fraction):
    """Every video packet's timestamps (no decoding), the damage point if any, and the fps filter's slots."""
    if not container.streams.video:
        raise SourceError(f"{name}: no video stream", SkipCode.NO_VIDEO_STREAM)
    vs = container.streams.video[0]
    aus = container.streams.audio[0] if container.streams.audio else None
    tb = vs.time_base
    packets, damage_dts, damage_why = [], None, None
    try:
        for pkt in container.demux(vs):
            if pkt.size == 0 or pkt.is_discard:
                continue
            ts = pkt.pts if pkt.pts is not None else pkt.dts
            if ts is None:
                continue
            dts = pkt.dts if pkt.dts is not None else ts
            if pkt.is_corrupt:
                damage_dts, damage_why = dts, "a packet is cut short or corrupt"
                break
            packets.append((ts, dts, pkt.duration or 0))
    except av.FFmpegError as exc:
        damage_why = f"demuxing failed ({describe_ffmpeg_error(exc)})"
        damage_dts = packets[-1][1] + max(1, packets[-1][2]) if packets else 0
    if not packets:
        raise SourceError(f"{name}: no decodable video frames" + (f" ({damage_why})" if damage_why else ""),
                          SkipCode.NO_VIDEO_FRAMES)
    pts = sorted(p[0] for p in packets)
    last = max(packets, key=lambda p: p[0])
    frame_dur = last[2] or (round_near_inf(1 / (Fraction(vs.average_rate) * tb)) if vs.average_rate else 1)
    clean_end = last[0] + frame_dur
    stated = _stated_end(vs)
    nominal_end = max(clean_end, stated) if stated is not None else clean_end
    if damage_dts is None and nominal_end - clean_end > frame_dur:  # the stream says it goes on
        # the last packet read may itself be cut short without the demuxer saying so (matroska): not used
        damage_dts, damage_why = packets[-1][1], "the file ends before its stated duration (truncated)"
    file_start_us = container.start_time if container.start_time is not None else 0
    offset = round_near_inf(Fraction(file_start_us, 1_000_000) / tb)
    end = min(clean_end, damage_dts) if damage_dts is not None else clean_end
    slots = fps_slots(pts, tb, offset, fps, end)
    nominal = len(fps_slots(pts, tb, offset, fps, nominal_end)) if damage_dts is not None else len(slots)
    cc = vs.codec_context
    a_start = a_end = None
    if aus is not None and aus.start_time is not None:
        a_start = aus.start_time * aus.time_base
        if aus.duration:
            a_end = (aus.start_time + aus.duration) * aus.time_base
    source = VideoSource(
        path=str(path), name=name, size=st.st_size, mtime_ns=st.st_mtime_ns, container=container.format.name,
        stream=vs.index, codec=cc.name, native_fps=str(Fraction(vs.average_rate or 0)),
        width=cc.width, height=cc.height, pix_fmt=cc.pix_fmt or "", time_base=str(Fraction(tb)),
        video_start=str(Fraction(pts[0]) * tb), file_start_pts=offset,
        audio_stream=aus.index if aus is not None else None,
        audio_codec=aus.codec_context.name if aus is not None else None,
        audio_start=str(a_start) if a_start is not None else None,
        audio_end=str(a_end) if a_end is not None else None,
    )
    return source, slots, pts, nominal, damage_dts, damage_why


def _first_frame_jpeg(path: Path, name: str, quality: int, max_side: int) -> tuple[bytes, int]:
    """The first frame's JPEG and the rotation its display matrix asks for (PyAV's ``frame.rotation``)."""
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(container.streams.video[0]):
                return encode_frame(frame, quality, max_side), int(getattr(frame, "rotation", 0) or 0)
    except av.FFmpegError as exc:
        raise SourceError(f"{name}: the first video frame does not decode ({describe_ffmpeg_error(exc)})",
                          SkipCode.NO_VIDEO_FRAMES) from None
    raise SourceError(f"{name}: no decodable video frames", SkipCode.NO_VIDEO_FRAMES)


def _stated_end(vs) -> int | None:
    """Where the container says the video stream ends, in its time base: the stream's duration (mp4,
    mov), else the DURATION tag FFmpeg's matroska muxer writes per track (mkv, webm); None if neither."""
    if vs.duration and vs.start_time is not None:
        return vs.start_time + vs.duration
    tag = (vs.metadata or {}).get("DURATION")
    if tag:
        try:
            h, m, sec = tag.split(":")
            return round_near_inf((int(h) * 3600 + int(m) * 60 + Fraction(sec)) / vs.time_base)
        except (ValueError, ZeroDivisionError):
            return None
    return None


def output_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Frame size after ``--max-side`` (aspect kept, never enlarged); 0 keeps the full resolution."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    s = Fraction(max_side, max(width, height))
    return max(1, round_near_inf(width * s)), max(1, round_near_inf(height * s))


_TV_Y = np.clip(np.round((np.arange(256) - 16) * 255 / 219), 0, 255).astype(np.uint8)
_TV_C = np.clip(np.round((np.arange(256) - 128) * 255 / 224 + 128), 0, 255).astype(np.uint8)


def _plane(frame, i: int, w: int, h: int) -> np.ndarray:
    p = frame.planes[i]
    return np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[:h, :w]


def _edge_padded(plane: np.ndarray, rows: int = 2) -> np.ndarray:
    """``plane`` as a C-contiguous array whose memory goes on with ``rows`` copies of its last row.

    Why: given a plane with an odd width or height, ``simplejpeg.encode_jpeg_yuv_planes`` reads a
    few bytes past its end (into the edge padding of the last block row), so the JPEG bytes
    depended on whatever memory followed the array — measured: 13 different encodings of one 64x43
    frame in 40 tries. Memory that repeats the edge makes them fixed (and the padding what JPEG's
    own edge extension would be); the image itself is unchanged."""
    h, w = plane.shape
    buf = np.empty((h + rows, w), np.uint8)
    buf[:h] = plane
    buf[h:] = plane[-1]
    return buf[:h]


def encode_frame(frame, quality: int, max_side: int = 0) -> bytes:
    """One decoded frame → JPEG bytes (4:2:0, full range JFIF), deterministic for equal input."""
    fmt = frame.format.name
    W, H = frame.width, frame.height
    w, h = output_size(W, H, max_side)
    if fmt in _YUV420:
        full = _YUV420[fmt] or frame.color_range == 2  # AVCOL_RANGE_JPEG
        cw, ch = (W + 1) // 2, (H + 1) // 2
        planes = [_plane(frame, 0, W, H), _plane(frame, 1, cw, ch), _plane(frame, 2, cw, ch)]
        if not full:
            planes = [np.take(_TV_Y, planes[0]), np.take(_TV_C, planes[1]), np.take(_TV_C, planes[2])]
        if (w, h) != (W, H):
            sizes = [(w, h), ((w + 1) // 2, (h + 1) // 2), ((w + 1) // 2, (h + 1) // 2)]
            planes = [np.asarray(Image.fromarray(np.ascontiguousarray(p)).resize(s, Image.Resampling.BILINEAR))
                      for p, s in zip(planes, sizes)]
        if w % 2 or h % 2:  # libjpeg-turbo reads past an odd-sized plane's end: make what it reads fixed
            y, u, v = (_edge_padded(p) for p in planes)
        else:
            y, u, v = (np.ascontiguousarray(p) for p in planes)
        return simplejpeg.encode_jpeg_yuv_planes(y, u, v, quality=quality)
    rgb = frame.to_ndarray(format="rgb24")
    if (w, h) != (W, H):
        rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BILINEAR))
    return simplejpeg.encode_jpeg(np.ascontiguousarray(rgb), quality=quality, colorspace="RGB", colorsubsampling="420")


def decode_clip(src: VideoSource, frame_pts: list[int], quality: int, max_side: int = 0, threads: int = 1) -> list[bytes]:
    """JPEG bytes of each clip frame, given the input pts each clip frame shows (repeats allowed).

    Seeks to the keyframe at or before the first needed frame and decodes forward; a frame shown
    twice is encoded once. A frame that cannot be decoded is a :class:`SourceError` naming the file
    and the time (probing found the file intact up to there, so this is damage inside the data).
    """
    needed = sorted(set(frame_pts))
    want = set(needed)
    got: dict[int, bytes] = {}
    try:
        with av.open(src.path) as container:
            vs = container.streams.video[0]
            vs.thread_type = "AUTO"
            vs.codec_context.thread_count = max(1, int(threads))
            for attempt in range(2):
                container.seek(needed[0] if attempt == 0 else 0, stream=vs, backward=True, any_frame=False)
                first = None
                for frame in container.decode(vs):
                    if frame.pts is None:
                        continue
                    if first is None:
                        first = frame.pts
                        if first > needed[0] and attempt == 0:
                            break  # the seek landed past the frame: start again from the beginning
                    if frame.pts in want and frame.pts not in got:
                        got[frame.pts] = encode_frame(frame, quality, max_side)
                    if frame.pts >= needed[-1]:
                        break
                if first is not None and (first <= needed[0] or attempt == 1):
                    break
    except av.FFmpegError as exc:
        at = next((p for p in needed if p not in got), needed[0])
        raise SourceError(f"{src.name}: decoding failed near {_seconds(src, at):.3f} s ({describe_ffmpeg_error(exc)})") from None
    missing = [p for p in needed if p not in got]
    if missing:
        raise SourceError(f"{src.name}: the frame at {_seconds(src, missing[0]):.3f} s did not decode "
                          f"({len(missing)} of the clip's frames missing): the file is damaged or changed")
    return [got[p] for p in frame_pts]


def _seconds(src: VideoSource, pts: int) -> float:
    return float(pts * src.tb - src.v0)

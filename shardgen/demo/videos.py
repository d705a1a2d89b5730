"""Write video files with PyAV: the demo corpus as mp4 (``shardgen demo --video``), and test videos.

Why: a newcomer should see the video-file path with one command, and the tests need small files
of known content at chosen frame rates (30, 25, 29.97 fps) and stream offsets, made without the
ffmpeg command-line tool (which the tests use as the independent reference).
"""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import av
import numpy as np
import soundfile as sf
from PIL import Image

from ..core.storage.atomic import atomic_path
from .corpus import MARKER_NAME as FRAMES_MARKER, demo_truth, make_demo_corpus

MARKER_NAME = ".demo_video_complete.json"


def write_video(path: Path, frames: Iterable[np.ndarray], fps, *, audio: np.ndarray | None = None,
                sample_rate: int = 16000, crf: int = 18, gop: int = 30, video_delay_s: float = 0.0,
                audio_delay_s: float = 0.0, threads: int = 1, times_ms: list[int] | None = None) -> Path:
    """Encode RGB frames [H,W,3] (H.264, yuv420p) and optional audio (float [-1,1], [n] or [n,ch]; AAC).

    ``video_delay_s`` / ``audio_delay_s`` start that stream later in the container (a start offset).
    ``times_ms`` gives each frame's own timestamp in milliseconds instead (variable frame rate).
    mp4 files get ``+faststart`` (index first), so a truncated copy still says how long it was.
    Written to a temp name and renamed: a killed run leaves no half file under ``path``.
    """
    path = Path(path)
    fps = Fraction(fps).limit_denominator(1001)
    opts = {"movflags": "+faststart"} if path.suffix in (".mp4", ".mov") else {}
    with atomic_path(path, durable=False) as tmp:  # the one atomic write, for a muxer that needs a name
        with av.open(str(tmp), "w", format=path.suffix[1:].replace("mkv", "matroska"), options=opts) as out:
            vs = out.add_stream("libx264", rate=fps)
            vs.pix_fmt = "yuv420p"
            vs.options = {"crf": str(crf), "preset": "veryfast", "g": str(gop), "threads": str(threads)}
            vs.codec_context.time_base = 1 / fps if times_ms is None else Fraction(1, 1000)
            if audio is not None:
                pcm = np.asarray(audio, np.float32)
                pcm = pcm[:, None] if pcm.ndim == 1 else pcm
                a = out.add_stream("aac", rate=sample_rate, layout="mono" if pcm.shape[1] == 1 else "stereo")
                a.time_base = Fraction(1, sample_rate)
            v_off = round(Fraction(video_delay_s) * fps)  # whole frames
            for i, rgb in enumerate(frames):
                if i == 0:
                    vs.width, vs.height = rgb.shape[1], rgb.shape[0]
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                if times_ms is None:
                    frame.pts, frame.time_base = v_off + i, 1 / fps
                else:
                    frame.pts, frame.time_base = times_ms[i], Fraction(1, 1000)
                out.mux(vs.encode(frame))
            out.mux(vs.encode(None))
            if audio is not None:
                a_off = round(audio_delay_s * sample_rate)
                for s in range(0, len(pcm), 1024):
                    chunk = np.ascontiguousarray(pcm[s:s + 1024].T)
                    af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=a.layout.name)
                    af.sample_rate, af.pts, af.time_base = sample_rate, a_off + s, Fraction(1, sample_rate)
                    out.mux(a.encode(af))
                out.mux(a.encode(None))
    return path


def make_demo_videos(root: Path, **demo_args) -> Path:
    """The demo corpus (:func:`shardgen.demo.corpus.make_demo_corpus` with ``demo_args``) as video files:
    ``videos/<id>.mp4`` (its frames and wav muxed, H.264 + AAC), with ``video_imgs/`` and ``wav/``
    removed so a build decodes the files. A second call with the same arguments does nothing."""
    root = Path(root)
    marker = root / MARKER_NAME
    wanted = json.dumps({"args": demo_args}, sort_keys=True)
    if marker.is_file() and marker.read_text().strip() == wanted:
        return root
    marker.unlink(missing_ok=True)
    make_demo_corpus(root, **demo_args)
    truth = demo_truth(root)
    (root / "videos").mkdir(exist_ok=True)
    for vid, facts in sorted(truth["videos"].items()):
        d = root / "video_imgs" / vid
        frames = (np.asarray(Image.open(d / f"img_{i + 1:05d}.jpg").convert("RGB")) for i in range(facts["n_frames"]))
        pcm, sr = sf.read(root / "wav" / f"{vid}.wav", dtype="float32")
        write_video(root / "videos" / f"{vid}.mp4", frames, facts["fps"], audio=pcm, sample_rate=sr, gop=60)
    (root / FRAMES_MARKER).unlink(missing_ok=True)  # the frames go: a plain `demo` regenerates them
    shutil.rmtree(root / "video_imgs", ignore_errors=True)
    shutil.rmtree(root / "wav", ignore_errors=True)
    marker.write_text(wanted + "\n")
    return root

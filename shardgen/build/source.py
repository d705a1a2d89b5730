"""The source layout: split lists, frame files and wavs on disk.

::

    DIR/split/<split>.list           one video id a line ('#' comments and blank lines ignored)
    DIR/video_imgs/<id>/img_00001.jpg  frames, 1-based, 5+ digits, constant fps (30 by default)
    DIR/wav/<id>.wav                 any rate / channels / PCM width: resampled to 16 kHz mono
    DIR/json/av_<split>.json         Ego4D AV annotations (or DIR/csv/*.csv for AVA)

Everything here only looks at the disk; it decides nothing about clips (that is ``plan``).
Problems are raised as :class:`SourceError` naming the file, or returned as reasons that the
build report records.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from PIL import Image

from ..core.format import FormatError, validate_video_id
from .skips import Reason, SkipCode

FRAME_RE = re.compile(r"^img_(\d{5,})\.jpg$")
JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"


class SourceError(ValueError):
    """The source layout is unusable (the message names the file and the problem).

    ``code``: the :class:`~shardgen.build.skips.SkipCode` a probe records when this skips a video (None:
    the caller decides)."""

    def __init__(self, message: str, code: SkipCode | None = None):
        super().__init__(message)
        self.code = code


def frame_filename(frame_index0: int) -> str:
    """0-based source frame index → its image file name (Ego4D frame f is img_{f+1:05d}.jpg)."""
    return f"img_{frame_index0 + 1:05d}.jpg"


def read_split_list(path: Path) -> list[str]:
    """Video ids in a split list, in file order, duplicates removed (first occurrence wins)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SourceError(f"{path}: split list not found") from None
    except UnicodeDecodeError:
        raise SourceError(f"{path}: split list is not UTF-8 text") from None
    ids: list[str] = []
    seen: set[str] = set()
    for lineno, line in enumerate(text.splitlines(), 1):
        vid = line.split("#", 1)[0].strip()
        if not vid:
            continue
        try:
            validate_video_id(vid)
        except FormatError as exc:
            raise SourceError(f"{path}:{lineno}: {exc}") from None
        if vid not in seen:
            seen.add(vid)
            ids.append(vid)
    return ids


def read_splits(data_dir: Path, splits: list[str]) -> dict[str, list[str]]:
    """Read the requested split lists and refuse a video listed in two of them (train/val leakage)."""
    lists = {s: read_split_list(data_dir / "split" / f"{s}.list") for s in splits}
    owner: dict[str, str] = {}
    for split, ids in lists.items():
        for vid in ids:
            if vid in owner:
                raise SourceError(
                    f"video {vid!r} is listed in both split/{owner[vid]}.list and split/{split}.list: "
                    "a clip must belong to one split"
                )
            owner[vid] = split
    return lists


@dataclass
class VideoFrames:
    """What is on disk for one video's frames."""

    video_id: str
    directory: Path
    numbers: list[int] = field(default_factory=list)  # 1-based image numbers present, sorted

    @property
    def n_frames(self) -> int:
        """Frames the video spans: the highest image number (gaps are missing frames, not a shorter video)."""
        return self.numbers[-1] if self.numbers else 0

    def path(self, frame_index0: int) -> Path:
        return self.directory / frame_filename(frame_index0)


def scan_frames(data_dir: Path, video_id: str) -> VideoFrames | None:
    """List a video's frame files; None when the video's frame directory does not exist."""
    directory = data_dir / "video_imgs" / video_id
    if not directory.is_dir():
        return None
    numbers = []
    with os.scandir(directory) as it:
        for entry in it:
            m = FRAME_RE.match(entry.name)
            if m:
                numbers.append(int(m.group(1)))
    numbers.sort()
    if numbers and numbers[0] < 1:
        raise SourceError(f"{directory}: frame numbers start at 1 (found img_{numbers[0]:05d}.jpg)")
    return VideoFrames(video_id, directory, numbers)


class FrameCheck(NamedTuple):
    size: int
    mtime_ns: int
    problem: Reason | None  # why the frame cannot be used (None: it looks like a whole JPEG)


def check_jpeg_file(path: Path) -> FrameCheck:
    """Cheap structural check of one frame: its size, mtime and problem (or None).

    Reads the first 2 and the last 64 bytes only: a JPEG starts with SOI (FFD8) and ends with
    EOI (FFD9), possibly followed by padding. That catches zero-byte, truncated and non-JPEG
    files without decoding; the original bytes are stored as they are.
    """
    try:
        st = path.stat()
        if st.st_size == 0:
            return FrameCheck(0, st.st_mtime_ns, Reason(SkipCode.ZERO_BYTE_FRAME, f"zero-byte frame {path.name}"))
        with open(path, "rb") as fh:
            head = fh.read(2)
            fh.seek(max(0, st.st_size - 64))
            tail = fh.read()
    except FileNotFoundError:
        return FrameCheck(0, 0, Reason(SkipCode.MISSING_FRAME, f"missing frame {path.name}"))
    except OSError as exc:
        return FrameCheck(0, 0, Reason(SkipCode.UNREADABLE_FRAME, f"unreadable frame {path.name} ({exc.strerror})"))
    if head != JPEG_SOI:
        return FrameCheck(st.st_size, st.st_mtime_ns, Reason(SkipCode.NOT_A_JPEG, f"not a JPEG: {path.name} does not start with FFD8"))
    if not tail.rstrip(b"\x00\r\n ").endswith(JPEG_EOI):
        return FrameCheck(st.st_size, st.st_mtime_ns, Reason(SkipCode.TRUNCATED_JPEG, f"truncated JPEG: {path.name} does not end with FFD9"))
    return FrameCheck(st.st_size, st.st_mtime_ns, None)


def jpeg_size(path: Path) -> tuple[int, int]:
    """(width, height) from a JPEG header, without decoding the image."""
    try:
        with Image.open(path) as im:
            return im.size
    except Exception as exc:
        raise SourceError(f"{path}: unreadable JPEG header ({exc})") from None


def wav_path(data_dir: Path, video_id: str) -> Path:
    return data_dir / "wav" / f"{video_id}.wav"

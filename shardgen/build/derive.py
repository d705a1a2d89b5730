"""Optional derived members (``--derive small,crops``): the pictures the models take, precomputed.

Decoding a 1080p JPEG costs milliseconds even DCT-scaled; decoding a stored 112x112 gray JPEG
costs tens of microseconds. Building them once, at build time, is the path to >10x loader
throughput. They are computed by the loader's own functions, so a derived member is what the
loader would have computed on the fly (up to one JPEG re-encode at quality 95):

* ``g000001.jpg`` — the whole frame as 112x112 gray (:func:`shardgen.core.decode.gray_frame`);
* ``c00.000001.jpg`` — person 0's TalkNet crop at that frame, for every frame of each face
  track (:func:`shardgen.core.format.person_tracks`, gaps interpolated as the loader does).
"""

from __future__ import annotations

import numpy as np
import simplejpeg

from ..core import format as fmt
from ..core.decode import gray_frame
from ..core.track_crops import cut_crops, track_crops_of

QUALITY = 95
TRACKS_AT_ONCE = 8  # a clip's tracks cut together: ~45 MB of raw crops at 450 frames a track


def _encode_gray(img: np.ndarray) -> bytes:
    return simplejpeg.encode_jpeg(np.ascontiguousarray(img)[..., None], quality=QUALITY, colorspace="GRAY")


def derived_members(jpegs: list[bytes], boxes: np.ndarray, frame_size: tuple[int, int], derive) -> list[tuple[str, bytes]]:
    """The derived members of one clip, in member order (errors name the frame; the caller adds the clip)."""
    out: list[tuple[str, bytes]] = []
    if "small" in derive:
        out += [(fmt.gray_ext(i + 1), _encode_gray(gray_frame(data))) for i, data in enumerate(jpegs)]
    if "crops" in derive:
        tracks = []
        for p, first, n in fmt.person_tracks(boxes):  # a track starts and ends on a box
            try:
                fmt.crop_ext(p, first + 1)  # a person its crops cannot name fails the clip before any decode
            except fmt.FormatError as exc:
                raise fmt.FormatError(f"{exc}; build without --derive crops") from None
            tracks.append(track_crops_of(boxes[p, first:first + n], p, first, n, frame_size))
        # The clip's tracks a group at a time (raw crops held: 12.5 KB a frame), each frame decoded once for the
        # group — whole and strictly (the loader's own crop path, decoding as the builder must: what it stores
        # it has checked).
        for at in range(0, len(tracks), TRACKS_AT_ONCE):
            group = tracks[at:at + TRACKS_AT_ONCE]
            for t, crops in zip(group, cut_crops(jpegs.__getitem__, frame_size, group, key="", strict=True)):
                if isinstance(crops, Exception):
                    raise crops
                out += [(fmt.crop_ext(t.person, t.first + i + 1), _encode_gray(crop)) for i, crop in enumerate(crops)]
    return out

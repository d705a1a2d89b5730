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
from ..core.crops import crop_geometry, crop_scale_for, interpolate_boxes, resample_crop
from ..core.decode import decode_gray, gray_frame

QUALITY = 95


def _encode_gray(img: np.ndarray) -> bytes:
    return simplejpeg.encode_jpeg(np.ascontiguousarray(img)[..., None], quality=QUALITY, colorspace="GRAY")


def derived_members(jpegs: list[bytes], boxes: np.ndarray, frame_size: tuple[int, int], derive) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    if "small" in derive:
        out += [(fmt.gray_ext(i + 1), _encode_gray(gray_frame(data))) for i, data in enumerate(jpegs)]
    if "crops" in derive:
        W, H = frame_size
        for p, first, n in fmt.person_tracks(boxes):
            filled, _ = interpolate_boxes(boxes[p, first:first + n].astype(np.float64))
            scale = crop_scale_for(filled, (H, W))
            geometries: dict[float, tuple[list, list]] = {}  # per decoded scale: the track's windows, computed once
            for i in range(n):
                gray = decode_gray(jpegs[first + i], scale.min_height, scale.min_width)
                at = gray.shape[1] / W
                if at not in geometries:
                    g = crop_geometry(filled, scale=at)
                    geometries[at] = (g.src.tolist(), g.patch.tolist())
                src, patch = geometries[at]
                out.append((fmt.crop_ext(p, first + i + 1), _encode_gray(resample_crop(gray, src[i], patch[i]))))
    return out

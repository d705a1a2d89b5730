"""JPEG bytes → the small grayscale pictures the models take, decoding as little as possible.

libjpeg-turbo can decode at 1/8, 2/8, ... 8/8 of the stored size by dropping DCT
coefficients: a 1080p frame needed at 112x112 is decoded at 1/8 (240x135) for a fraction of the
cost of a full decode. simplejpeg exposes that as ``min_height``/``min_width`` (the smallest
scale at least that big) and decodes straight to luma (``colorspace="GRAY"``), skipping the
colour conversion. Pillow's ``draft("L", size)`` does the same (``make bench`` compares them: simplejpeg is faster).

A face crop needs only a small part of a full-scale frame: :func:`decode_gray_region` decodes just
the rows and columns around it (libjpeg-turbo's partial decompression: the rows above are
entropy-decoded and skipped without an IDCT, the rows below are never read, columns outside get no
IDCT). No maintained binding of libjpeg's scanline API runs on Debian 12's libjpeg-turbo 2.1;
nvImageCodec's CPU backend (``nvidia-nvimgcodec-cu12``: Apache-2.0, NVIDIA's, a 32 MB wheel that
needs no CUDA for its CPU decoder) carries libjpeg-turbo 3 with it and exposes exactly that as a
region of a code stream. Its pixels are the full decode's, bit for bit (luma is decoded block by
block; tests/test_region_decode.py holds them equal); where it is missing or fails, the whole frame is
decoded with simplejpeg instead, which also names what is wrong with a frame that does not decode.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import NamedTuple

import numpy as np
import simplejpeg
from PIL import Image

from .format import FormatError

FACE = 112


def decode_gray(data: bytes, min_height: int = 0, min_width: int = 0, *, name: str = "frame") -> np.ndarray:
    """Luma ``uint8 [h, w]`` at the smallest DCT scale with h >= min_height and w >= min_width."""
    try:
        out = simplejpeg.decode_jpeg(data, colorspace="GRAY", min_height=min_height, min_width=min_width)
    except Exception as exc:  # simplejpeg raises ValueError for corrupt data
        raise FormatError(f"{name}: JPEG does not decode ({exc})") from None
    return out[..., 0]


def gray_frame(data: bytes, size: int = FACE, *, name: str = "frame") -> np.ndarray:
    """A whole frame as ``uint8 [size, size]`` gray: DCT-scaled decode, then one bilinear resize.

    The frame is stretched to a square (every pixel kept), as ``cv2.resize(frame, (112, 112))``
    would; crop-based modes use :func:`shardgen.core.crops.talknet_crop` instead.
    """
    small = decode_gray(data, size, size, name=name)
    if small.shape == (size, size):
        return small
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BILINEAR))


def gray_small(data: bytes, *, name: str = "frame") -> np.ndarray:
    """A stored derived member (already 112x112 gray): decode only."""
    return decode_gray(data, name=name)


def rgb_frame(data: bytes, size: tuple[int, int] | None = None, *, name: str = "frame") -> np.ndarray:
    """``uint8 [H, W, 3]``; with ``size=(h, w)`` the smallest DCT scale ≥ size, then a resize to exactly it."""
    h, w = size if size else (0, 0)
    try:
        out = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=h, min_width=w)
    except Exception as exc:
        raise FormatError(f"{name}: JPEG does not decode ({exc})") from None
    if size and out.shape[:2] != (h, w):
        out = np.asarray(Image.fromarray(out).resize((w, h), Image.Resampling.BILINEAR))
    return out



class FrameRegion(NamedTuple):
    """Part of a decoded luma frame: ``pixels`` are rows ``origin[0]..`` and columns ``origin[1]..`` of a
    frame ``frame_shape = (height, width)`` big (the whole frame when ``origin`` is ``(0, 0)`` and the shapes
    agree)."""

    pixels: np.ndarray
    origin: tuple[int, int]
    frame_shape: tuple[int, int]


class _RegionDecoder:
    """nvImageCodec's CPU decoder — one per thread (a decoder used by two threads at once crashes or returns
    other pixels), the library loaded once per process (a forked DataLoader worker loads its own state: the
    library's executor threads do not survive a fork) — or None where the package is absent or unusable.
    ``AVSHARDS_REGION_DECODE=0`` turns it off (every region is then cut from a whole-frame decode)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.reset()
        # A fork waits for a first use under way in another thread (its stderr swap must not be inherited).
        os.register_at_fork(before=self._lock.acquire, after_in_parent=self._lock.release,
                            after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self._made, self._library = False, None
        self._local = threading.local()

    def get(self):
        """``(nvimgcodec, this thread's decoder, decode params)``, or None."""
        if not self._made:
            with self._lock:  # two threads' first uses must not both swap the stderr descriptor
                if not self._made:
                    self._library = self._load()  # the loading thread keeps the decoder it was loaded with
                    self._made = True
        if self._library is None:
            return None
        state = getattr(self._local, "state", None)
        if state is None:
            nv, params = self._library
            try:
                state = self._local.state = (nv, _cpu_decoder(nv), params)
            except Exception:
                return None
        return state

    def _load(self):
        if os.environ.get("AVSHARDS_REGION_DECODE", "1") == "0":
            return None
        # Its logger reports every GPU extension it cannot load (none is needed here), and a few of them print
        # install advice straight to the process's stderr as they load: both are kept off the user's terminal.
        os.environ.setdefault("PYNVIMGCODEC_VERBOSITY", "0")
        try:
            with _stderr_silenced():
                from nvidia import nvimgcodec as nv

                decoder = _cpu_decoder(nv)
                # simplejpeg never turns a frame by its EXIF orientation, and a frame directory's JPEGs are
                # stored as they are: neither may the region decoder (it would by default).
                params = nv.DecodeParams(color_spec=nv.GRAY, allow_any_depth=False, apply_exif_orientation=False)
        except Exception:  # ImportError on platforms without the wheel, or a library that will not start
            return None
        self._local.state = (nv, decoder, params)
        return nv, params


def _cpu_decoder(nv):
    """One nvImageCodec decoder on the CPU backend only, with one executor thread."""
    return nv.Decoder(device_id=nv.NVIMGCODEC_DEVICE_CPU_ONLY, max_num_cpu_threads=1,
                      backends=[nv.Backend(nv.BackendKind.CPU_ONLY)])


@contextlib.contextmanager
def _stderr_silenced():
    """File descriptor 2 pointed at /dev/null for the block (C libraries print past ``sys.stderr``); nothing
    is changed where there is no descriptor 2."""
    if sys.stderr is not None:
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


_REGION_DECODER = _RegionDecoder()


def region_decoding_available() -> bool:
    """Whether :func:`decode_gray_region` decodes regions (else it decodes whole frames)."""
    return _REGION_DECODER.get() is not None


def decode_gray_region(data: bytes, rows: tuple[int, int], cols: tuple[int, int], *, name: str = "frame") -> FrameRegion:
    """Full-scale luma of at least ``rows`` x ``cols`` (``[start, stop)`` in frame pixels, clipped to the frame).

    The pixels are those :func:`decode_gray` gives for the same rows and columns. Only 8-bit JPEGs go to the
    region decoder; anything it does not take or refuses (another format, another precision, data it cannot
    decode, a region wholly outside the frame) is decoded whole by :func:`decode_gray`, which raises the named
    :class:`FormatError` if the frame really does not decode.

    Lenient where a partial decode must be: damage past the decoded rows is not seen (they are not read), and
    damage inside them that libjpeg reports only as a warning ("Corrupt JPEG data: ...", which simplejpeg
    raises) decodes as libjpeg decodes it. Shard digests cover the bytes after the build (``shardgen verify``
    decodes every frame whole); ``AVSHARDS_REGION_DECODE=0`` decodes every frame whole, strictly.
    """
    state = _REGION_DECODER.get()
    if state is not None:
        nv, decoder, params = state
        try:
            stream = nv.CodeStream(data)
            if stream.codec_name == "jpeg" and stream.precision == 8:
                height, width = int(stream.height), int(stream.width)
                y0, y1 = max(0, rows[0]), min(height, rows[1])
                x0, x1 = max(0, cols[0]), min(width, cols[1])
                if y0 < y1 and x0 < x1:
                    if (y0, y1, x0, x1) == (0, height, 0, width):
                        image = decoder.decode(stream, params=params)
                    else:
                        region = nv.Region(start=(y0, x0), end=(y1, x1))
                        image = decoder.decode(stream.get_sub_code_stream(region=region), params=params)
                    if image is not None:
                        pixels = np.asarray(image.cpu())
                        if pixels.shape == (y1 - y0, x1 - x0, 1) and pixels.dtype == np.uint8:
                            return FrameRegion(pixels[..., 0], (y0, x0), (height, width))
        except Exception:  # anything the region decoder does not take: the whole-frame decode below decides
            pass
    gray = decode_gray(data, name=name)
    return FrameRegion(gray, (0, 0), gray.shape)

"""decode_gray_region: part of a JPEG decoded, the same pixels as the whole frame's decode.

Checked on JPEGs of every layout a frame directory or an ffmpeg extraction produces (4:2:0, 4:2:2, 4:4:4,
grayscale, progressive, restart markers, sizes that are no multiple of the MCU), real frames where
../shared is present, regions on every edge and outside the frame, with the region decoder and with the
whole-frame fallback it uses where nvImageCodec is absent; and on broken JPEGs, which stay named errors.
"""

from __future__ import annotations

import io
import platform

import numpy as np
import pytest
import simplejpeg
from PIL import Image

import shardgen.core.decode as decode_module
from shardgen.core.decode import decode_gray, decode_gray_region, region_decoding_available
from shardgen.core.format import FormatError
from tests.sources import REALDATA


def picture(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Something JPEG has to work for: gradients, edges and noise, in colour."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([(xx * 255 // max(width - 1, 1)), (yy * 255 // max(height - 1, 1)), ((xx // 16 + yy // 16) % 2) * 200], -1)
    return np.clip(rgb + rng.normal(0, 25, rgb.shape), 0, 255).astype(np.uint8)


def jpeg(img: np.ndarray, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=save.pop("quality", 90), **save)
    return buf.getvalue()


LAYOUTS = {
    "4:2:0": lambda: jpeg(picture(640, 360), subsampling=2),
    "4:2:2": lambda: jpeg(picture(640, 360, 1), subsampling=1),
    "4:4:4": lambda: jpeg(picture(640, 360, 2), subsampling=0),
    "grayscale": lambda: jpeg(picture(320, 240, 3)[..., 0]),
    "progressive": lambda: jpeg(picture(640, 360, 4), progressive=True),
    "restart markers": lambda: jpeg(picture(640, 360, 5), restart_marker_rows=1),
    "odd size": lambda: jpeg(picture(641, 359, 6), subsampling=2),
    "1080p": lambda: jpeg(picture(1920, 1080, 7), quality=95),
}


def regions(height: int, width: int, seed: int = 0) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Inside, on each edge and corner, past the edges, one pixel, the whole frame, and wholly outside."""
    rng = np.random.default_rng(seed)
    out = [((0, height), (0, width)), ((0, 1), (0, 1)), ((height - 1, height), (width - 1, width)),
           ((-40, 50), (-40, 70)), ((height - 30, height + 60), (width - 45, width + 20)),
           ((100, 101), (-5, width + 5)), ((-10, height + 10), (200, 215)),
           ((height + 5, height + 90), (10, 90)), ((10, 90), (-200, -5))]
    for _ in range(12):
        y0, x0 = int(rng.integers(-20, height)), int(rng.integers(-20, width))
        out.append(((y0, y0 + int(rng.integers(1, 200))), (x0, x0 + int(rng.integers(1, 250)))))
    return out


def check_region(data: bytes, rows, cols) -> None:
    whole = decode_gray(data)
    got = decode_gray_region(data, rows, cols, name="f")
    H, W = whole.shape
    assert got.frame_shape == (H, W)
    y0, y1 = max(rows[0], 0), min(rows[1], H)
    x0, x1 = max(cols[0], 0), min(cols[1], W)
    if y0 >= y1 or x0 >= x1:
        return  # nothing of the frame was asked for: nothing need be decoded
    oy, ox = got.origin
    h, w = got.pixels.shape
    assert oy <= y0 and ox <= x0 and oy + h >= y1 and ox + w >= x1, (rows, cols, got.origin, got.pixels.shape)
    assert np.array_equal(got.pixels[y0 - oy:y1 - oy, x0 - ox:x1 - ox], whole[y0:y1, x0:x1]), (rows, cols)


@pytest.mark.skipif(platform.system() != "Linux" or platform.machine() != "x86_64",
                    reason="nvidia-nvimgcodec-cu12 is a dependency on Linux x86-64 only")
def test_the_region_decoder_is_there_where_it_is_a_dependency():
    assert region_decoding_available(), "nvImageCodec's CPU decoder did not start: every crop decodes a whole frame"


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_region_pixels_are_the_whole_decode_s(layout):
    data = LAYOUTS[layout]()
    H, W = decode_gray(data).shape
    for rows, cols in regions(H, W):
        check_region(data, rows, cols)


def test_region_pixels_on_real_frames():
    frames = sorted((REALDATA / "video_imgs").glob("*/img_*.jpg"))[::40] if REALDATA.exists() else []
    if not frames:
        pytest.skip(f"../shared/realdata is absent ({REALDATA}): the real frames need the shared folder")
    for i, path in enumerate(frames[:8]):
        data = path.read_bytes()
        H, W = decode_gray(data).shape
        for rows, cols in regions(H, W, seed=i):
            check_region(data, rows, cols)


def test_the_whole_frame_fallback_gives_the_same_pixels(monkeypatch):
    """Without the region decoder (a platform without the wheel, or AVSHARDS_REGION_DECODE=0) the whole frame is
    decoded and handed back as the region: the same pixels, where the caller looks."""
    data = LAYOUTS["4:2:0"]()
    fast = decode_gray_region(data, (100, 180), (200, 300))
    monkeypatch.setenv("AVSHARDS_REGION_DECODE", "0")
    monkeypatch.setattr(decode_module, "_REGION_DECODER", decode_module._RegionDecoder())
    assert not region_decoding_available()
    slow = decode_gray_region(data, (100, 180), (200, 300))
    assert slow.origin == (0, 0) and slow.pixels.shape == (360, 640)
    oy, ox = fast.origin
    assert np.array_equal(slow.pixels[100:180, 200:300], fast.pixels[100 - oy:180 - oy, 200 - ox:300 - ox])


@pytest.mark.parametrize("damage", ["not a JPEG", "header only", "cut inside the region"])
def test_a_frame_that_does_not_decode_is_a_named_error(damage):
    data = LAYOUTS["4:2:0"]()
    bad = {"not a JPEG": b"\xff\xd8 not really \xff\xd9", "header only": data[:300],
           "cut inside the region": data[:len(data) // 3]}[damage]
    with pytest.raises(FormatError, match=r"clip_x frame 7: JPEG does not decode"):
        decode_gray_region(bad, (300, 340), (10, 100), name="clip_x frame 7")


def test_damage_past_the_decoded_rows_is_not_seen():
    """A partial decode stops after the region's last row: a frame cut below it gives the region's pixels (what
    the whole decode of the intact frame gives there). The stated limit: the shard's digests cover the bytes."""
    data = LAYOUTS["4:2:0"]()
    if not region_decoding_available():
        pytest.skip("the whole-frame fallback decodes every row")
    cut = data[:int(len(data) * 0.9)]
    with pytest.raises(ValueError):
        simplejpeg.decode_jpeg(cut, colorspace="GRAY")  # whole: the cut is an error
    got = decode_gray_region(cut, (0, 64), (0, 128))
    assert np.array_equal(got.pixels[:64, :128], decode_gray(data)[:64, :128])


def test_exif_orientation_is_not_applied():
    """simplejpeg never turns a frame by its EXIF tag (frames are stored as their files are): nor does the
    region decoder, whose default would — and it is the region decoder that answers (not a fallback)."""
    img = picture(640, 360, 8)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        for progressive in (False, True):
            data = jpeg(img, exif=exif.tobytes(), progressive=progressive)
            for rows, cols in (((0, 360), (0, 640)), ((50, 150), (300, 420))):
                check_region(data, rows, cols)
            if region_decoding_available():
                assert decode_gray_region(data, (50, 150), (300, 420)).origin != (0, 0), orientation


def test_other_formats_are_not_decoded_as_frames():
    """nvImageCodec decodes PNG, WebP, TIFF...: a frame must be a JPEG, as before (named error)."""
    buf = io.BytesIO()
    Image.fromarray(picture(64, 48)).save(buf, "PNG")
    with pytest.raises(FormatError, match="clip_x frame 2: JPEG does not decode"):
        decode_gray_region(buf.getvalue(), (0, 10), (0, 10), name="clip_x frame 2")


def test_a_region_outside_the_frame_still_decodes_the_frame():
    """Every face outside the frame: nothing of it is cropped, but the frame is decoded all the same, so a
    frame that does not decode is an error whether or not the region decoder is there."""
    cut = LAYOUTS["4:2:0"]()
    cut = cut[:len(cut) // 3]  # its header parses (640x360): only a decode finds the cut
    with pytest.raises(FormatError, match="JPEG does not decode"):
        decode_gray_region(cut, (400, 500), (0, 10), name="f")
    got = decode_gray_region(LAYOUTS["4:2:0"](), (400, 500), (0, 10))
    assert got.frame_shape == (360, 640)
    from shardgen.core.crops import DctScale
    from shardgen.core.track_crops import TrackCrops, cut_crops

    off = np.array([[-900.0, 10.0, 60.0, 60.0]])  # wholly left of the frame: its crop is all padding
    track = TrackCrops(0, 0, 1, off, off, DctScale(1.0, 360, 640))
    assert (cut_crops(lambda i: LAYOUTS["4:2:0"](), (640, 360), [track], key="c")[0] == 110).all()
    broken = cut_crops(lambda i: cut, (640, 360), [track], key="c")[0]
    assert isinstance(broken, FormatError) and "c frame 1: JPEG does not decode" in str(broken)


def test_threads_decoding_at_once_get_the_whole_decode_s_pixels():
    """One decoder per thread: four threads decoding regions at once (one shared decoder crashed or returned
    other pixels) each get exactly the whole decode's pixels, from the region decoder."""
    import threading

    data = LAYOUTS["4:2:0"]()
    whole = decode_gray(data)
    wrong = []

    def work():
        for _ in range(150):
            got = decode_gray_region(data, (100, 200), (200, 330))
            oy, ox = got.origin
            if (region_decoding_available() and got.origin == (0, 0)) or not np.array_equal(
                    got.pixels[100 - oy:200 - oy, 200 - ox:330 - ox], whole[100:200, 200:330]):
                wrong.append(got.origin)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def _flipped(data: bytes) -> bytes:
    """Eight bytes of entropy-coded data inverted early in the scan: libjpeg notices, as a warning."""
    bad = bytearray(data)
    at = len(data) // 10
    bad[at:at + 8] = bytes(b ^ 0xFF for b in bad[at:at + 8])
    return bytes(bad)


def test_damage_libjpeg_warns_about_is_strict_only_where_asked():
    """The stated leniency of a region decode, and the strict mode the builder's --derive crops uses: the same
    damaged frame is crops from a region decode, a named error from a strict cut (a whole decode)."""
    from shardgen.core.track_crops import TrackCrops, cut_crops
    from shardgen.core.crops import DctScale

    data = _flipped(LAYOUTS["4:2:0"]())
    with pytest.raises(ValueError, match="Corrupt JPEG data"):
        simplejpeg.decode_jpeg(data, colorspace="GRAY")
    track = TrackCrops(0, 0, 1, np.array([[300.0, 150.0, 80.0, 80.0]]), np.array([[300.0, 150.0, 80.0, 80.0]]),
                       DctScale(1.0, 360, 640))
    strict = cut_crops(lambda i: data, (640, 360), [track], key="clip_x", strict=True)[0]
    assert isinstance(strict, FormatError) and "clip_x frame 1: JPEG does not decode" in str(strict)
    lenient = cut_crops(lambda i: data, (640, 360), [track], key="clip_x")[0]
    if region_decoding_available():
        assert isinstance(lenient, np.ndarray) and lenient.shape == (1, 112, 112)
    else:
        assert isinstance(lenient, FormatError)


def test_one_track_s_bad_box_fails_that_track_only():
    """A box no crop can be cut from (zero width) fails its own track, named; the other track of the same
    frames gets its crops, the ones it gets alone."""
    from shardgen.core.track_crops import TrackCrops, cut_crops
    from shardgen.core.crops import DctScale

    data = LAYOUTS["4:2:0"]()
    good_boxes = np.array([[100.0, 80.0, 90.0, 90.0], [104.0, 82.0, 90.0, 90.0]])
    bad_boxes = np.array([[300.0, 80.0, 90.0, 90.0], [300.0, 80.0, 0.0, 90.0]])
    scale = DctScale(1.0, 360, 640)
    good, bad = TrackCrops(0, 0, 2, good_boxes, good_boxes, scale), TrackCrops(1, 0, 2, bad_boxes, bad_boxes, scale)
    both = cut_crops(lambda i: data, (640, 360), [good, bad], key="clip_x")
    alone = cut_crops(lambda i: data, (640, 360), [good], key="clip_x")[0]
    assert isinstance(both[1], FormatError) and "clip_x: person 1's track from frame 1" in str(both[1])
    assert isinstance(both[0], np.ndarray) and np.array_equal(both[0], alone)

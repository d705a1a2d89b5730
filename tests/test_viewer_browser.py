"""``shardgen view`` in a real browser: Debian's headless Chromium, driven by Playwright, over a local and an S3 build.

What is checked is what a person sees and hears: the pixels on ``<canvas id="frame">`` are the
decoded source frame ``round(t * fps)`` (compared with every frame of the clip, decoded by Pillow
from the JPEG bytes the test wrote into the source), the ``<audio id="audio">`` element stands at
``t``, each annotated box is on ``<canvas id="overlay">`` at the annotated pixels in the colour of
its speaking label, and a damaged clip's page shows its error. Chromium comes from
``scripts/install_test_services.sh`` (package ``chromium``); Playwright's pip package drives it by
path (no browser download).
"""

from __future__ import annotations

import io
import math
import os
import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image

from shardgen.core.storage import TransportOptions
from shardgen.tools.view import BackgroundServer
from tests.service_procs import _unavailable
from tests.view_builds import FPS, SIZE, box, damaged, source_frame, speaking
from tests.view_builds import gray_build, view_build, view_build_s3  # noqa: F401 (fixtures)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# headless, and none of the background calls that hang or slow a browser with no network
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--mute-audio", "--force-color-profile=srgb"]
CLIP = 30
SPEAKING_RGB = (0x18, 0xB9, 0x17)  # the player's colours (player.js COLORS)
SILENT_RGB = (0xE8, 0x36, 0x2D)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium for the module, with a fresh profile."""
    if not os.path.exists(CHROMIUM):
        _unavailable("chromium not installed (scripts/install_test_services.sh installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1200, "height": 900})
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module", params=["local", "s3"])
def viewer(request, view_build):
    """The viewer over the build on disk, or over its copy in S3."""
    if request.param == "local":
        source, options = view_build, None
    else:
        url, opts = request.getfixturevalue("view_build_s3")
        source, options = url, TransportOptions(s3_options=opts)
    with BackgroundServer(source, options=options) as url:
        yield url


@pytest.fixture
def page(browser):
    p = browser.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    yield p
    p.close()
    assert not errors, errors  # no script error on any page a test opened


def canvas_pixels(page, canvas_id: str) -> np.ndarray:
    """``uint8 [H, W, 4]`` read back from a canvas (getImageData: the pixels as stored, at the canvas's own size)."""
    w, h, data = page.evaluate("""(id) => {
        const c = document.getElementById(id);
        return [c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)];
    }""", canvas_id)
    return np.asarray(data, dtype=np.uint8).reshape(h, w, 4)


def open_at(page, url: str, frame: int, t: float) -> None:
    """Wait until the page shows ``frame``, paused, its audio at ``t`` (the hooks the player keeps)."""
    if url:
        page.goto(url)
    page.wait_for_function(
        """([frame, t]) => {
            const a = document.getElementById('audio');
            return document.getElementById('frame').dataset.frame === String(frame)
                && a.readyState >= 1 && a.paused && Math.abs(a.currentTime - t) < 1e-3;
        }""", arg=[frame, t], timeout=20_000)


def audio_time(page) -> float:
    return page.evaluate("document.getElementById('audio').currentTime")


def closest_frame(rgb: np.ndarray, start: int) -> tuple[int, float, float]:
    """(frame nearest to the picture among the clip's source frames, its mean abs difference, the next nearest's)."""
    diffs = sorted((float(np.abs(rgb.astype(int) - source_frame(start + i).astype(int)).mean()), i) for i in range(CLIP))
    return diffs[0][1], diffs[0][0], diffs[1][0]


def assert_shows(page, start: int, frame: int) -> None:
    px = canvas_pixels(page, "frame")
    assert px.shape == (SIZE[1], SIZE[0], 4)  # the frame's native size
    nearest, diff, runner_up = closest_frame(px[..., :3], start)
    # measured: Chromium decodes these JPEGs bit-identically to Pillow (difference 0), neighbours differ by ~60
    assert nearest == frame and diff < 2.0 and runner_up > 20.0, (frame, nearest, diff, runner_up)


# --------------------------------------------------------------------------- the frame and the audio at #t


def test_the_canvas_shows_frame_round_t_fps_and_the_audio_stands_at_t(viewer, page):
    start = 30  # v0/clip_f000030: source frames 30..59
    times = [0.0, 0.2, 0.517, 0.76, 0.983, 0.05]  # none halfway between two frames
    for k, t in enumerate(times):
        frame = round(t * FPS)
        if k == 0:
            open_at(page, f"{viewer}clip/v0/clip_f000030#t={t}", frame, t)
        else:  # a new #t on the open page: it seeks there, paused
            page.evaluate("(t) => { location.hash = 't=' + t; }", t)
            open_at(page, "", frame, t)
        assert_shows(page, start, frame)
    page.reload()  # the page works after a reload, at the same #t
    open_at(page, "", round(times[-1] * FPS), times[-1])
    assert_shows(page, start, round(times[-1] * FPS))


def test_boxes_are_drawn_where_annotated_in_the_colour_of_the_speaking_label(viewer, page):
    checked = 0
    for key, frames in (("v0/clip_f000000", (5, 15, 29)), ("v0/clip_f000030", (0, 12, 25))):
        video, start = key.split("/")[0], int(key[-6:])
        for i in frames:
            t = i / FPS
            open_at(page, f"{viewer}clip/{key}#t={t:.4f}", i, round(t, 4))
            px = canvas_pixels(page, "overlay")
            for person in ("1", "2"):
                b = box(video, person, start + i)
                if b is None:
                    continue
                x, y, w, h = b
                want = SPEAKING_RGB if speaking(video, person, start + i) else SILENT_RGB
                # the stroke (2 px wide, centred on the edge) covers the pixel the edge starts in: left, right, bottom
                edges = [(math.floor(x), int(y + h / 2)), (math.floor(x + w), int(y + h / 2)), (int(x + w / 2), math.floor(y + h))]
                for ex, ey in edges:
                    r, g, bl, a = px[ey, ex]
                    assert a == 255 and max(abs(int(r) - want[0]), abs(int(g) - want[1]), abs(int(bl) - want[2])) <= 2, \
                        (key, i, person, (ex, ey), px[ey, ex], want)
                # inside the box and beside it, nothing is drawn (the frame shows through)
                for ix, iy in ((int(x + w / 2), int(y + h / 2)), (math.floor(x + w) + 4, int(y + h / 2))):
                    assert px[iy, ix, 3] == 0, (key, i, person, (ix, iy))
                checked += 1
    assert checked == 9  # person 1 in all six frames, person 2 in the three frames of the second clip


def test_keys_step_frames_and_play_follows_the_audio_clock(viewer, page):
    start = 30
    open_at(page, f"{viewer}clip/v0/clip_f000030#t=0.2", 6, 0.2)
    page.keyboard.press("ArrowRight")
    open_at(page, "", 7, 7 / FPS)
    assert_shows(page, start, 7)
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    open_at(page, "", 5, 5 / FPS)
    assert_shows(page, start, 5)
    page.keyboard.press("Space")  # play: the audio clock runs and the frames follow it
    page.wait_for_function("() => document.getElementById('audio').currentTime > 0.5 && !document.getElementById('audio').paused",
                           timeout=20_000)
    page.keyboard.press("Space")
    page.wait_for_function("""() => {
        const a = document.getElementById('audio');
        return a.paused && document.getElementById('frame').dataset.frame === String(Math.round(a.currentTime * 30));
    }""", timeout=20_000)
    t = audio_time(page)
    frame = round(t * FPS)
    assert 0.5 < t <= 1.0 and frame >= 15
    assert_shows(page, start, frame)
    # a click on the timelines seeks there (label column 130 px, then the clip's length across the drawn width)
    box_ = page.locator("#timeline").bounding_box()
    width = float(page.evaluate("() => document.getElementById('timeline').dataset.width"))
    page.mouse.click(box_["x"] + 130 + width * 0.25, box_["y"] + 5)
    page.wait_for_function("""() => {
        const a = document.getElementById('audio');
        return Math.abs(a.currentTime - 0.25) < 0.02 && document.getElementById('frame').dataset.frame === String(Math.round(a.currentTime * 30));
    }""", timeout=20_000)
    assert_shows(page, start, round(audio_time(page) * FPS))
    page.keyboard.press("Space")
    page.wait_for_function("() => document.getElementById('audio').currentTime > 0.55", timeout=20_000)
    page.keyboard.press("Space")
    page.wait_for_function("() => document.getElementById('audio').paused")
    t = audio_time(page)
    frame = round(t * FPS)
    open_at(page, "", frame, t)
    # the link to this time (updated on the next animation frame once paused) opens the same frame
    page.wait_for_function("""() => document.getElementById('link').href.endsWith(
        '#t=' + document.getElementById('audio').currentTime.toFixed(3))""", timeout=20_000)
    href = page.evaluate("document.getElementById('link').href")
    assert href.split("#")[0].endswith("/clip/v0/clip_f000030") and href.split("#t=")[1] == f"{t:.3f}"
    page.goto(href.replace("#", "?reload#"))  # a fresh load of the same page and time
    open_at(page, "", frame, float(f"{t:.3f}"))
    assert_shows(page, start, frame)


def test_a_damaged_clips_page_shows_its_error_and_the_others_still_play(viewer, view_build, page):
    where = damaged(view_build)
    for key, member in (("d1/clip_f000000", "d1/clip_f000000.boxes.npy"), ("d3/clip_f000000", "at byte")):
        response = page.goto(f"{viewer}clip/{key}")
        assert response.status == 500
        error = page.locator("#error")
        assert error.is_visible()
        message = error.inner_text()
        assert os.path.basename(where[key][0]) in message and member in message, message
    open_at(page, f"{viewer}clip/v1/clip_f000030#t=0.5", 15, 0.5)
    assert_shows(page, 30, 15)


# --------------------------------------------------------------------------- a build without the original frames


def test_a_derived_only_build_shows_its_gray_frames_and_crops(gray_build, browser):
    with tarfile.open(next(gray_build.glob("train/*.tar"))) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    gray = {i: np.asarray(Image.open(io.BytesIO(members[f"v0/clip_f000030.g{i + 1:06d}.jpg"])).convert("L")) for i in range(CLIP)}
    page = browser.new_page()
    try:
        with BackgroundServer(gray_build) as url:
            open_at(page, f"{url}clip/v0/clip_f000030#t=0.4", 12, 0.4)
            px = canvas_pixels(page, "frame")
            assert px.shape == (112, 112, 4)  # the stored 112x112 member, at its own size
            diffs = sorted((float(np.abs(px[..., 0].astype(int) - g.astype(int)).mean()), i) for i, g in gray.items())
            assert diffs[0][1] == 12 and diffs[0][0] < 2.0 and diffs[1][0] > 10.0, diffs[:2]
            # boxes scaled from 160x96 source pixels to the 112x112 picture
            x, y, w, h = box("v0", "2", 42)
            sx, sy = 112 / SIZE[0], 112 / SIZE[1]
            ov = canvas_pixels(page, "overlay")
            r, g, b, a = ov[int((y + h / 2) * sy), math.floor((x + w) * sx)]
            assert a == 255 and (r, g, b) == pytest.approx(SILENT_RGB, abs=2)
            # one crop canvas per person with crops, showing the stored crop of this frame
            page.wait_for_function("() => document.querySelectorAll('canvas.crop').length >= 1")
            crops = page.evaluate("Array.from(document.querySelectorAll('canvas.crop')).map(c => c.dataset.person)")
            assert crops and any(f"v0/clip_f000030.c{int(p):02d}.000013.jpg" in members for p in crops)
    finally:
        page.close()

"""How closely ``shardgen view`` keeps the frame on the canvas to the audio clock, and how soon a clip shows.

    python scripts/bench_viewer.py BUILD KEY [--plays 3]

Opens the clip in Debian's headless Chromium (muted), waits for its first frame, then plays it from
the start to the end ``--plays`` times and samples, on every animation frame, the audio element's
``currentTime`` and the frame drawn. Prints the time to the first frame (the page's request, the
clip's read on the server, its first JPEG decoded and drawn) and how often the frame drawn is
``round(currentTime * fps)``, one off, or further. Timing depends on the machine: compare runs
made on the same one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shardgen.tools.view import BackgroundServer  # noqa: E402
from tests.test_viewer_browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

SAMPLE = """async () => {
    const a = document.getElementById('audio'), c = document.getElementById('frame');
    const fps = window.avshardsViewer.data.fps, out = [];
    a.currentTime = 0;
    await a.play();
    while (!a.paused && !a.ended) {
        await new Promise(requestAnimationFrame);
        out.push([a.currentTime, Number(c.dataset.frame), Math.round(a.currentTime * fps)]);
    }
    return out;
}"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build")
    ap.add_argument("key")
    ap.add_argument("--plays", type=int, default=3)
    args = ap.parse_args()
    with BackgroundServer(args.build) as url, sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        context = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = context.new_page()
        t0 = time.perf_counter()
        page.goto(f"{url}clip/{args.key}")
        page.wait_for_function("() => document.getElementById('frame').dataset.frame === '0'")
        first = time.perf_counter() - t0
        offsets: Counter = Counter()
        for _ in range(args.plays):
            for _, drawn, wanted in page.evaluate(SAMPLE):
                offsets[min(abs(drawn - wanted), 2)] += 1
        context.close()
    n = sum(offsets.values())
    print(f"{args.key}: first frame drawn {first * 1000:.0f} ms after the request; {n} samples over {args.plays} plays: "
          f"frame = round(t*fps) {100 * offsets[0] / n:.1f} %, one off {100 * offsets[1] / n:.1f} %, "
          f"further {100 * offsets[2] / n:.1f} %")


if __name__ == "__main__":
    main()

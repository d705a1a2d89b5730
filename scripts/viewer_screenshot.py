"""Screenshot of ``shardgen view`` on one clip at one time, taken with headless Chromium (the README's picture).

    python scripts/viewer_screenshot.py BUILD KEY SECONDS OUT.png [--width 1200]

e.g. ``shardgen build --data ../shared/realdata/hamilton --out /tmp/ham --clip-seconds 4`` and then
``python scripts/viewer_screenshot.py /tmp/ham short_hamilton_clip/clip_f000120 1.5 docs/images/hamilton_view.png``.
Chromium is Debian's (scripts/install_test_services.sh), driven by Playwright's pip package.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shardgen.tools.view import BackgroundServer  # noqa: E402
from tests.test_viewer_browser import CHROMIUM, CHROMIUM_ARGS, open_at  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build")
    ap.add_argument("key")
    ap.add_argument("seconds", type=float)
    ap.add_argument("out", type=Path)
    ap.add_argument("--width", type=int, default=1200)
    args = ap.parse_args()
    fps_frame = None
    with BackgroundServer(args.build) as url, sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        context = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                                                       viewport={"width": args.width, "height": 800})
        page = context.new_page()
        page.goto(f"{url}clip/{args.key}")
        fps = page.evaluate("() => window.avshardsViewer.data.fps")
        fps_frame = round(args.seconds * fps)
        open_at(page, f"{url}clip/{args.key}#t={args.seconds}", fps_frame, args.seconds)
        bottom = page.evaluate("() => document.querySelector('table.facts').getBoundingClientRect().bottom")
        png = page.screenshot(full_page=True, clip={"x": 0, "y": 0, "width": args.width, "height": int(bottom) + 12})
        context.close()
    img = Image.open(io.BytesIO(png)).convert("RGB")  # full colour: a 256-colour palette posterises the frame
    args.out.parent.mkdir(parents=True, exist_ok=True)
    img.save(args.out, optimize=True)
    print(f"{args.out}: {args.key} frame {fps_frame} at {args.seconds} s, {img.size[0]}x{img.size[1]}")


if __name__ == "__main__":
    main()

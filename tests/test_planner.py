"""The one planner: frame directories and video files become clip plans through the same checks.

The source kind is an adapter (how many frames; is this clip's span usable); the wav, annotation
and skip checks and the ClipPlan construction are the planner's, once. So the same problem gives
the same skip reason and the same warning whichever kind the video comes as — only the source's
name differs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from shardgen.build.pipeline import build
from shardgen.build.plan import BuildParams
from tests.sources import ego4d_json, write_source
from tests.videos import make_video

ROOT = Path(__file__).resolve().parents[1]
P1 = BuildParams(clip_seconds=1.0)
N = 60  # frames: 2 s at 30 fps, as frames on disk or as a video file


def _source(root: Path, kind: str, annotations: dict | None) -> Path:
    src = write_source(root, {"v": N}, annotations=annotations)  # frames + a 2 s wav
    if kind == "video":  # the same video as a file: no frame directory, the wav stays beside it
        for f in (src / "video_imgs" / "v").iterdir():
            f.unlink()
        (src / "video_imgs" / "v").rmdir()
        (src / "video_imgs").rmdir()
        make_video(src / "videos" / "v.mp4", 30, N / 30, audio=False)
    return src


def _problems(res, kind: str, src: Path) -> dict:
    """What the build said about the video, with the source's own name (and directory) replaced."""
    name = "video_imgs/v" if kind == "frames" else "videos/v.mp4"

    def norm(text: str) -> str:
        return text.replace(name, "<source>").replace(str(src), "<root>")

    return {"skipped": sorted((s["key"], norm(s["reason"])) for s in res.report["skipped"]),
            "warnings": sorted(norm(w) for w in res.report["warnings"]),
            "findings": sorted((f["code"], norm(f["message"])) for f in res.report["findings"]),
            "clips": res.report["splits"][0]["clips_written"], "exit_code": res.exit_code}


CASES = {
    # the wav's header does not read: every clip skipped with the same reason
    "unreadable wav": (lambda src: (src / "wav" / "v.wav").write_bytes(b"RIFF not really"), ego4d_json({"v": {"1": [(0, 1, 1, 9, 9)]}}, {})),
    # a wav 0.5 s short: built, the same warning
    "short wav": (lambda src: sf.write(src / "wav" / "v.wav", np.zeros(24000, np.int16), 16000),
                  ego4d_json({"v": {"1": [(0, 1, 1, 9, 9)]}}, {})),
    # boxes and a voice segment past the last frame: built, the same warning
    "annotations past the end": (lambda src: None, ego4d_json({"v": {"1": [(0, 1, 1, 9, 9), (70, 1, 1, 9, 9)]}},
                                                               {"v": {"1": [(50, 80)]}})),
    # the annotation file covers another video only: every clip skipped with the same reason
    "unannotated": (lambda src: None, ego4d_json({"other": {"1": [(0, 1, 1, 9, 9)]}}, {})),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_both_source_kinds_go_through_the_same_checks(tmp_path, case):
    damage, annotations = CASES[case]
    seen = {}
    for kind in ("frames", "video"):
        src = _source(tmp_path / kind, kind, annotations)
        damage(src)
        seen[kind] = _problems(build(src, tmp_path / f"out_{kind}", ["train"], P1, workers=1, progress=False), kind, src)
    assert seen["frames"]["skipped"] or seen["frames"]["warnings"] or seen["frames"]["findings"], seen  # a problem at all
    assert seen["frames"] == seen["video"]


def test_one_clip_plan_construction_site():
    """ClipPlan(...) is made from checks in one place in the build pipeline, the planner; the only other call
    is the plan table giving a stored row back as a ClipPlan (ClipTable.__getitem__, columns → the same plan)."""
    calls = []
    for path in sorted((ROOT / "shardgen" / "build").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.Module))]:
            body = func.body if isinstance(func, ast.Module) else [func]
            for node in (n for b in body for n in ast.walk(b)):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ClipPlan":
                    owner = func.name if isinstance(func, ast.FunctionDef) else "<module>"
                    calls.append((path.relative_to(ROOT).as_posix(), owner))
    sites = sorted({c for c in calls if c[1] != "<module>"})
    assert sites == [("shardgen/build/plan.py", "__getitem__"), ("shardgen/build/probe.py", "plan_video")], sites

"""Preview sheet, build report and tensor grid: sizes, label tracks at the right pixels, HTML content, CLI."""

from __future__ import annotations

import importlib.util
import re
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("matplotlib")

from shardgen.build.pipeline import build  # noqa: E402
from shardgen.cli import main  # noqa: E402
from shardgen.demo.corpus import make_demo_corpus  # noqa: E402
from shardgen.core.sample import ClipSample  # noqa: E402
from shardgen.build.plan import BuildParams  # noqa: E402
from shardgen.tools import preview as pv  # noqa: E402
from shardgen.tools import html_report as rp  # noqa: E402
from tests.sources import index_clips  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 800


@pytest.fixture(scope="module")
def small_build(tmp_path_factory) -> Path:
    """Demo corpus of 4 s videos at 320x180 in 2 s clips, one train frame deleted (one clip skipped)."""
    root = tmp_path_factory.mktemp("preview")
    src = make_demo_corpus(root / "src", seconds=4.0, width=320, height=180, n_test=0, workers=1)
    (src / "video_imgs" / "demo_train_001" / "img_00070.jpg").unlink()  # clip f000060 of demo_train_001
    out = root / "out"
    build(src, out, ["train", "val"], BuildParams(clip_seconds=2.0, shard_clips=3), workers=1, progress=False)
    return out


def all_clips(split_dir: Path) -> dict[str, ClipSample]:
    """Independent reader: Python's tarfile over every shard."""
    groups: dict[str, dict[str, bytes]] = {}
    for shard in sorted(split_dir.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar:
                d, base = m.name.rsplit("/", 1)
                stem, ext = base.split(".", 1)
                groups.setdefault(f"{d}/{stem}", {})[ext] = tar.extractfile(m).read()
    return {k: ClipSample(k, v) for k, v in groups.items()}


def png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


# --------------------------------------------------------------------------- preview


def test_preview_image_size_and_sources(small_build, tmp_path):
    split = small_build / "train"
    first = min(all_clips(split))  # builder writes clips in key order
    shards = sorted(split.glob("*.tar"))
    for src in (split, split / "manifest.json", shards[0]):
        assert pv.load_clip(src).key == first
    out = tmp_path / "sheet.png"
    sheet = pv.preview(split, out, width=WIDTH)
    lay = sheet.layout
    assert Image.open(out).size == (WIDTH, lay.height) == (sheet.rgb.shape[1], sheet.rgb.shape[0])
    # 10 frames from first to last; 5 per row at the clip's aspect ratio
    assert lay.frame_indices[0] == 0 and lay.frame_indices[-1] == 59 and len(lay.frame_indices) == 10
    left, top, w, h = lay.frames[0]
    assert abs(h - w * 180 / 320) <= 1 and lay.t0 == 0.0 and lay.t1 == pytest.approx(2.0)
    # a key from another shard is read from its own byte range
    key = "demo_train_002/clip_f000060"
    assert pv.load_clip(split, key).key == key


def test_label_tracks_are_drawn_from_the_right_arrays(small_build, tmp_path):
    clips = all_clips(small_build / "train")
    key, sample = next((k, s) for k, s in clips.items() if 0 < s.voice.mean() < 1 and 0 < s.speaking[0].mean() < 1)
    rows = pv.track_rows(sample)
    assert [r.name for r in rows][:2] == ["visible", "voice"] and len(rows) == 2 + len(sample.meta["persons"])
    np.testing.assert_array_equal(rows[1].values, sample.voice)
    np.testing.assert_array_equal(rows[2].values, sample.speaking[0])

    out = tmp_path / "tracks.png"
    sheet = pv.preview(small_build / "train", out, key=key, width=WIDTH)
    lay = sheet.layout
    img = png(out)
    fps, start = sample.meta["fps"], sample.meta["start_frame"]
    assert lay.t0 == start / fps
    cols = [round(lay.column((start + i + 0.5) / fps)) for i in range(sample.n_frames)]  # centre of frame i's cell
    assert cols[1] - cols[0] >= 8  # cells wide enough to sample their centres

    def colours(name):
        y = round(lay.row(name))
        return np.array([img[y, x] for x in cols])

    voice = colours("voice")
    on, off = np.array(pv.VOICE_COLOR) * 255, np.array(pv.OFF_COLOR) * 255
    is_on = np.abs(voice - on).max(axis=1) < 20
    is_off = np.abs(voice - off).max(axis=1) < 20
    np.testing.assert_array_equal(is_on, sample.voice == 1)
    np.testing.assert_array_equal(is_off, sample.voice == 0)
    # the voice=1 and voice=0 columns really differ, and a one-frame shift would be caught
    assert np.abs(voice[sample.voice == 1].mean(0) - voice[sample.voice == 0].mean(0)).max() > 50
    assert not np.array_equal(np.roll(sample.voice, 1) == 1, is_on)
    assert sample.meta["persons"] and sample.speaking.any()  # the per-person check below has something to see
    for p, person in enumerate(sample.meta["persons"]):
        name = f"speaking {person['person_id']}" + (" (wearer)" if person.get("camera_wearer") else "")
        c = colours(name)
        np.testing.assert_array_equal(np.abs(c - np.array(pv.person_color(p)) * 255).max(axis=1) < 20,
                                      sample.speaking[p] == 1)


def test_missing_clip_key_is_a_clear_error(small_build, capsys):
    with pytest.raises(ValueError, match=r"clip 'demo_train_000/clip_f000999' is not in .* e\.g\. demo_train_000/clip_f000000"):
        pv.load_clip(small_build / "train", "demo_train_000/clip_f000999")
    assert main(["preview", str(small_build / "train"), "--clip", "nope/clip_f000000", "-o", "/dev/null"]) == 2
    assert "not in" in capsys.readouterr().err


def test_a_clip_is_found_by_key_in_the_index_with_the_same_answers_as_a_list_of_every_key(small_build):
    """load_clip looks a key up in the clip index's columns (video, start frame); what it finds, and the
    message for a key it does not find, are those of a search through every clip's key in index order."""
    split = small_build / "train"
    keys = [c["key"] for c in index_clips(split)]
    assert len(keys) >= 5 and len({k.split("/")[0] for k in keys}) >= 2
    for key in keys:
        assert pv.load_clip(split, key).key == key

    video = keys[0].split("/")[0]
    for key in (f"{video}/clip_f000999", f"{video}/clip_f0000000", f"{video}/garbage", "nope/clip_f000000", "nope", ""):
        with pytest.raises(ValueError) as err:
            pv.load_clip(split, key)
        said = re.fullmatch(r"clip (.*) is not in (.*); it has (\d+) clips, e\.g\. (.*)", str(err.value))
        assert said, str(err.value)
        assert said.group(1) == repr(key) and said.group(2) == str(split) and int(said.group(3)) == len(keys)
        # the examples: the first five clips of the key's video in index order, else of the source; "..." if more
        near = [k for k in keys if k.split("/")[0] == key.split("/")[0]] or keys
        offered = said.group(4).split(", ")
        assert offered[:5] == near[:5] and (offered[5:] == ["..."]) == (len(near) > 5), (key, offered)


# --------------------------------------------------------------------------- report


def test_report_html_rows_images_and_numbers(small_build, tmp_path):
    out = tmp_path / "report.html"
    stats = rp.write_report([small_build / "train", small_build / "val" / "manifest.json"], out)
    text = out.read_text()
    assert "<td>train</td>" in text and "<td>val</td>" in text
    assert text.count('src="data:image/png;base64,') == 2 and "http" not in text.split("<body>")[1]
    assert "<td>missing frame</td>" in text and "demo_train_001/clip_f000060" in text
    train = stats[0]
    clips = all_clips(small_build / "train")
    frames = sum(s.n_frames for s in clips.values())
    assert train.clips == len(clips) == 3 * 2 - 1 and train.skip_reasons == {"missing frame": 1}
    assert train.voice == pytest.approx(sum(int(s.voice.sum()) for s in clips.values()) / frames)
    assert train.visible == pytest.approx(sum(int(s.visible.sum()) for s in clips.values()) / frames)
    assert train.speaking == pytest.approx(sum(int(s.speaking.sum()) for s in clips.values())
                                           / sum(s.speaking.size for s in clips.values()))
    boxes = np.concatenate([s.boxes.reshape(-1, 4) for s in clips.values()])
    boxes = boxes[~np.isnan(boxes[:, 0])]
    np.testing.assert_allclose(np.sort(train.box_sizes), np.sort(np.maximum(boxes[:, 2], boxes[:, 3])))
    assert len(train.shard_bytes) == 2 and sum(train.shard_bytes) == sum(p.stat().st_size for p in (small_build / "train").glob("*.tar"))


def test_report_cli_png_and_exit_codes(small_build, tmp_path, capsys):
    out = tmp_path / "report.png"
    assert main(["report", str(small_build), "-o", str(out)]) == 0  # a build directory: all its splits
    assert Image.open(out).size[0] == 1600 and "train, val" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "missing"), "-o", str(tmp_path / "r.html")]) == 2
    assert "not a manifest" in capsys.readouterr().err
    assert main(["preview", str(small_build / "val"), "-o", str(tmp_path / "v.png"), "--width", "700"]) == 0
    assert Image.open(tmp_path / "v.png").size[0] == 700


def test_missing_matplotlib_is_a_clear_error(small_build, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(RuntimeError, match=r"avshards\[viz\]"):
        pv.pyplot()
    assert main(["preview", str(small_build / "train"), "-o", str(tmp_path / "x.png")]) == 2
    assert "matplotlib" in capsys.readouterr().err


# --------------------------------------------------------------------------- tensor grid


def test_preview_tensors_shows_the_exact_faces(small_build, tmp_path):
    spec = importlib.util.spec_from_file_location("preview_tensors", ROOT / "scripts" / "preview_tensors.py")
    pt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pt)
    out = tmp_path / "grid.png"
    assert pt.main([str(small_build / "train"), "-o", str(out), "--mode", "asd-tracks", "--n", "8", "--items", "1"]) == 0
    items = pt.take_items(small_build / "train", mode="asd-tracks", items=1)
    _, faces, labels, meta = items[0]
    img = png(out)
    assert img.shape[1] == 2 * pt.MARGIN + 8 * (112 + 2 * pt.BORDER + pt.GAP) - pt.GAP
    top, left = pt.MARGIN + 22 + pt.HEADER, pt.MARGIN
    cell = img[top:top + 112 + 2 * pt.BORDER, left:left + 112 + 2 * pt.BORDER]
    np.testing.assert_array_equal(cell[pt.BORDER:-pt.BORDER, pt.BORDER:-pt.BORDER, 0], faces[0])  # pixel for pixel
    assert tuple(cell[0, 0]) == (pt.ON if labels[0] else pt.OFF)
    assert pt.main([str(tmp_path / "nowhere"), "-o", str(out)]) == 2

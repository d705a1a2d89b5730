"""Tests for the synthetic demo corpus generator (shardgen.demo.corpus)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from shardgen.demo import corpus as demo
from shardgen.core.storage.atomic import TMP_MARK
from shardgen.demo.corpus import SKIN_COLOURS, demo_truth, main, make_demo_corpus

SECONDS, FPS, W, H = 3.0, 30, 320, 180
N_FRAMES = int(SECONDS * FPS)
KW = dict(seconds=SECONDS, width=W, height=H, seed=0)
IDS = {
    "train": ["demo_train_000", "demo_train_001", "demo_train_002"],
    "val": ["demo_val_000", "demo_val_001"],
    "test": ["demo_test_000"],
}
ALL_IDS = [v for s in ("train", "val", "test") for v in IDS[s]]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "corpus"
    out = make_demo_corpus(root, workers=1, **KW)
    assert out == root
    return root


def _clips(root: Path, split: str) -> list[dict]:
    doc = json.loads((root / "json" / f"av_{split}.json").read_text())
    return [c for v in doc["videos"] for c in v["clips"]]


def _frame(root: Path, vid: str, f: int) -> np.ndarray:
    """0-based frame f of video vid as int RGB array."""
    with Image.open(root / "video_imgs" / vid / f"img_{f + 1:05d}.jpg") as im:
        return np.asarray(im.convert("RGB"), dtype=np.int32)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_split_lists(corpus):
    for d in ("split", "json", "wav", "video_imgs"):
        assert (corpus / d).is_dir()
    for split, ids in IDS.items():
        text = (corpus / "split" / f"{split}.list").read_text()
        assert text == "".join(f"{v}\n" for v in ids)
        assert (corpus / "json" / f"av_{split}.json").is_file()
    assert sorted(p.name for p in (corpus / "video_imgs").iterdir()) == sorted(ALL_IDS)
    assert sorted(p.name for p in (corpus / "wav").iterdir()) == sorted(f"{v}.wav" for v in ALL_IDS)
    # no leftover temp or progress files
    assert not [p for p in corpus.rglob(f"*{TMP_MARK}*")]
    assert not (corpus / ".demo_inprogress.json").exists()
    assert (corpus / demo.MARKER_NAME).is_file()


def test_frames(corpus):
    for vid in ALL_IDS:
        names = sorted(p.name for p in (corpus / "video_imgs" / vid).iterdir())
        assert names == [f"img_{i:05d}.jpg" for i in range(1, N_FRAMES + 1)]
    with Image.open(corpus / "video_imgs" / ALL_IDS[0] / "img_00001.jpg") as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (W, H)
        assert "progressive" not in im.info and "progression" not in im.info  # baseline


def test_json_structure(corpus):
    for split, ids in IDS.items():
        doc = json.loads((corpus / "json" / f"av_{split}.json").read_text())
        assert [v["video_uid"] for v in doc["videos"]] == ids
        for v in doc["videos"]:
            assert len(v["clips"]) == 1
            clip = v["clips"][0]
            assert clip["clip_uid"] == clip["video_uid"] == v["video_uid"]
            persons = clip["persons"]
            assert [p["person_id"] for p in persons] == ["1", "2", "3"]
            wearers = [p for p in persons if p["camera_wearer"]]
            assert len(wearers) == 1 and wearers[0]["tracking_paths"] == []
            assert wearers[0]["voice_segments"]
            track_ids = set()
            for p in persons:
                if p["camera_wearer"]:
                    continue
                paths = p["tracking_paths"]
                assert len(paths) == 2, "each visible person leaves and re-enters"
                frames = []
                for t in paths:
                    assert t["track_id"] not in track_ids
                    track_ids.add(t["track_id"])
                    fs = [b["frame"] for b in t["track"]]
                    assert fs == list(range(fs[0], fs[-1] + 1))
                    frames.append(fs)
                assert frames[1][0] - frames[0][-1] > 1, "gap between the two tracks"
                assert 0 <= frames[0][0] and frames[1][-1] <= N_FRAMES - 1
            for p in persons:
                last = -1
                for s in p["voice_segments"]:
                    assert s["person"] == p["person_id"]
                    assert last < s["start_frame"] <= s["end_frame"] <= N_FRAMES - 1
                    assert s["start_time"] == s["start_frame"] / FPS
                    assert s["end_time"] == s["end_frame"] / FPS
                    last = s["end_frame"]


def test_frame_zero_is_annotated(corpus):
    # Ego4D frames are 0-based: some video must have a box on frame 0 (img_00001.jpg)
    firsts = [t["track"][0]["frame"] for s in IDS for c in _clips(corpus, s)
              for p in c["persons"] for t in p["tracking_paths"]]
    assert 0 in firsts


def test_boxes_inside_frame_and_on_the_drawn_face(corpus):
    skins = np.array(SKIN_COLOURS, dtype=np.int32)
    checked = 0
    for split in IDS:
        for clip in _clips(corpus, split):
            vid = clip["video_uid"]
            boxes_by_frame: dict[int, list] = {}
            for p in clip["persons"]:
                for t in p["tracking_paths"]:
                    for b in t["track"]:
                        x, y, w, h = b["x"], b["y"], b["width"], b["height"]
                        assert w > 0 and h > 0
                        assert 0 <= x and x + w <= W and 0 <= y and y + h <= H
                        boxes_by_frame.setdefault(b["frame"], []).append((x, y, w, h))
            for f in (0, N_FRAMES // 2, N_FRAMES - 1):
                img = _frame(corpus, vid, f)
                for x, y, w, h in boxes_by_frame.get(f, []):
                    x, y, w, h = int(x), int(y), int(w), int(h)
                    cy, cx = y + h // 2, x + w // 2
                    c = img[cy - 1 : cy + 2, cx - 1 : cx + 2].reshape(-1, 3).mean(0)
                    dist = np.abs(skins - c).max(axis=1)
                    assert dist.min() < 20, f"box centre is not face-coloured: {vid} f={f} {c}"
                    skin = skins[dist.argmin()]
                    # the run of face-coloured pixels on the centre row spans the box
                    row = np.abs(img[cy] - skin).max(axis=1) < 40
                    lo = cx
                    while lo > 0 and row[lo - 1]:
                        lo -= 1
                    hi = cx
                    while hi < W - 1 and row[hi + 1]:
                        hi += 1
                    assert abs(lo - x) <= 3 and abs(hi - (x + w - 1)) <= 3, (vid, f, lo, hi, x, w)
                    checked += 1
    assert checked >= 10


def test_mouth_opens_when_speaking(corpus):
    open_dark, closed_dark = [], []
    for split in IDS:
        for clip in _clips(corpus, split):
            vid = clip["video_uid"]
            for p in clip["persons"]:
                speaking = set()
                for s in p["voice_segments"]:
                    speaking.update(range(s["start_frame"], s["end_frame"] + 1))
                for t in p["tracking_paths"]:
                    for b in t["track"][::3]:
                        x, y, w, h = (int(b[k]) for k in ("x", "y", "width", "height"))
                        img = _frame(corpus, vid, b["frame"])
                        region = img[y + int(0.64 * h) : y + int(0.80 * h), x + int(0.35 * w) : x + int(0.65 * w)]
                        dark = float((region.sum(axis=2) < 230).mean())  # mouth (95, 25, 40) vs skin
                        (open_dark if b["frame"] in speaking else closed_dark).append(dark)
    assert open_dark and closed_dark
    assert np.mean(open_dark) > 2 * np.mean(closed_dark) + 0.02


def test_wavs(corpus):
    truth = demo_truth(corpus)["videos"]
    for vid in ALL_IDS:
        info = sf.info(str(corpus / "wav" / f"{vid}.wav"))
        assert info.format == "WAV" and info.subtype == "PCM_16"
        if vid == "demo_val_001":  # last val video: 48 kHz stereo, full length
            assert (info.samplerate, info.channels, info.frames) == (48000, 2, int(SECONDS * 48000))
        elif vid == "demo_train_002":  # last train video: 0.5 s short
            assert (info.samplerate, info.channels) == (16000, 1)
            assert info.frames == int((SECONDS - 0.5) * 16000)
            assert truth[vid]["wav_short"]
        else:
            assert (info.samplerate, info.channels, info.frames) == (16000, 1, int(SECONDS * 16000))
            assert not truth[vid]["wav_short"]
        t = truth[vid]
        assert (t["wav_sample_rate"], t["wav_channels"], t["wav_samples"]) == (
            info.samplerate, info.channels, info.frames)
        assert t["n_frames"] == N_FRAMES


def test_speech_energy_follows_voice_segments(corpus):
    for split in IDS:
        clips = _clips(corpus, split)
        assert len(clips) == len(IDS[split])  # one annotated clip a video: every one is checked
        for clip in clips:
            x, sr = sf.read(str(corpus / "wav" / f"{clip['video_uid']}.wav"), dtype="float64")
            if x.ndim == 2:
                x = x.mean(axis=1)
            mask = np.zeros(len(x), dtype=bool)
            for p in clip["persons"]:
                for s in p["voice_segments"]:
                    mask[int(s["start_frame"] * sr / FPS) : int((s["end_frame"] + 1) * sr / FPS)] = True
            assert mask.any() and (~mask).any()
            rms_in = np.sqrt(np.mean(x[mask] ** 2))
            rms_out = np.sqrt(np.mean(x[~mask] ** 2))
            assert rms_in > 10 * rms_out and rms_out < 0.005


def test_deterministic_and_worker_independent(corpus, tmp_path):
    other = make_demo_corpus(tmp_path / "again", workers=2, **KW)
    a, b = _tree(corpus), _tree(other)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    different = make_demo_corpus(tmp_path / "seed1", workers=1, **{**KW, "seed": 1})
    c = _tree(different)
    assert c["json/av_train.json"] != a["json/av_train.json"]


def _must_not_run(name):
    def fail(*args, **kwargs):
        raise AssertionError(f"a repeated demo call with the same arguments ran {name}")
    return fail


def test_second_call_is_a_noop_and_args_change_regenerates(tmp_path, monkeypatch):
    root = tmp_path / "c"
    kw = dict(seconds=2.0, width=96, height=64, n_train=1, n_val=1, n_test=1, workers=1)
    make_demo_corpus(root, **kw)
    frame = root / "video_imgs" / "demo_train_000" / "img_00001.jpg"
    stat = frame.stat()
    with monkeypatch.context() as m:  # a no-op reads its marker file only: nothing is planned, drawn or written
        for name in ("plan_video", "render_task", "synth_audio", "write_wav", "write_atomically"):
            m.setattr(demo, name, _must_not_run(name))
        make_demo_corpus(root, **kw)
    assert frame.stat().st_mtime_ns == stat.st_mtime_ns and frame.stat().st_ino == stat.st_ino
    # different args: regenerated, and stale frames / videos from the old run are gone
    make_demo_corpus(root, **{**kw, "seconds": 1.0, "n_val": 0})
    assert len(list((root / "video_imgs" / "demo_train_000").glob("img_*.jpg"))) == 30
    assert not (root / "video_imgs" / "demo_val_000").exists()
    assert not (root / "wav" / "demo_val_000.wav").exists()
    assert (root / "split" / "val.list").read_text() == ""
    assert json.loads((root / "json" / "av_val.json").read_text()) == {"videos": []}
    assert demo_truth(root)["args"]["seconds"] == 1.0


def test_interrupted_run_resumes(tmp_path):
    root = tmp_path / "c"
    kw = dict(seconds=1.0, width=96, height=64, n_train=1, n_val=1, n_test=0, workers=1)
    make_demo_corpus(root, **kw)
    ref = _tree(root)
    # simulate a crash: marker gone, progress marker present, some frames missing, a stray temp
    marker = json.loads((root / demo.MARKER_NAME).read_text())
    (root / demo.MARKER_NAME).unlink()
    (root / ".demo_inprogress.json").write_text(
        json.dumps({"version": marker["version"], "args": marker["args"]}))
    d = root / "video_imgs" / "demo_val_000"
    for p in sorted(d.glob("img_*.jpg"))[5:]:
        p.unlink()
    (d / ".img_00009.jpg.123.tmp").write_bytes(b"junk")
    make_demo_corpus(root, **kw)
    assert _tree(root) == ref


def test_bad_args(tmp_path):
    with pytest.raises(ValueError):
        make_demo_corpus(tmp_path / "x", seconds=0)
    with pytest.raises(ValueError):
        make_demo_corpus(tmp_path / "x", width=4)


def test_cli(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    help_text = capsys.readouterr().out
    for opt in ("--out", "--seconds", "--width", "--height", "--n-train", "--n-val", "--n-test",
                "--seed", "--fps", "--sample-rate", "--quality", "--workers"):
        assert opt in help_text
    out = tmp_path / "cli"
    rc = main(["--out", str(out), "--seconds", "1", "--width", "64", "--height", "48",
               "--n-train", "1", "--n-val", "1", "--n-test", "0", "--workers", "1"])
    assert rc == 0
    assert (out / "split" / "train.list").read_text() == "demo_train_000\n"
    assert (out / "split" / "test.list").read_text() == ""
    assert len(os.listdir(out / "video_imgs" / "demo_train_000")) == 30

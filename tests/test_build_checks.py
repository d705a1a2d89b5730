"""No silent wrong labels (issue 19): annotation and fps checks, a dry run, refusals that touch nothing, exit status.

Each case the issue found by building as a careless newcomer would is built here, on real bytes:

* misspelt annotation keys give a finding naming the file, the place in the document and the nearest
  known key (exit status 3; ``--strict`` refuses, writing nothing);
* persons with nothing, listed videos without annotations and annotations for no listed video are
  counted and shown;
* a 25 fps video built at ``--fps 30`` gets the repeated-frames finding (its count equal to the
  byte-identical neighbours in the shards); ``--fps native`` builds it at 25 fps with the timing and
  TalkNet's MFCC window of 25 fps (against python_speech_features), frames equal to ``ffmpeg -vf fps=25``;
* nonsense ``--fps`` values are refused naming the flag;
* a refused build leaves the output directory byte-identical; ``--dry-run`` writes nothing;
* the summary names each skipped video with its whole reason, and FFmpeg's words are in it, not on stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import loaders
from shardgen.build.annotations.ego4d import KNOWN_KEYS
from shardgen.build.pipeline import BuildError, StrictError, build
from shardgen.build.plan import BuildParams
from shardgen.build.source import SourceError
from tests.sources import ego4d_json, index_clips, npy, read_clips, write_source
from tests.videos import needs_ffmpeg, video_source

ROOT = Path(__file__).resolve().parents[1]
P1 = BuildParams(clip_seconds=1.0)


def tree(d: Path) -> dict[str, bytes]:
    """Every file under ``d`` (names and bytes), or {} when ``d`` does not exist."""
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()} if d.exists() else {}


def findings(res, code: str | None = None) -> list[dict]:
    return [f for f in res.report["findings"] if code is None or f["code"] == code]


def unwrapped(summary: str) -> str:
    """The summary with wrapped lines joined again (the wrap indents continuation lines by 6)."""
    return summary.replace("\n      ", " ")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shardgen", "build", "--no-progress", "--workers", "1", *args],
                          capture_output=True, text=True, cwd=ROOT)


# ----------------------------------------------------------------------------- annotations


def typo_annotations() -> dict:
    """Two persons of one clip, each with one misspelt key: 'tracking_path' (its face track is not read) and
    'voice_segment' (its speech is not read); a third person's track point says 'X' for 'x'."""
    track = [{"frame": f, "x": 5, "y": 5, "width": 20, "height": 20} for f in range(30)]
    return {"videos": [{"video_uid": "v", "clips": [{"clip_uid": "v", "persons": [
        {"person_id": "1", "camera_wearer": False, "tracking_path": [{"track_id": "a", "track": track}],
         "voice_segments": [{"start_frame": 0, "end_frame": 9, "start_time": 0.0, "end_time": 0.3}]},
        {"person_id": "2", "camera_wearer": False, "tracking_paths": [{"track_id": "b", "track": track}],
         "voice_segment": [{"start_frame": 10, "end_frame": 19, "start_time": 0.33, "end_time": 0.63}]},
        {"person_id": "3", "camera_wearer": False, "tracking_paths": [{"track_id": "c", "track": [
            {"frame": 0, "X": 5, "y": 5, "width": 20, "height": 20}] + track[1:]}]},
    ]}]}]}


def test_misspelt_keys_are_named_located_findings_and_strict_refuses_them(tmp_path):
    src = write_source(tmp_path / "s", {"v": 30}, annotations=typo_annotations())
    out = tmp_path / "o"
    res = build(src, out, ["train"], P1, progress=False)
    assert res.exit_code == 3 and res.report["exit_code"] == 3
    messages = [f["message"] for f in findings(res, "unknown annotation key")]
    assert messages == [
        "av_train.json: videos[0].clips[0].persons[0]: unknown key 'tracking_path' in a person "
        "(did you mean 'tracking_paths'?): its data is not read",
        "av_train.json: videos[0].clips[0].persons[1]: unknown key 'voice_segment' in a person "
        "(did you mean 'voice_segments'?): its data is not read",
        "av_train.json: videos[0].clips[0].persons[2].tracking_paths[0].track[0]: unknown key 'X' in a track point "
        "(did you mean 'x'?): its data is not read",
    ]
    assert all(f["split"] == "train" and f["video_id"] == "v" for f in findings(res))
    [dropped] = findings(res, "annotation entries dropped")
    assert "1 annotation entries of v dropped: track point missing frame/x/y/width/height (1)" in dropped["message"]
    text = unwrapped(res.summary)
    for m in messages:
        assert f"train/v: {m}" in text
    assert "exit status 3" in text
    # what the typos did to the labels: person 1 has no box, person 2 never speaks (and both are still built)
    clip = read_clips(*sorted((out / "train").glob("*.tar")))["v/clip_f000000"]
    boxes, speaking = npy(clip["boxes.npy"]), npy(clip["speaking.npy"])
    assert np.isnan(boxes[0]).all() and not np.isnan(boxes[1]).any() and speaking[1].sum() == 0
    # --strict refuses before anything is written: no output directory at all, and the CLI says why with exit 1
    with pytest.raises(StrictError, match=r"(?s)--strict: 4 finding\(s\).*unknown key 'tracking_path'"):
        build(src, tmp_path / "strict", ["train"], P1, strict=True, progress=False)
    assert not (tmp_path / "strict").exists()
    run = cli("--data", str(src), "--out", str(tmp_path / "strict_cli"), "--split", "train", "--clip-seconds", "1",
              "--strict")
    assert run.returncode == 1 and "did you mean 'voice_segments'?" in run.stderr
    assert not (tmp_path / "strict_cli").exists()
    run = cli("--data", str(src), "--out", str(tmp_path / "cli"), "--split", "train", "--clip-seconds", "1")
    assert run.returncode == 3 and "did you mean 'tracking_paths'?" in unwrapped(run.stdout)


def test_the_whole_published_ego4d_schema_gives_no_unknown_key_finding(tmp_path):
    """Every key of Ego4D's v2 'AV Diarization' schema (and the v1 keys read) at its level: a real file
    must not drown its one typo in false alarms."""
    seg = {k: 1 for k in KNOWN_KEYS["voice segment"]} | {"start_frame": 0, "end_frame": 3, "person": "1"}
    point = {k: 1 for k in KNOWN_KEYS["track point"]} | {"frame": 0, "clip_frame": None, "x": 1, "y": 1}
    path = {k: [] for k in KNOWN_KEYS["tracking path"]} | {"track_id": "t", "track": [point], "suspect": False,
                                                           "unmapped_frames_count": 0, "visual_anchor": False}
    person = {"person_id": "1", "camera_wearer": False, "tracking_paths": [path], "voice_segments": [seg]}
    wearer = {"person_id": "0", "camera_wearer": True, "voice_segments": [seg | {"person": "0"}]}
    clip = {k: [] for k in KNOWN_KEYS["clip"]} | {"clip_uid": "v", "video_uid": "V", "valid": True,
                                                   "camera_wearer": wearer, "persons": [person]}
    doc = {"date": "x", "version": "v2", "description": "x", "manifest": "x", "split": "train",
           "videos": [{"video_uid": "V", "split": "train", "clips": [clip]}]}
    assert set(doc) <= KNOWN_KEYS["file"] and set(clip) == KNOWN_KEYS["clip"]
    src = write_source(tmp_path / "s", {"v": 30}, annotations=doc)
    res = build(src, tmp_path / "o", ["train"], P1, progress=False)
    assert findings(res) == [] and res.exit_code == 0, findings(res)


def test_empty_persons_unannotated_videos_and_unlisted_annotations_are_counted_and_shown(tmp_path):
    ann = ego4d_json({"v": {"1": [(0, 1, 1, 9, 9)]}, "ghost": {"1": [(0, 1, 1, 9, 9)]},
                      "elsewhere": {"1": [(0, 1, 1, 9, 9)]}}, {})
    assert [v["video_uid"] for v in ann["videos"]] == ["elsewhere", "ghost", "v"]
    ann["videos"][2]["clips"][0]["persons"].append({"person_id": "7", "camera_wearer": False})  # nothing at all
    src = write_source(tmp_path / "s", {"v": 30, "w": 30}, annotations=ann, splits={"train": ["v", "w"]})
    (src / "split" / "val.list").write_text("elsewhere\n")  # annotated, listed in a split not built now: fine
    res = build(src, tmp_path / "o", ["train"], BuildParams(clip_seconds=1.0, allow_unannotated=True), progress=False)
    [empty] = findings(res, "person with no face track and no voice segment")
    assert empty["message"].startswith("av_train.json: videos[2].clips[0].persons[1]: person '7' has no face box and "
                                       "no voice segment") and empty["video_id"] == "v"
    [unlisted] = findings(res, "annotations for videos no split list names")
    assert unlisted["message"].startswith("av_train.json: annotates 1 video(s) that no split list (split/train.list, "
                                          "split/val.list) names: ghost ")
    assert res.report["splits"][0]["videos_unannotated"] == 1 and res.report["splits"][0]["findings"] == 1
    text = unwrapped(res.summary)
    assert empty["message"] in text and unlisted["message"] in text
    assert "listed videos without annotations: 1" in text and res.exit_code == 3
    # without --allow-unannotated the unannotated video is a skip naming why
    res = build(src, tmp_path / "o2", ["train"], P1, progress=False)
    assert {s["reason"] for s in res.report["skipped"] if s["video_id"] == "w"} == {
        "no annotations for this video in the split's annotation file (--allow-unannotated builds it unlabelled)"}


def test_ava_csv_header_is_read_by_name_unknown_columns_are_findings_and_labels_checked(tmp_path):
    src = write_source(tmp_path / "s", {"mov": 30}, size=(64, 48))
    (src / "csv").mkdir()
    rows = ["entity_id,label,video_id,frame_timestamp,entity_box_x1,entity_box_y1,entity_box_x2,entity_box_y2,Label_Id"]
    rows += [f"A,{'SPEAKING_AUDIBLE' if f < 5 else 'NOT_SPEAKING'},mov,{f / 30:.6f},0.25,0.5,0.75,1.0,0.9" for f in range(10)]
    (src / "csv" / "ava.csv").write_text("\n".join(rows) + "\n")
    res = build(src, tmp_path / "o", ["train"], P1, progress=False)
    assert [f["message"] for f in findings(res)] == [
        "ava.csv: header: unknown column 'Label_Id' (did you mean 'label_id'?): it is not read"]
    clip = read_clips(*sorted((tmp_path / "o" / "train").glob("*.tar")))["mov/clip_f000000"]
    assert npy(clip["speaking.npy"])[0][:10].tolist() == [1] * 5 + [0] * 5  # columns found by name, not position
    np.testing.assert_allclose(npy(clip["boxes.npy"])[0, 0], [16, 24, 32, 24])
    (src / "csv" / "ava.csv").write_text(rows[0].replace("entity_box_x1", "entity_box_xl") + "\n" + rows[1] + "\n")
    with pytest.raises(SourceError, match=r"ava\.csv:1: the header has no column 'entity_box_x1' \(it names .*entity_box_xl"):
        build(src, tmp_path / "o2", ["train"], P1, progress=False)
    (src / "csv" / "ava.csv").write_text("mov,0.5,0.1,0.1,0.5,0.5,SPEAKING_AUDIBEL,A\n")
    with pytest.raises(SourceError, match=r"ava\.csv:1: unknown label 'SPEAKING_AUDIBEL' \(did you mean 'SPEAKING_AUDIBLE'\?\)"):
        build(src, tmp_path / "o3", ["train"], P1, progress=False)


# ----------------------------------------------------------------------------- fps


def test_nonsense_fps_and_clip_lengths_are_refused_naming_the_flag(tmp_path):
    src = write_source(tmp_path / "s", {"v": 30})
    for value in ("nan", "inf", "0", "-25", "5000", "thirty"):
        run = cli("--data", str(src), "--out", str(tmp_path / "o"), "--fps", value)
        assert run.returncode == 2 and f"argument --fps: {value!r}: expected" in run.stderr, run.stderr
    for kw, flag in (({"fps": float("nan")}, "--fps nan"), ({"fps": 0}, "--fps 0"),
                     ({"clip_seconds": float("inf")}, "--clip-seconds inf"),
                     ({"clip_seconds": 0.001}, "--clip-seconds 0.001 is 0 frames at 30 fps"),
                     ({"stride_seconds": -1.0}, "--stride-seconds -1.0")):
        with pytest.raises(ValueError, match=flag):
            BuildParams(**kw)
    assert not (tmp_path / "o").exists()


def consecutive_repeats(out: Path) -> int:
    """Clip frames byte-identical to the frame before (within a clip): repeats the fps filter made."""
    n = 0
    for fields in read_clips(*sorted((out / "train").glob("*.tar"))).values():
        frames = [fields[k] for k in sorted(k for k in fields if k.startswith("f") and k.endswith(".jpg"))]
        n += sum(a == b for a, b in zip(frames, frames[1:]))
    return n


@needs_ffmpeg
def test_25fps_video_at_fps_30_is_a_finding_and_fps_native_builds_it_at_25_with_its_timing_and_mfcc(tmp_path):
    from tests.test_loader import reference_mfcc
    from tests.test_video import check_frames_against_ffmpeg

    src = video_source(tmp_path / "src", {"v": {"fps": 25, "seconds": 2.0}})
    at30 = build(src, tmp_path / "o30", ["train"], BuildParams(clip_seconds=1.0, allow_unannotated=True), progress=False)
    [resampled] = findings(at30, "frames repeated or dropped by --fps")
    repeats = consecutive_repeats(tmp_path / "o30")
    assert repeats == 10  # 2 s: 60 output frames from 50 inputs
    assert resampled["message"] == ("videos/v.mp4 runs at 25 fps and is built at 30 fps: ffmpeg's fps filter repeats "
                                    f"{repeats} of its frames (5.0 a second) over 60 output frames; pass --fps 25 or "
                                    "--fps native to keep every frame once")
    assert at30.exit_code == 3

    out = tmp_path / "native"
    res = build(src, out, ["train"], BuildParams(clip_seconds=1.0, fps="native", allow_unannotated=True), progress=False)
    assert findings(res) == [] and res.exit_code == 0 and consecutive_repeats(out) == 0
    manifest = json.loads((out / "train" / "manifest.json").read_text())
    assert manifest["params"]["fps"] == "native" and manifest["totals"]["frames"] == 50
    assert manifest["totals"]["hours"] == round(2.0 / 3600, 6)
    clips = read_clips(*sorted((out / "train").glob("*.tar")))
    assert sorted(clips) == ["v/clip_f000000", "v/clip_f000025"]
    for key, fields in clips.items():
        meta = json.loads(fields["json"])
        assert (meta["fps"], meta["fps_exact"], meta["n_frames"]) == (25.0, "25/1", 25)
        assert meta["clip_start_time"] == meta["start_frame"] / 25
        assert len(np.frombuffer(fields["wav"][44:], "<i2")) == 16000  # 25 frames at 25 fps: 1 s of audio
    check_frames_against_ffmpeg(out, src / "videos" / "v.mp4", 25, (96, 64))  # = ffmpeg -vf fps=25: every frame once
    # the loader takes the clip's own rate: frame times f/25, MFCC windows 0.025*25/25 and 0.010*25/25 s
    n = 0
    for audio, _faces, _labels, meta in loaders.make_loader(out / "train", batch_size=1, shuffle=False, with_meta=True,
                                                            labels="voice", allow_unlabelled=True):
        m = meta[0]
        start, T = m["meta"]["start_frame"], 25
        assert m["fps"] == 25.0 and audio.shape == (1, 4 * T, 13)
        np.testing.assert_array_equal(m["frame_t"], (start + np.arange(T)) / 25.0)
        np.testing.assert_allclose(m["audio_feat_t"], start / 25.0 + np.arange(4 * T) * 160 / 16000, atol=1e-9)
        np.testing.assert_allclose(audio[0].numpy(), reference_mfcc(clips[m["key"]]["wav"], T, 25.0), atol=1e-3)
        n += 1
    assert n == 2


def test_frames_and_annotation_times_that_imply_another_rate_are_findings(tmp_path):
    # 200 frames and an 8 s wav: 25 fps frames, built at the default 30
    src = write_source(tmp_path / "s", {"v": 200}, fps=25.0,
                       annotations=ego4d_json({"v": {"1": [(f, 1, 1, 9, 9) for f in range(200)]}}, {}))
    doc = json.loads((src / "json" / "av_train.json").read_text())
    doc["videos"][0]["clips"][0]["persons"][0]["voice_segments"] = [  # frames and times counted at 25 fps
        {"start_frame": s, "end_frame": s + 10, "start_time": s / 25, "end_time": (s + 10) / 25} for s in (60, 120)]
    (src / "json" / "av_train.json").write_text(json.dumps(doc))
    res = build(src, tmp_path / "o", ["train"], P1, progress=False)
    messages = sorted(f["message"] for f in findings(res, "the source implies another frame rate"))
    assert messages == [
        "av_train.json: the voice segments of v give frame numbers and times that imply 25.000 fps (median frame/time "
        "of 4 segment bounds), but video_imgs/v is built at 30 fps: its boxes and voice would land on frames of another "
        "time (pass --fps 25)",
        "wav/v.wav is 8.000 s and video_imgs/v has 200 frames: that is 25 fps, but it is built at 30 fps: audio and "
        "labels would drift apart (pass --fps 25)",
    ]
    at25 = build(src, tmp_path / "o25", ["train"], BuildParams(clip_seconds=1.0, fps=25), progress=False)
    assert findings(at25) == [] and at25.exit_code == 0
    # --fps native: frame directories state no rate: skipped, saying so
    native = build(src, tmp_path / "native", ["train"], BuildParams(clip_seconds=1.0, fps="native"), progress=False)
    assert [s["reason"] for s in native.report["skipped"]] == [
        "--fps native: video_imgs/v is a frame directory, which states no frame rate (only video files do): build it "
        "with --fps N"]


# ----------------------------------------------------------------------------- refusals and the dry run


def test_a_refused_build_leaves_the_output_byte_identical_and_the_corrected_command_runs(tmp_path):
    src = write_source(tmp_path / "s", {"a": 60, "b": 45}, splits={"train": ["a"], "val": ["b"]})
    out = tmp_path / "o"
    P = BuildParams(clip_seconds=1.0, allow_unannotated=True)
    build(src, out, ["train", "val"], P, progress=False)
    before = tree(out)
    assert "train/.build-params.json" in before and "val/manifest.json" in before
    # other parameters: refused, nothing touched (not the first split's params, manifest or shards either)
    with pytest.raises(BuildError, match="holds shards built with other parameters"):
        build(src, out, ["train", "val"], BuildParams(clip_seconds=0.5, allow_unannotated=True), progress=False)
    assert tree(out) == before
    # too big for the disk (a 1e9 s padded clip): refused, nothing touched — not even .build-params.json
    huge = BuildParams(clip_seconds=1e9, tail="pad", allow_unannotated=True)
    with pytest.raises(BuildError, match="not enough disk space"):
        build(src, out, ["train", "val"], huge, overwrite=True, progress=False)
    assert tree(out) == before
    fresh = tmp_path / "fresh"
    with pytest.raises(BuildError, match="not enough disk space"):
        build(src, fresh, ["train"], huge, progress=False)
    assert not fresh.exists()
    build(src, fresh, ["train"], P, progress=False)  # the corrected command is not refused
    assert [c["key"] for c in index_clips(fresh / "train")] == ["a/clip_f000000", "a/clip_f000030"]
    # a stale temp file of an earlier kill is left alone by a refused build too
    (out / "train" / ".train-000000.tar.tmp-999").write_bytes(b"partial")
    before = tree(out)
    with pytest.raises(StrictError, match="would be skipped"):  # a 0.6 s tail under --min-clip-seconds 1
        build(src, out, ["train"], BuildParams(clip_seconds=0.7, allow_unannotated=True), strict=True, progress=False)
    assert tree(out) == before


def test_dry_run_writes_nothing_and_says_what_would_be_built_and_why_not(tmp_path):
    src = write_source(tmp_path / "s", {"a": 60, "b": 45}, splits={"train": ["a", "b", "gone"]})
    (src / "json").mkdir()
    doc = ego4d_json({"a": {"1": [(0, 1, 1, 9, 9)]}, "b": {"1": [(0, 1, 1, 9, 9)]}}, {})
    doc["videos"][1]["clips"][0]["camera_waerer"] = {"person_id": "0"}  # misspelt: the wearer's voice is not read
    (src / "json" / "av_train.json").write_text(json.dumps(doc))
    out = tmp_path / "o"
    dry = build(src, out, ["train"], P1, dry_run=True, progress=False)
    assert not out.exists() and dry.manifests == {}
    s = dry.report["splits"][0]
    assert (s["videos_listed"], s["videos_found"], s["videos_built"], s["clips_written"], s["shards"]) == (3, 2, 2, 3, 1)
    assert dry.report["dry_run"] == {"shards_to_write": 1, "shards_kept": 0, "strict_refusal": None}
    assert dry.exit_code == 3
    text = unwrapped(dry.summary)
    assert "nothing written" in text and "train/gone (whole video): frames directory video_imgs/gone is missing" in text
    assert "train/b: av_train.json: videos[1].clips[0]: unknown key 'camera_waerer' in a clip (did you mean " \
           "'camera_wearer'?)" in text
    # the real build writes what the dry run said, and a second dry run then finds every shard done
    real = build(src, out, ["train"], P1, progress=False)
    assert real.report["splits"][0]["clips_written"] == 3 and real.exit_code == 3
    before = tree(out)
    again = build(src, out, ["train"], P1, dry_run=True, progress=False)
    assert again.report["dry_run"]["shards_to_write"] == 0 and again.report["dry_run"]["shards_kept"] == 1
    assert tree(out) == before
    strict = build(src, tmp_path / "never", ["train"], P1, dry_run=True, strict=True, progress=False)
    assert strict.exit_code == 1 and "--strict: 2 clip(s)/video(s) would be skipped" in strict.summary  # gone, b's tail
    assert not (tmp_path / "never").exists()
    run = cli("--data", str(src), "--out", str(tmp_path / "cli"), "--split", "train", "--clip-seconds", "1", "--dry-run")
    assert run.returncode == 3 and "avshards build --dry-run" in run.stdout and not (tmp_path / "cli").exists()


# ----------------------------------------------------------------------------- skips and exit status


@needs_ffmpeg
def test_skip_summary_names_each_video_and_the_whole_reason_and_exit_status_tells(tmp_path):
    src = video_source(tmp_path / "src", {"good": {"fps": 30, "seconds": 1.0}, "cut": {"fps": 30, "seconds": 1.0}})
    (src / "split" / "train.list").write_text("good\ncut\nnot_there\n")
    cut = src / "videos" / "cut.mp4"
    data = cut.read_bytes()
    ftyp = int.from_bytes(data[:4], "big")
    cut.write_bytes(data[:ftyp] + data[data.index(b"mdat") - 4:])  # the index (moov) gone: unreadable
    run = cli("--data", str(src), "--out", str(tmp_path / "o"), "--split", "train", "--clip-seconds", "1",
              "--allow-unannotated")
    assert run.returncode == 3, run.stderr
    text = unwrapped(run.stdout)
    assert ("train/cut (whole video): videos/cut.mp4: unreadable video file (Invalid data found when processing "
            "input; FFmpeg: moov atom not found)") in text
    assert ("train/not_there (whole video): frames directory video_imgs/not_there is missing, and so is a video "
            "file videos/not_there.{mp4,mkv,mov,webm,avi}") in text
    assert "1  video not found" in text and "1  unreadable video file" in text and "exit status 3" in text
    assert "moov atom" not in run.stderr  # FFmpeg's own log is not printed raw
    report = json.loads((tmp_path / "o" / "build-report.json").read_text())
    assert report["exit_code"] == 3 and [c["key"] for c in index_clips(tmp_path / "o" / "train")] == ["good/clip_f000000"]
    # clean: exit 0, and the tail policy's skips do not count
    (src / "split" / "train.list").write_text("good\n")
    run = cli("--data", str(src), "--out", str(tmp_path / "clean"), "--split", "train", "--clip-seconds", "0.7",
              "--allow-unannotated", "--tail", "drop")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1  short tail" in run.stdout and "skipped videos and why" not in run.stdout and "exit status 0" in run.stdout

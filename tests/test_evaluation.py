"""AVA-ActiveSpeaker evaluation: eval-gt rows against the annotation, predictions, and frame mAP.

The mAP reference is the official ``get_ava_active_speaker_performance.py`` procedure, written
here again in pandas (its own library) step by step: read with ``pd.read_csv``, key
``str(frame_timestamp) + ":" + entity_id``, ``merge(validate="1:1")``, sort by score, cumulative
true positives, precision made non-increasing, VOC area. Where ``AVSHARDS_AVA_EVAL_SCRIPT`` names a
copy of the script itself, it is run on the same files too.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import loaders
from shardgen.core.ava_eval import EvalError, mean_ap, timestamp_text
from shardgen.build.pipeline import build
from shardgen.cli import main as shardgen_main
from shardgen.demo.corpus import make_demo_corpus
from shardgen.tools.eval_gt import write_ground_truth
from shardgen.core.format import TRACK_MAX_GAP
from shardgen.build.plan import BuildParams
from tests.sources import index_clips

FPS = 30


@pytest.fixture(scope="session")
def eval_corpus(tmp_path_factory) -> dict:
    """Demo val split (2 videos of 10 s, 160x90) built as 2 s clips, and as 2 s clips every 1 s (overlapping)."""
    root = tmp_path_factory.mktemp("eval")
    src = make_demo_corpus(root / "src", seconds=10.0, width=160, height=90, n_train=1, n_val=2, n_test=0)
    plain, overlap = root / "plain", root / "overlap"
    build(src, plain, ["val"], BuildParams(clip_seconds=2.0, shard_clips=4), workers=1, progress=False)
    build(src, overlap, ["val"], BuildParams(clip_seconds=2.0, stride_seconds=1.0, shard_clips=4), workers=1, progress=False)
    return {"src": src, "plain": plain, "overlap": overlap}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def annotation(src: Path) -> dict:
    """Per (video, person): frame → box (x, y, w, h), and the inclusive speaking frames, from the AV JSON itself."""
    out = {}
    for video in json.loads((src / "json" / "av_val.json").read_text())["videos"]:
        for clip in video["clips"]:
            for person in clip["persons"]:
                boxes = {t["frame"]: (t["x"], t["y"], t["width"], t["height"])
                         for path in person.get("tracking_paths", []) for t in path["track"]}
                speaking = set()
                for seg in person.get("voice_segments", []):  # Ego4D v2 keeps them per person
                    speaking.update(range(seg["start_frame"], seg["end_frame"] + 1))
                out[(clip["clip_uid"], str(person["person_id"]))] = (boxes, speaking)
    return out


def expected_track_frames(boxed: set[int], windows: list[tuple[int, int]]) -> set[int]:
    """Frames of a person's face tracks: within each clip window, boxed frames joined across gaps of <= 15."""
    out = set()
    for a, b in windows:
        frames = sorted(f for f in boxed if a <= f < b)
        for f, g in zip(frames, frames[1:]):
            out.add(f)
            if g - f - 1 <= TRACK_MAX_GAP:
                out.update(range(f, g))
        out.update(frames[-1:])
    return out


def clip_windows(split_dir: Path) -> dict[str, list[tuple[int, int]]]:
    out: dict = {}
    for c in index_clips(split_dir):
        out.setdefault(c["video_id"], []).append((c["start_frame"], c["start_frame"] + c["n_frames"] - c["pad_frames"]))
    return out


@pytest.mark.parametrize("build_name", ["plain", "overlap"])
def test_eval_gt_rows_and_positives_follow_the_annotation(eval_corpus, build_name, tmp_path, capsys):
    split = eval_corpus[build_name] / "val"
    gt = tmp_path / "gt.csv"
    assert shardgen_main(["eval-gt", str(eval_corpus[build_name]), "--split", "val", "-o", str(gt)]) == 0
    rows = read_csv(gt)
    assert list(rows[0]) == ["video_id", "frame_timestamp", "entity_box_x1", "entity_box_y1", "entity_box_x2",
                             "entity_box_y2", "label", "entity_id"]
    ann = annotation(eval_corpus["src"])
    windows = clip_windows(split)
    keys = [(r["frame_timestamp"], r["entity_id"]) for r in rows]
    assert len(keys) == len(set(keys)), "a frame in several clips must appear once"
    seen: dict = {}
    for r in rows:
        video, pid = r["entity_id"].split(":")
        assert video == r["video_id"]
        f = round(float(r["frame_timestamp"]) * FPS)
        assert r["frame_timestamp"] == f"{f / FPS:.6f}" == timestamp_text(f, FPS)
        boxes, speaking = ann[(video, pid)]
        assert r["label"] == ("SPEAKING_AUDIBLE" if f in speaking else "NOT_SPEAKING")
        if f in boxes:
            x, y, w, h = boxes[f]
            got = [float(r[c]) for c in ("entity_box_x1", "entity_box_y1", "entity_box_x2", "entity_box_y2")]
            np.testing.assert_allclose(got, [x / 160, y / 90, (x + w) / 160, (y + h) / 90], rtol=0, atol=1e-6)
        seen.setdefault((video, pid), set()).add(f)
    for (video, pid), (boxes, _) in ann.items():
        if boxes:
            assert seen.get((video, pid), set()) == expected_track_frames(set(boxes), windows[video])
    positives = sum(r["label"] == "SPEAKING_AUDIBLE" for r in rows)
    assert 0 < positives < len(rows)
    assert f"{len(rows)} face-track frames, {positives} speaking" in capsys.readouterr().out


def predictions(split: Path, path: Path, score, **kw) -> dict:
    """Score every track of the split (one a batch, every track read) with ``score(labels, meta)``."""
    ld = loaders.make_loader(split, mode="asd-tracks", with_meta=True, shuffle=False, remainder="pad", **kw)
    with loaders.PredictionWriter(path, quiet=True) as w:
        for _, _, labels, meta in ld:
            w.add(meta, score(labels, meta))
    return w.summary


def pandas_official_map(gt: Path, pred: Path) -> float:
    """The official script's steps, in pandas."""
    pd = pytest.importorskip("pandas")
    cols = ["video_id", "frame_timestamp", "entity_box_x1", "entity_box_y1", "entity_box_x2", "entity_box_y2", "label",
            "entity_id"]
    g = pd.read_csv(gt, usecols=cols)
    p = pd.read_csv(pred, usecols=cols + ["score"])
    for df in (g, p):
        df["uid"] = df["frame_timestamp"].map(str) + ":" + df["entity_id"]
    assert g["uid"].count() == p["uid"].count() and list(p["label"].unique()) == ["SPEAKING_AUDIBLE"]
    m = g.merge(p, on="uid", suffixes=("_gt", "_pred"), validate="1:1").sort_values(by=["score"], ascending=False)
    m = m.reset_index()
    for c in ("x1", "y1", "x2", "y2"):
        assert (abs(m[f"entity_box_{c}_gt"] - m[f"entity_box_{c}_pred"]) <= 1e-9).all()
    tp = ((m["label_gt"] == "SPEAKING_AUDIBLE") & (m["label_pred"] == "SPEAKING_AUDIBLE")).astype(int).cumsum()
    precision = np.array(tp / (m.index + 1), float)
    recall = np.array(tp / (m["label_gt"] == "SPEAKING_AUDIBLE").sum(), float)
    recall = np.concatenate([[0], recall, [1]])
    precision = np.concatenate([[0], precision, [0]])
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = max(precision[i], precision[i + 1])
    idx = np.where(recall[1:] != recall[:-1])[0] + 1
    return 100 * float(np.sum((recall[idx] - recall[idx - 1]) * precision[idx]))


def official_script_map(gt: Path, pred: Path) -> float | None:
    script = os.environ.get("AVSHARDS_AVA_EVAL_SCRIPT")
    if not script:
        return None
    out = subprocess.run([sys.executable, "-O", script, "-g", str(gt), "-p", str(pred)], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    return float(out.split("average precision:")[1].strip().rstrip("%"))


@pytest.mark.parametrize("build_name", ["plain", "overlap"])
def test_map_equals_the_official_procedure(eval_corpus, build_name, tmp_path):
    split = eval_corpus[build_name] / "val"
    gt = tmp_path / "gt.csv"
    n_rows, positives = write_ground_truth(split, gt)
    gen = torch.Generator().manual_seed(7)

    def noisy(labels, meta):  # informative but imperfect, no ties
        return (0.35 * labels.float() + 0.65 * torch.rand(labels.shape, generator=gen, dtype=torch.float64)).float()

    summary = predictions(split, tmp_path / "pred.csv", noisy)
    assert summary["frames"] == n_rows and summary["track_frames_without_score"] == 0
    if build_name == "overlap":
        assert summary["scored_twice_or_more"] > 0  # overlapping clips: the mean of both scores
    ours = mean_ap(gt, tmp_path / "pred.csv")
    ref = pandas_official_map(gt, tmp_path / "pred.csv")
    assert 40 < ours < 99 and abs(ours - ref) < 1e-4
    script = official_script_map(gt, tmp_path / "pred.csv")
    if script is not None:
        assert abs(ours - script) < 1e-2  # the script prints two decimals

    assert mean_ap(gt, predictions(split, tmp_path / "perfect.csv", lambda lab, m: lab.float())["path"]) == 100.0
    assert mean_ap(gt, predictions(split, tmp_path / "worst.csv", lambda lab, m: 1 - lab.float())["path"]) < 100 * positives / n_rows + 15


@pytest.mark.parametrize("levels", [2, 3, 11])
def test_map_with_tied_scores_equals_the_official_procedure(eval_corpus, tmp_path, levels):
    """Scores on a few levels (a saturated sigmoid gives many exact 1.0): tie order decides the AP, and
    ours is the order pandas' sort gives the official script."""
    split = eval_corpus["overlap"] / "val"
    gt = tmp_path / "gt.csv"
    write_ground_truth(split, gt)
    gen = torch.Generator().manual_seed(levels)

    def tied(labels, meta):
        raw = 0.4 * labels.float() + 0.6 * torch.rand(labels.shape, generator=gen)
        return torch.round(raw * (levels - 1)) / (levels - 1)

    predictions(split, tmp_path / "tied.csv", tied)
    ours, ref = mean_ap(gt, tmp_path / "tied.csv"), pandas_official_map(gt, tmp_path / "tied.csv")
    assert abs(ours - ref) < 1e-4, (ours, ref)
    script = official_script_map(gt, tmp_path / "tied.csv")
    if script is not None:
        assert abs(ours - script) < 1e-2


def test_rank_files_are_merged_and_the_cli_prints_map(eval_corpus, tmp_path, capsys):
    split = eval_corpus["plain"] / "val"
    gt = tmp_path / "gt.csv"
    write_ground_truth(split, gt)
    gen = torch.Generator().manual_seed(3)

    def score(labels, meta):
        return 0.5 * labels.float() + 0.5 * torch.rand(labels.shape, generator=gen)

    files = []
    for rank in range(2):
        files.append(tmp_path / f"pred-{rank}.csv")
        ld = loaders.make_loader(split, mode="asd-tracks", with_meta=True, shuffle=False, remainder="pad", rank=rank,
                                 world_size=2)
        with loaders.PredictionWriter(files[-1], quiet=True) as w:
            for _, _, labels, meta in ld:
                w.add(meta, score(labels, meta))
    whole = tmp_path / "whole.csv"
    with open(whole, "w", newline="") as out:  # one file holding both ranks' rows
        out.write(files[0].read_text())
        out.write("".join(files[1].read_text().splitlines(keepends=True)[1:]))
    merged = mean_ap(gt, files)
    assert merged == mean_ap(gt, [whole])
    assert shardgen_main(["eval-map", str(gt), *map(str, files)]) == 0
    assert capsys.readouterr().out.strip() == f"mAP {merged:.4f}"


def test_a_frame_scored_twice_gets_the_mean(eval_corpus, tmp_path):
    split = eval_corpus["plain"] / "val"
    ld = loaders.make_loader(split, mode="asd-tracks", with_meta=True, shuffle=False)
    _, _, labels, meta = next(iter(ld))
    with loaders.PredictionWriter(tmp_path / "p.csv", quiet=True) as w:
        w.add(meta, torch.full(labels.shape, 0.2))
        w.add(meta, torch.full(labels.shape, 0.6))
    scores = [float(r["score"]) for r in read_csv(tmp_path / "p.csv")]
    assert len(scores) == labels.shape[1] and scores == pytest.approx([0.4] * len(scores))
    assert w.summary["scored_twice_or_more"] == len(scores)


def test_writer_counts_ground_truth_frames_without_a_score(eval_corpus, tmp_path):
    split = eval_corpus["plain"] / "val"
    gt = tmp_path / "gt.csv"
    n_rows, _ = write_ground_truth(split, gt)
    ld = loaders.make_loader(split, mode="asd-tracks", with_meta=True, shuffle=False, batch_size=4)
    with loaders.PredictionWriter(tmp_path / "p.csv", ground_truth=gt, quiet=True) as w:
        for _, _, labels, meta in ld:  # batches cut to their shortest track: some frames unscored
            w.add(meta, labels.float())
    s = w.summary
    assert s["ground_truth_frames"] == n_rows and s["track_frames_without_score"] > 0
    assert s["ground_truth_frames_without_score"] == n_rows - s["frames"] > 0
    with pytest.raises(EvalError, match=r"ground-truth frames .* have no prediction"):
        mean_ap(gt, tmp_path / "p.csv")


def test_bad_prediction_files_are_named(eval_corpus, tmp_path):
    split = eval_corpus["plain"] / "val"
    gt = tmp_path / "gt.csv"
    write_ground_truth(split, gt)
    good = tmp_path / "good.csv"
    predictions(split, good, lambda lab, m: lab.float())
    lines = good.read_text().splitlines(keepends=True)
    cases = {
        "label": (lines[0] + lines[1].replace("SPEAKING_AUDIBLE", "NOT_SPEAKING") + "".join(lines[2:]), r"bad\.csv:2: prediction label"),
        "score": (lines[0] + lines[1].rsplit(",", 1)[0] + ",x\n" + "".join(lines[2:]), r"bad\.csv:2: score 'x'"),
        "box": (lines[0] + lines[1].replace(lines[1].split(",")[2], "0.5", 1) + "".join(lines[2:]), "boxes differ"),
        "extra": ("".join(lines) + lines[1].replace("demo_val_000:", "demo_val_999:"), "not in the ground truth"),
        "header": ("video_id,score\n", r"no column 'frame_timestamp'"),
    }
    for name, (text, message) in cases.items():
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(EvalError, match=message):
            mean_ap(gt, bad)
    assert shardgen_main(["eval-map", str(gt), str(tmp_path / "bad.csv")]) == 2


GT_NAMES = ["video_id", "frame_timestamp", "entity_box_x1", "entity_box_y1", "entity_box_x2", "entity_box_y2", "label",
            "entity_id"]


def activitynet_script_map(gt: Path, pred: Path) -> float:
    """ActivityNet's get_ava_active_speaker_performance.py, step for step as it is written (run_evaluation):
    both files read with ``pd.read_csv(..., header=None, names=...)``; only ``np.float`` (gone from numpy)
    becomes ``float``. It raises where the script raises."""
    pd = pytest.importorskip("pandas")

    def load_csv(filename, column_names):
        df = pd.read_csv(filename, header=None, names=column_names)
        df["uid"] = (df["frame_timestamp"].map(str) + ":" + df["entity_id"])
        return df

    def eq(a, b, tolerance=1e-09):
        return abs(a - b) <= tolerance

    g, p = load_csv(gt, GT_NAMES), load_csv(pred, GT_NAMES + ["score"])
    if g["uid"].count() != p["uid"].count():
        raise ValueError("Groundtruth and predictions CSV must have the same number of unique rows.")
    if p["label"].unique() != ["SPEAKING_AUDIBLE"]:
        raise ValueError("Predictions CSV must contain only SPEAKING_AUDIBLE label.")
    if p["score"].count() < p["uid"].count():
        raise ValueError("Predictions CSV must contain score value for every row.")
    m = g.merge(p, on="uid", suffixes=("_groundtruth", "_prediction"), validate="1:1").sort_values(
        by=["score"], ascending=False).reset_index()
    m["bounding_box_correct"] = np.where(
        eq(m["entity_box_x1_groundtruth"], m["entity_box_x1_prediction"])
        & eq(m["entity_box_x2_groundtruth"], m["entity_box_x2_prediction"])
        & eq(m["entity_box_y1_groundtruth"], m["entity_box_y1_prediction"])
        & eq(m["entity_box_y2_groundtruth"], m["entity_box_y2_prediction"]), True, False)
    if (~m["bounding_box_correct"]).sum() > 0:
        raise ValueError("Mismatch between groundtruth and predictions bounding boxes")
    all_positives = m[m["label_groundtruth"] == "SPEAKING_AUDIBLE"]["uid"].count()
    m["is_tp"] = np.where((m["label_groundtruth"] == "SPEAKING_AUDIBLE") & (m["label_prediction"] == "SPEAKING_AUDIBLE"),
                          1, 0)
    m["tp"] = m["is_tp"].cumsum()
    m["precision"] = m["tp"] / (m.index + 1)
    m["recall"] = m["tp"] / all_positives
    precision, recall = np.array(m["precision"]), np.array(m["recall"])
    assert precision.dtype == float and recall.dtype == float  # compute_average_precision's check
    recall = np.concatenate([[0], recall, [1]])
    precision = np.concatenate([[0], precision, [0]])
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = np.maximum(precision[i], precision[i + 1])
    indices = np.where(recall[1:] != recall[:-1])[0] + 1
    return 100 * float(np.sum((recall[indices] - recall[indices - 1]) * precision[indices]))


def test_activitynet_dialect_runs_through_the_official_script_and_eval_map_reads_both(eval_corpus, tmp_path, capsys):
    """The issue's case: with a header row the official script fails (the header becomes a row labelled
    'label'); without one it gives eval-map's number. eval-map takes either dialect, mixed too."""
    split = eval_corpus["plain"] / "val"
    gen = torch.Generator().manual_seed(5)
    scores: dict = {}
    files = {}
    for dialect in ("talknet", "activitynet"):
        gt, pred = tmp_path / f"gt-{dialect}.csv", tmp_path / f"pred-{dialect}.csv"
        assert shardgen_main(["eval-gt", str(split), "-o", str(gt), "--dialect", dialect]) == 0
        ld = loaders.make_loader(split, mode="asd-tracks", with_meta=True, shuffle=False, remainder="pad")
        with loaders.PredictionWriter(pred, quiet=True, dialect=dialect) as w:
            for i, (_, _, labels, meta) in enumerate(ld):  # the same scores for both files
                scores.setdefault(i, 0.4 * labels.float() + 0.6 * torch.rand(labels.shape, generator=gen))
                w.add(meta, scores[i])
        files[dialect] = gt, pred
    (gt_t, pred_t), (gt_a, pred_a) = files["talknet"], files["activitynet"]
    assert gt_t.read_text().splitlines()[0] == ",".join(GT_NAMES)
    assert gt_a.read_text().splitlines() == gt_t.read_text().splitlines()[1:]  # the same rows, no header
    assert pred_a.read_text().splitlines() == pred_t.read_text().splitlines()[1:]
    with pytest.raises(ValueError):
        activitynet_script_map(gt_t, pred_t)  # what users of the official script met
    official = activitynet_script_map(gt_a, pred_a)
    ours = {(g, p): mean_ap(gt, pred) for g, gt in (("t", gt_t), ("a", gt_a)) for p, pred in (("t", pred_t), ("a", pred_a))}
    assert 40 < official < 99 and len(set(ours.values())) == 1 and abs(ours[("a", "a")] - official) < 1e-4
    assert shardgen_main(["eval-map", str(gt_a), str(pred_t)]) == 0
    assert capsys.readouterr().out.strip().endswith(f"mAP {ours[('a', 'a')]:.4f}")


def test_eval_map_warns_when_the_ground_truth_has_no_negative(eval_corpus, tmp_path, capsys):
    from shardgen.core.ava_eval import DegenerateMetric

    split = eval_corpus["plain"] / "val"
    gt = tmp_path / "gt.csv"
    write_ground_truth(split, gt, dialect="activitynet")
    gt.write_text(gt.read_text().replace("NOT_SPEAKING", "SPEAKING_AUDIBLE"))
    gen = torch.Generator().manual_seed(1)
    predictions(split, tmp_path / "random.csv", lambda lab, m: torch.rand(lab.shape, generator=gen))
    with pytest.warns(DegenerateMetric, match="no negative.*says nothing"):
        assert mean_ap(gt, tmp_path / "random.csv") == 100.0  # random scores: 'perfect'
    assert shardgen_main(["eval-map", str(gt), str(tmp_path / "random.csv")]) == 0
    out = capsys.readouterr()
    assert "mAP 100.0000" in out.out and "shardgen eval-map: warning:" in out.err and "no negative" in out.err


def test_eval_gt_reads_a_build_over_http(eval_corpus, http_server, tmp_path):
    local = tmp_path / "local.csv"
    write_ground_truth(eval_corpus["plain"] / "val", local)
    srv = http_server(eval_corpus["plain"])
    remote = tmp_path / "remote.csv"
    assert shardgen_main(["eval-gt", srv.url_for("val"), "-o", str(remote)]) == 0
    assert remote.read_bytes() == local.read_bytes()

"""The AVA-ActiveSpeaker evaluation, in one place: the CSV rows and the frame mAP every ASD paper reports.

Both halves write rows through these functions — ``shardgen eval-gt`` the ground truth,
:class:`loaders.PredictionWriter` the scores — so the same frame of the same face is the same
text in both files, which is what the official evaluation matches on:

* ``frame_timestamp``: the frame's source time ``frame / fps``, exact, rounded half up to six
  decimals (``12.033333``) — one text for one frame whatever computed it;
* ``entity_box_*``: the box normalised by the frame size (``x2 = (x + w) / W``), written as the
  shortest text that reads back as the same float;
* ``entity_id``: ``<video_id>:<person_id>`` — contains the video id and is unique across a split,
  and the same for a frame that lies in several clips (``--stride-seconds``), which appears once.

**Two CSV dialects.** ActivityNet's script reads both files with ``header=None`` (the AVA challenge's
files have no header row: a header would become a data row labelled "label" and the script fails);
TalkNet-ASD writes its files with a header and scores them with its own copy of the script, which
expects one. :func:`write_csv` writes either (:data:`DIALECTS`: ``talknet``, the default, with the
header; ``activitynet`` without), and the readers take either: a first row naming
``frame_timestamp`` is a header, a first row whose timestamp is a number is data.

:func:`mean_ap` is the official ``get_ava_active_speaker_performance.py`` (ActivityNet; shipped in
TalkNet-ASD's ``utils/``) without pandas: rows matched on ``f"{frame_timestamp}:{entity_id}"`` with
the timestamp read as a float (as pandas reads it), boxes equal within 1e-9, sorted by score
(descending), precision ``tp / rank``, recall ``tp / positives``, precision made non-increasing
from the right, and the VOC area over the recall steps. It is stricter than the script where the
script is silent: a ground-truth frame without a prediction, or a prediction without a
ground-truth frame, is an error naming one (the script only compares row counts). Tied scores are
ordered as pandas orders them (:func:`descending_order`). Several prediction files (one per rank)
are merged; a frame with rows in several files (or several rows) gets the mean of those rows'
scores (a PredictionWriter row is already the mean of that writer's scores).
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .format import fps_fraction, round_half_up
from .storage.atomic import atomic_file

GT_COLUMNS = ("video_id", "frame_timestamp", "entity_box_x1", "entity_box_y1", "entity_box_x2", "entity_box_y2",
              "label", "entity_id")
PRED_COLUMNS = GT_COLUMNS + ("score",)
SPEAKING = "SPEAKING_AUDIBLE"
NOT_SPEAKING = "NOT_SPEAKING"
LABELS = (SPEAKING, "SPEAKING_NOT_AUDIBLE", NOT_SPEAKING)
BOX_TOLERANCE = 1e-9
#: ``talknet``: a header row (TalkNet-ASD's files and its copy of the script); ``activitynet``: none (the
#: official script, which reads with ``header=None``, and the AVA challenge)
DIALECTS = ("talknet", "activitynet")


class EvalError(ValueError):
    """A ground-truth or prediction file the evaluation cannot use; the message names it."""


class DegenerateMetric(UserWarning):
    """The ground truth has no negative frame: every ranking gets 100 % AP, so the number says nothing."""


# --------------------------------------------------------------------------- row text

def timestamp_text(frame: int, fps) -> str:
    """Source time of 0-based frame ``frame``: exact ``frame / fps``, rounded half up to 6 decimals."""
    micro = round_half_up(Fraction(int(frame)) / fps_fraction(fps) * 10**6)
    return f"{micro // 10**6}.{micro % 10**6:06d}"


def entity_id(video_id: str, person_id) -> str:
    return f"{video_id}:{person_id}"


def box_texts(box_xywh, frame_size: Sequence[int]) -> tuple[str, str, str, str]:
    """``(x1, y1, x2, y2)`` normalised by the frame size, as round-trip float text."""
    W, H = (float(v) for v in frame_size)
    x, y, w, h = (float(v) for v in box_xywh)
    return repr(x / W), repr(y / H), repr((x + w) / W), repr((y + h) / H)


@dataclass(frozen=True)
class FrameRow:
    """One face in one frame: the columns both files share (``label`` and ``score`` apart)."""

    video_id: str
    frame: int  # 0-based source frame
    timestamp: str
    box: tuple[str, str, str, str]
    entity: str

    @property
    def key(self) -> tuple[str, int]:
        return self.entity, self.frame

    def cells(self) -> list[str]:
        return [self.video_id, self.timestamp, *self.box]


def track_rows(video_id: str, person_id, first_frame: int, boxes: np.ndarray, fps, frame_size) -> Iterator[FrameRow]:
    """The rows of a face track: ``boxes`` [n, 4] (x, y, w, h pixels, gaps already filled) from source frame ``first_frame``."""
    ent = entity_id(video_id, person_id)
    for i, box in enumerate(np.asarray(boxes, np.float64)):
        f = int(first_frame) + i
        yield FrameRow(video_id, f, timestamp_text(f, fps), box_texts(box, frame_size), ent)


# --------------------------------------------------------------------------- files

def write_csv(path, header: Sequence[str], rows: Iterable[Sequence[str]], *, dialect: str = "talknet") -> int:
    """Write a CSV atomically (temp file, then rename), with the header row or without (``dialect``);
    returns the number of rows."""
    if dialect not in DIALECTS:
        raise ValueError(f"CSV dialect {dialect!r}: choose {' or '.join(DIALECTS)}")
    n = 0
    with atomic_file(Path(path)) as raw:  # the one atomic write: temp file, fsync, rename
        fh = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        w = csv.writer(fh, lineterminator="\n")
        if dialect == "talknet":
            w.writerow(header)
        for row in rows:
            w.writerow(row)
            n += 1
        fh.flush()
        fh.detach()  # atomic_file closes the file itself
    return n


def _read_rows(path, columns: Sequence[str]) -> Iterator[tuple[int, dict]]:
    """``(line, row by column name)``, from a file with a header row (any column order) or without one
    (the columns in the official order: ActivityNet's dialect)."""
    path = Path(path)
    with open(path, newline="") as fh:
        first = next(csv.reader([fh.readline()]), [])
        fh.seek(0)
        if _is_data_row(first):
            for line, cells in enumerate(csv.reader(fh), start=1):
                if len(cells) < len(columns):
                    raise EvalError(f"{path}:{line}: {len(cells)} columns, expected {len(columns)} "
                                    f"({', '.join(columns)}; a file without a header takes them in this order)")
                yield line, dict(zip(columns, cells))
            return
        reader = csv.DictReader(fh)
        missing = [c for c in columns if c not in (reader.fieldnames or ())]
        if missing:
            raise EvalError(f"{path}: no column {missing[0]!r} in the header (expected {', '.join(columns)})")
        for line, row in enumerate(reader, start=2):
            yield line, row


def _is_data_row(cells: list[str]) -> bool:
    """A first row whose frame_timestamp (column 2) is a number is data: the file has no header."""
    try:
        float(cells[1])
    except (IndexError, ValueError):
        return False
    return True


@dataclass
class _Frame:
    line: int
    box: np.ndarray
    label: str = ""
    score_sum: float = 0.0
    scored: int = 0


def frame_uid(timestamp: str, entity: str) -> str:
    """The key the official script matches rows on: ``str(float(frame_timestamp)) + ":" + entity_id``."""
    return f"{float(timestamp)!r}:{entity}"


def _uid(path, line: int, row: dict) -> str:
    try:
        return frame_uid(row["frame_timestamp"], row["entity_id"])
    except (TypeError, ValueError):
        raise EvalError(f"{path}:{line}: frame_timestamp {row['frame_timestamp']!r} is not a number") from None


def _box(path, line: int, row: dict) -> np.ndarray:
    try:
        return np.array([float(row[c]) for c in GT_COLUMNS[2:6]])
    except (TypeError, ValueError):
        raise EvalError(f"{path}:{line}: a box coordinate is not a number") from None


def read_ground_truth(path) -> dict[str, _Frame]:
    frames: dict[str, _Frame] = {}
    for line, row in _read_rows(path, GT_COLUMNS):
        uid = _uid(path, line, row)
        if uid in frames:
            raise EvalError(f"{path}:{line}: frame {uid} appears twice (first on line {frames[uid].line})")
        if row["label"] not in LABELS:
            raise EvalError(f"{path}:{line}: label {row['label']!r} is not one of {', '.join(LABELS)}")
        frames[uid] = _Frame(line, _box(path, line, row), row["label"])
    return frames


def read_predictions(paths: Sequence) -> dict[str, _Frame]:
    """Every prediction file merged: a frame scored in several (files or rows) gets the mean score."""
    frames: dict[str, _Frame] = {}
    for path in paths:
        for line, row in _read_rows(path, PRED_COLUMNS):
            if row["label"] != SPEAKING:
                raise EvalError(f"{path}:{line}: prediction label {row['label']!r}; predictions carry only {SPEAKING}")
            try:
                score = float(row["score"])
            except (TypeError, ValueError):
                raise EvalError(f"{path}:{line}: score {row['score']!r} is not a number") from None
            if not np.isfinite(score):
                raise EvalError(f"{path}:{line}: score {row['score']!r} is not finite")
            uid, box = _uid(path, line, row), _box(path, line, row)
            f = frames.setdefault(uid, _Frame(line, box))
            if np.abs(f.box - box).max() > BOX_TOLERANCE:
                raise EvalError(f"{path}:{line}: frame {uid} scored twice with different boxes")
            f.score_sum += score
            f.scored += 1
    return frames


# --------------------------------------------------------------------------- the metric

def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC-style area: precision made non-increasing from the right, summed over the recall steps."""
    if not len(precision):
        return 0.0
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.nonzero(r[1:] != r[:-1])[0] + 1
    return float(np.sum((r[steps] - r[steps - 1]) * p[steps]))


def descending_order(scores: np.ndarray) -> np.ndarray:
    """The rows by score, highest first, tied scores in the order pandas' ``sort_values(ascending=False)``
    gives them (the official script's sort): numpy's quicksort of the reversed array, reversed back.

    Tie order changes the AP of tied scores with mixed labels, and the script leaves it to that
    (unstable) sort, so we take the same one over the same (ground-truth) row order; with the same
    numpy the two agree exactly."""
    n = len(scores)
    reversed_idx = np.arange(n)[::-1]
    return reversed_idx[scores[::-1].argsort(kind="quicksort")][::-1]


def mean_ap(ground_truth, predictions) -> float:
    """AVA-ActiveSpeaker frame mAP in percent of ``predictions`` (one CSV path or several) against ``ground_truth``."""
    pred_paths = [predictions] if isinstance(predictions, (str, os.PathLike)) else list(predictions)
    if not pred_paths:
        raise EvalError("no prediction file given")
    gt = read_ground_truth(ground_truth)
    pred = read_predictions(pred_paths)
    unscored = [uid for uid in gt if uid not in pred]
    if unscored:
        raise EvalError(f"{len(unscored)} of {len(gt)} ground-truth frames of {ground_truth} have no prediction "
                        f"(first: {unscored[0]})")
    extra = [uid for uid in pred if uid not in gt]
    if extra:
        raise EvalError(f"{len(extra)} predicted frames are not in the ground truth {ground_truth} (first: {extra[0]})")
    uids = list(gt)  # ground-truth row order: the tie order
    gt_boxes = np.array([gt[u].box for u in uids]).reshape(-1, 4)
    pred_boxes = np.array([pred[u].box for u in uids]).reshape(-1, 4)
    bad = np.nonzero(np.abs(gt_boxes - pred_boxes).max(axis=1) > BOX_TOLERANCE)[0] if uids else []
    if len(bad):
        raise EvalError(f"{len(bad)} predicted boxes differ from the ground truth's (first: {uids[bad[0]]})")
    positive = np.array([gt[u].label == SPEAKING for u in uids], bool)
    if not positive.any():
        raise EvalError(f"{ground_truth}: no {SPEAKING} frame, so average precision is undefined")
    if positive.all():
        warnings.warn(f"{ground_truth}: every frame is {SPEAKING} (no negative): any scores give 100 % average "
                      "precision, so this number says nothing about the model", DegenerateMetric, stacklevel=2)
    scores = np.array([pred[u].score_sum / pred[u].scored for u in uids])
    order = descending_order(scores)
    tp = np.cumsum(positive[order])
    precision = tp / np.arange(1, len(order) + 1)
    recall = tp / positive.sum()
    return 100.0 * average_precision(precision, recall)

"""Per-frame speaking scores from an ``asd-tracks`` evaluation loop → an AVA-ActiveSpeaker prediction CSV.

The rows are written by :mod:`shardgen.core.ava_eval`, the module ``shardgen eval-gt`` writes the
ground truth with, so a frame's text is the same in both files and ``shardgen eval-map`` (or
:func:`loaders.mean_ap`) matches them. Use it as TalkNet's ``evaluate_network`` does, one track a
batch (``batch_size=1``, ``shuffle=False``; ``remainder="pad"`` so every track is read)::

    with loaders.PredictionWriter(f"pred-rank{rank}.csv") as out:
        for audio, faces, labels, meta in make_loader(val, mode="asd-tracks", with_meta=True, ...):
            out.add(meta, model(audio, faces).sigmoid())      # [B, T] probabilities
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from shardgen.core.ava_eval import (DIALECTS, PRED_COLUMNS, SPEAKING, FrameRow, frame_uid, read_ground_truth, track_rows,
                                    write_csv)


class PredictionWriter:
    """Collects scores per frame and writes them, averaged, when closed.

    Args:
        path: the prediction CSV to write (atomically, on close). Each rank writes its own;
            ``shardgen eval-map GT PRED...`` merges them.
        ground_truth: optional ``eval-gt`` CSV: on close, count its frames that got no score.
        quiet: do not print the closing summary line (it is in :attr:`summary` either way).
        dialect: ``"talknet"`` (default: a header row, as TalkNet-ASD writes and its copy of the evaluation
            reads) or ``"activitynet"`` (no header: what ActivityNet's official script, which reads with
            ``header=None``, and the AVA challenge take). ``shardgen eval-map`` reads either.

    A frame scored more than once (overlapping clips, a track read twice by ``remainder="pad"``)
    gets the mean of its scores. Frames of a track past the batch's ``T`` (cut to the shortest
    track) get none; the summary counts them.
    """

    def __init__(self, path, *, ground_truth=None, quiet: bool = False, dialect: str = "talknet"):
        if dialect not in DIALECTS:
            raise ValueError(f"dialect {dialect!r}: choose {' or '.join(DIALECTS)}")
        self.dialect = dialect
        self.path = Path(path)
        self.ground_truth = ground_truth
        self.quiet = quiet
        self._rows: dict[tuple, FrameRow] = {}
        self._sums: dict[tuple, list] = {}
        self._cut = 0
        self.summary: dict | None = None

    def __enter__(self) -> "PredictionWriter":
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()

    def add(self, meta: list[dict], scores) -> None:
        """``meta``: an asd-tracks batch's meta list (``with_meta=True``); ``scores`` [B, T] (tensor or array)."""
        if hasattr(scores, "detach"):
            scores = scores.detach().float().cpu().numpy()
        scores = np.asarray(scores, np.float64)
        if scores.ndim != 2 or scores.shape[0] != len(meta):
            raise ValueError(f"scores must be [B, T] for the batch's {len(meta)} tracks, got {scores.shape}")
        if not np.isfinite(scores).all():
            raise ValueError("scores must be finite")
        for m, s in zip(meta, scores):
            if "boxes" not in m or "person_id" not in m:
                raise ValueError("meta must come from mode='asd-tracks' with with_meta=True")
            boxes = m["boxes"]
            if len(s) > len(boxes):
                raise ValueError(f"{len(s)} scores for a track of {len(boxes)} frames ({m['track_id']})")
            self._cut += m["track_frames"] - len(s)  # the track's frames past the batch's T
            clip = m["meta"]
            for row, score in zip(track_rows(clip["video_id"], m["person_id"], m["source_frame"], boxes[: len(s)],
                                             clip["fps"], clip["frame_size"]), s):
                self._rows.setdefault(row.key, row)
                acc = self._sums.setdefault(row.key, [0.0, 0])
                acc[0] += float(score)
                acc[1] += 1

    def close(self) -> dict:
        """Write the file; returns (and prints) how many frames were scored and how many lack a score."""
        if self.summary is not None:
            return self.summary
        keys = sorted(self._rows, key=lambda k: (self._rows[k].video_id, k))

        def cells():
            for k in keys:
                total, n = self._sums[k]
                yield [*self._rows[k].cells(), SPEAKING, self._rows[k].entity, repr(total / n)]

        n = write_csv(self.path, PRED_COLUMNS, cells(), dialect=self.dialect)
        summary = {"path": str(self.path), "frames": n, "scored_twice_or_more": sum(c > 1 for _, c in self._sums.values()),
                   "track_frames_without_score": self._cut}
        line = f"{self.path}: {n} frames scored"
        if self.ground_truth is not None:
            gt = read_ground_truth(self.ground_truth)
            ours = {frame_uid(r.timestamp, r.entity) for r in self._rows.values()}
            summary["ground_truth_frames"] = len(gt)
            summary["ground_truth_frames_without_score"] = sum(uid not in ours for uid in gt)
            line += (f"; {summary['ground_truth_frames_without_score']} of {len(gt)} ground-truth frames "
                     f"have no score here")
        elif self._cut:
            line += f"; {self._cut} frames of these tracks have no score (batches cut to their shortest track)"
        self.summary = summary
        if not self.quiet:
            print(line, file=sys.stderr)
        return summary

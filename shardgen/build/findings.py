"""Findings: what a build noticed that may make its labels or timing wrong, though nothing was skipped.

Why a kind of its own, beside skips and warnings: a skip leaves a clip out (the output is
smaller, but what is there is right); a warning is information (a wav a few ms short, zeros
flagged in the metadata). A finding is the silent-wrong-label class — an annotation key that
is not read because it is misspelt, a person with no track and no voice, annotations that
match no listed video, a video built at a frame rate its frames or its annotation times
contradict. Each names the file and the place (``av_train.json: videos[3].clips[0].persons[1]``)
and, for an unknown key, the nearest known one.

A build with findings is written (and exits 3, see :mod:`shardgen.build.pipeline`); ``--strict``
refuses it before writing anything. The build report lists every finding; the summary counts
them by code and shows the first ones.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from enum import StrEnum


class FindingCode(StrEnum):
    UNKNOWN_KEY = "unknown annotation key"
    UNKNOWN_COLUMN = "unknown annotation column"
    PERSON_WITHOUT_LABELS = "person with no face track and no voice segment"
    UNLISTED_ANNOTATIONS = "annotations for videos no split list names"
    ENTRIES_DROPPED = "annotation entries dropped"
    PAST_THE_END = "annotations past the last frame"
    FPS_RESAMPLED = "frames repeated or dropped by --fps"
    FPS_CONTRADICTED = "the source implies another frame rate"


@dataclass(frozen=True)
class Finding:
    """One finding: its code, the message (naming the file and the place), and what it concerns."""

    code: FindingCode
    message: str
    video_id: str | None = None  # None: about a whole annotation file
    split: str | None = None  # set when the finding is about a listed video

    def to_json(self) -> dict:
        return {"code": str(self.code), "split": self.split, "video_id": self.video_id, "message": self.message}


def nearest(name: str, known) -> str | None:
    """The known name a misspelt one most likely meant (case first: ``X`` → ``x``), or None."""
    known = sorted(known)
    folded = [k for k in known if k.lower() == name.lower()]
    if folded:
        return folded[0]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(name: str, known) -> str:
    """``" (did you mean 'x'?)"`` or ``""``."""
    near = nearest(name, known)
    return f" (did you mean {near!r}?)" if near else ""


def unlisted_annotations(annotations: dict, listed: set[str], lists_named: str, limit: int = 5) -> list[Finding]:
    """One finding per annotation file that annotates videos no split list names (``annotations``: video id
    → :class:`~shardgen.build.annotations.VideoAnnotations`).

    The usual cause is an id mismatch — the split list names ``video_uid`` where the annotation file
    uses ``clip_uid`` (Ego4D: the source layout's video id is the clip_uid) — and then the listed
    videos are skipped or built unlabelled while the labels sit unused."""
    by_file: dict[str, list[str]] = {}
    for vid, ann in annotations.items():
        if vid not in listed:
            by_file.setdefault(ann.file, []).append(vid)
    out = []
    for file, ids in sorted(by_file.items()):
        ids.sort()
        shown = ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")
        out.append(Finding(FindingCode.UNLISTED_ANNOTATIONS,
                           f"{file}: annotates {len(ids)} video(s) that no split list ({lists_named}) names: {shown} "
                           "(do the lists name the ids the annotations use? Ego4D: the clip_uid)"))
    return out

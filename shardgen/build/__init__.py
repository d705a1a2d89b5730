"""The build pipeline: a source layout (frames or video files, wavs, annotations) → shards, clip index, manifest.

Data flows one way, each step a module::

    source.py / video.py        what is on disk: split lists, frame files, wavs, video files
    annotations/                Ego4D AV JSON, AVA CSV → persons, boxes, voice ranges per video
    probe.py / video_plan.py    one listed video → its ClipPlans (or skips, with reasons)
    plan.py                     clips → shards: the whole build decided before a byte is written
    clip.py                     one ClipPlan → its tar members (labels.py, audio.py, derive.py)
    writer.py                   members → one deterministic, atomic tar shard
    executors/                  local processes or Ray carry the plan out; neither changes a byte
    manifest_writer.py          written shards → clips.idx + manifest.json
    output.py                   a local directory or an s3:// prefix; resume records
    build_report.py             every clip of every listed video: written or skipped, and why
    pipeline.py                 the driver that runs these steps in order (``shardgen build``)
"""

from .pipeline import StrictError, build

__all__ = ["build", "StrictError"]

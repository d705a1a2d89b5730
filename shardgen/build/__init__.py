"""The build pipeline: a source layout (frames or video files, wavs, annotations) → shards, clip index, manifest.

Data flows one way, each step a module::

    source.py / video.py        what is on disk: split lists, frame files, wavs, video files
    annotations/                Ego4D AV JSON, AVA CSV → persons, boxes, voice ranges per video
    probe.py                    the one planner: one listed video → its ClipPlans, skips and findings
    frame_dir.py / video_file.py   the two source kinds, as small adapters the planner asks
    findings.py / prechecks.py  what may make labels wrong; every check that can refuse a build, before a write
    plan.py                     clips → shards: the whole build decided before a byte is written (ClipTable:
                                the plan in columns, what the driver holds per clip)
    clip.py                     one ClipPlan → its tar members (labels.py, audio.py, derive.py)
    writer.py                   members → one deterministic, atomic tar shard
    executors/                  local processes or Ray carry the plan out, yielding each shard's result as
                                it is done; neither changes a byte
    manifest_writer.py          written shards → clips.idx + manifest.json
    output.py                   a local directory or an s3:// prefix; resume records
    build_report.py             every clip of every listed video: written or skipped, and why
    pipeline.py                 the driver that runs these steps in order (``shardgen build``)
"""

from .pipeline import StrictError, build

__all__ = ["build", "StrictError"]

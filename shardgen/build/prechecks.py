"""Everything that can refuse a build, done before its first write: a refused build leaves the output as it found it.

Why a module of its own: the build used to decide what to keep of an earlier run while already
changing the output — it wrote ``.build-params.json`` and deleted the old manifest for one split,
then found the disk too small (or the next split built with other parameters) and stopped,
leaving a directory the corrected command refused ("holds shards built with other parameters")
though no shard had been written. Here the output is only *read*:

1. :func:`survey_split` — for each split, whether an earlier build there used other parameters
   (refused without ``--overwrite``), which finished shards can be kept (same clips, same
   sources) and which must go;
2. :func:`check_space` — whether the shards still to write fit on the disk;

and only when every split passes does :func:`apply_survey` make the changes the survey decided
(parameters recorded, stale shards and the old manifest removed). ``--dry-run`` stops after the
checks.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..core.clip_index import INDEX_NAME
from ..core.manifest import MANIFEST_NAME
from .errors import BuildError
from .manifest_writer import WrittenShards
from .output import SplitOutput
from .plan import BuildParams, ShardPlan

PARAMS_NAME = ".build-params.json"


@dataclass
class SplitSurvey:
    """What a split's output holds and what this build will do there (decided by reading only)."""

    output: SplitOutput
    params_bytes: bytes
    todo: list[ShardPlan] = field(default_factory=list)  # shards to write
    kept: WrittenShards = field(default_factory=WrittenShards)  # finished shards of an earlier run that match the plan
    remove: list[str] = field(default_factory=list)  # shards (and their resume records) to delete first


def survey_split(output: SplitOutput, params: BuildParams, shards: list[ShardPlan], overwrite: bool) -> SplitSurvey:
    """Decide which shards still need writing and which finished ones to keep, without changing anything.

    Raises :class:`BuildError` when the output holds a build made with other parameters and
    ``overwrite`` is not set."""
    survey = SplitSurvey(output, (json.dumps(params.to_json(), sort_keys=True, indent=1) + "\n").encode())
    previous = output.read(PARAMS_NAME)
    existing = output.shard_names()
    if (previous is not None and previous != survey.params_bytes) or (existing and previous is None):
        if not overwrite:
            raise BuildError(
                f"{output.url('')} holds shards built with other parameters (see {PARAMS_NAME}); "
                "pass --overwrite to replace them, or choose another --out"
            )
    if overwrite:
        survey.remove += existing
        existing = []
    planned = {sp.name for sp in shards}
    survey.remove += [name for name in existing if name not in planned]  # past this plan's end: a larger source's
    for sp in shards:
        res = output.finished(sp.name, sp.source_digest) if sp.name in existing else None
        if res is not None and [r.key for r in res.clips] == sp.clips.keys():
            survey.kept.add(sp, res)
            continue
        if sp.name in existing:
            survey.remove.append(sp.name)
        survey.todo.append(sp)
    return survey


def apply_survey(survey: SplitSurvey) -> WrittenShards:
    """Make the changes the survey decided; returns the kept shards (the written ones are added to it)."""
    output = survey.output
    output.prepare()
    output.remove(MANIFEST_NAME)  # rewritten last, after every shard exists
    output.remove(INDEX_NAME)
    output.write(PARAMS_NAME, survey.params_bytes)
    for name in survey.remove:
        output.remove_shard(name)
    return survey.kept


def check_space(out_dir: Path, planned: int) -> None:
    """Refuse when ``planned`` bytes (plus a margin) will not fit where ``out_dir`` is or will be."""
    where = existing_ancestor(Path(out_dir))
    free = shutil.disk_usage(where).free
    need = int(planned * 1.02) + (64 << 20)
    if free < need:
        raise BuildError(
            f"not enough disk space in {out_dir}: the plan needs about {need / 1e9:.2f} GB, "
            f"{free / 1e9:.2f} GB are free (free space, choose another --out, or pass --no-space-check)"
        )


def preflight(todo: list[tuple[ShardPlan, SplitOutput]], out_dir, remote: bool, workers: int) -> None:
    """Refuse before writing anything when the planned shards will not fit."""
    if remote:  # staging holds at most one shard per worker at a time
        check_space(todo[0][1].local_dir, max(sp.planned_bytes for sp, _ in todo) * max(1, workers))
    else:
        check_space(out_dir, sum(sp.planned_bytes for sp, _ in todo))


def existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest existing parent: where a directory not made yet will live."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path

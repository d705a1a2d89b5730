"""Every reader of shard bytes besides the loader against the hostile shards of :mod:`tests.hostile`.

verify, inspect, preview, report, eval-gt, the viewer and the scan of a shard without an index go
through the core's tar parser and clip reader, as the loader does: each refuses a hostile clip or a
tar lie wherever it reads the damaged bytes, naming the shard (and the clip), never with an exception
from deep inside numpy or json.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import loaders
from shardgen.core.format import LABEL_EXTS
from shardgen.core.storage import TransportOptions
from shardgen.core.tario import TarError
from tests.hostile import HOSTILE_CLIPS, TAR_LIES, base, hostile_clip, lying_shard, write_shard_and_manifest  # noqa: F401 (base: a fixture)


SPARSE_TOOLS = ("report", "eval-gt", "view summary")  # they read each clip's metadata and labels, and stop there


# the members each case damages; a tool that reads them must refuse the clip
def _damaged(spec) -> set[str]:
    touched = set(spec.get("replace", {})) | ({"json"} if "meta" in spec or "json_sub" in spec else set())
    touched |= {spec["drop"]} if "drop" in spec else set()
    touched |= {spec["cut"][0]} if "cut" in spec else set()
    return touched


# metadata that is valid for a reader of labels (nothing it reads disagrees): only decoding the audio, or
# requiring every member, finds these
_LABELS_STILL_VALID = {"audio_samples wrong", "derived g without members"}


def _tool_errors(mpath: Path, lone: Path) -> dict[str, Exception | str | None]:
    """Run every tool that reads shard bytes on the split (``lone``: the shard alone, no manifest beside it)."""
    from shardgen.tools import eval_gt, html_report, inspection, preview
    from shardgen.tools.verify import verify_manifest

    def view_clip():  # the viewer's clip page: the whole clip (its error, unwrapped from the viewer's own)
        from shardgen.tools.view import catalog, clips

        split = next(iter(catalog.open_catalog(mpath.parent).splits.values()))
        try:
            clips.ClipStore(TransportOptions()).get(split, 1)
        except clips.ClipUnreadable as exc:
            raise exc.__cause__ from None

    def view_summary():  # the viewer's clip lists: metadata and labels (a damaged clip's summary carries its error)
        from shardgen.tools.view import catalog, summary

        split = next(iter(catalog.open_catalog(mpath.parent).splits.values()))
        error = summary.read_summary(split, 1, TransportOptions()).error
        if error is not None:
            raise ValueError(error)

    tools = {
        "report": lambda: html_report.split_stats(str(mpath)),
        "view clip": view_clip,
        "view summary": view_summary,
        "eval-gt": lambda: list(eval_gt.ground_truth(mpath.parent)),
        "inspect": lambda: inspection.inspect_path(mpath.parent),
        "preview": lambda: preview.load_clip(mpath.parent, "v/clip_f000015"),
        "index-less scan": lambda: loaders.resolve(str(lone)),
    }
    out: dict[str, Exception | str | None] = {}
    for name, fn in tools.items():
        try:
            fn()
            out[name] = None
        except Exception as exc:  # what kind, and whether it names the shard, is asserted by the caller
            out[name] = exc
    res = verify_manifest(mpath)
    out["verify"] = "; ".join(res.problems) or None
    return out


def _lone(mpath: Path, tmp_path: Path) -> Path:
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(mpath.parent / "h-000000.tar", lone / "h-000000.tar")
    return lone / "h-000000.tar"


_STRUCTURE = {"derived g without members", "frame missing"}  # hostile clips whose member list itself is wrong
_AUDIO = {"audio_samples wrong", "wav garbage", "wav cut"}  # hostile clips whose audio does not decode as declared


@pytest.mark.parametrize("case", list(HOSTILE_CLIPS))
def test_every_tool_refuses_a_hostile_clip_naming_it(base, tmp_path, case):
    """verify, inspect, preview, report, eval-gt, the viewer and the index-less scan read shard bytes through the
    loader's reader: a hostile clip is a FormatError naming the shard and the clip (verify: a problem naming both),
    refused by every tool that reads the damaged member, never an exception from deep inside numpy or json."""
    spec = HOSTILE_CLIPS[case]
    mpath = write_shard_and_manifest(tmp_path / "h", hostile_clip(base, spec), tracks=base["tracks"])
    key = base["clips"][1][0]
    errors = _tool_errors(mpath, _lone(mpath, tmp_path))
    assert len(errors) == 8
    from shardgen.core.format import FormatError

    for tool, err in errors.items():
        if isinstance(err, Exception):
            assert isinstance(err, (FormatError, TarError, ValueError)), (tool, repr(err))
            assert "h-000000.tar" in str(err) and key in str(err), (tool, str(err))
    reads_labels = bool(_damaged(spec) & {"json", *LABEL_EXTS}) and case not in _LABELS_STILL_VALID \
        and not spec.get("only")
    # Exactly who refuses what: metadata and labels everyone reads; the clip's structure (a member missing, derived
    # members without their frames) every whole-clip reader checks; the audio only the viewer's clip page decodes
    # (it serves it); frame pixels only verify decodes (the others draw or list a few frames, or none).
    expected = {tool: reads_labels for tool in ("report", "eval-gt", "view summary", "index-less scan")}
    expected.update({"inspect": reads_labels or case in _STRUCTURE, "preview": reads_labels or case in _STRUCTURE,
                     "view clip": reads_labels or case in _STRUCTURE | _AUDIO})
    assert {tool: errors[tool] is not None for tool in expected} == expected, case
    if not spec.get("only"):  # verify decodes everything: every damaged member is found
        assert errors["verify"] and "h-000000.tar" in errors["verify"] and key in errors["verify"], errors["verify"]
    else:  # boxes that only a crop would trip over are valid label arrays
        assert errors["verify"] is None and errors["report"] is None


@pytest.mark.parametrize("where", ["labels", "frames"])
@pytest.mark.parametrize("case", TAR_LIES + ["other clip inside"])
def test_every_tool_refuses_tar_structure_lies(base, tmp_path, case, where):
    """The loader's tar lies, met by every other reader of shard bytes: each refuses them naming the shard.
    Among the label members every tool reads them; among the frames, every tool that reads the whole clip
    (verify, inspect, preview, the index-less scan) does — report and eval-gt stop after the labels and
    never parse those bytes."""
    mpath = lying_shard(base, tmp_path / "h", case, where)
    errors = _tool_errors(mpath, _lone(mpath, tmp_path))
    assert len(errors) == 8
    must = [t for t in errors if where == "labels" or case == "other clip inside" or t not in SPARSE_TOOLS]
    assert len(must) >= 5
    for tool in must:
        err = errors[tool]
        assert err is not None, f"{tool} read a shard with a {case} among the {where} without noticing"
        if tool != "verify":
            assert isinstance(err, (TarError, ValueError)), (tool, repr(err))
        assert "h-000000.tar" in str(err), (tool, str(err))

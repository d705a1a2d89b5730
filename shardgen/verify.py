"""``shardgen verify``: prove a build is intact — sizes, sha256, and that every clip decodes.

A damaged shard is reported by name, and the damaged clip by key: the manifest keeps each
clip's byte range and sha256, so a flipped byte is traced to the clip that holds it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from .core.format import ClipSample, FormatError
from .core.manifest import load_manifest


@dataclass
class VerifyResult:
    shards: int = 0
    clips: int = 0
    frames: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_manifest(path: Path, *, decode: bool = True) -> VerifyResult:
    from .core.tario import TarError, iter_samples, iter_tar

    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    manifest = load_manifest(path)
    directory = path.parent
    res = VerifyResult()
    clips_by_shard: dict[int, list[dict]] = {}
    for c in manifest["clips"]:
        clips_by_shard.setdefault(c["shard"], []).append(c)
    for index, shard in enumerate(manifest["shards"]):
        res.shards += 1
        spath = directory / shard["name"]
        if not spath.is_file():
            res.problems.append(f"{shard['name']}: missing")
            continue
        size = spath.stat().st_size
        if size != shard["bytes"]:
            res.problems.append(f"{shard['name']}: {size} bytes, manifest says {shard['bytes']}")
        sha = _sha256(spath)
        clips = clips_by_shard.get(index, [])
        if sha != shard["sha256"]:
            bad = _damaged_clips(spath, clips)
            where = ", ".join(bad) if bad else "outside every clip (tar end blocks)"
            res.problems.append(f"{shard['name']}: sha256 mismatch; damaged: {where}")
        if not decode:
            continue
        expected = [c["key"] for c in clips]
        seen = []
        try:
            with open(spath, "rb") as fh:
                for key, fields, offset in iter_samples(iter_tar(fh, source=shard["name"]), source=shard["name"]):
                    seen.append(key)
                    try:
                        sample = ClipSample(key, fields)
                        sample.audio()
                        _decode_frames(sample)
                        res.clips += 1
                        res.frames += sample.n_frames
                    except (FormatError, ValueError) as exc:
                        res.problems.append(f"{shard['name']}: clip {key} does not decode: {exc}")
        except TarError as exc:
            res.problems.append(f"{shard['name']}: {exc}")
        if seen != expected and not any(p.startswith(shard["name"]) for p in res.problems):
            res.problems.append(f"{shard['name']}: clips {seen[:3]}... differ from the manifest's {expected[:3]}...")
    return res


def _decode_frames(sample: ClipSample) -> None:
    """Every JPEG member decodes — originals and derived ``g``/``c`` members — with the loader's decoder."""
    from .core.decode import decode_gray

    for ext, data in sample.fields.items():
        if ext.endswith(".jpg"):
            decode_gray(data, 16, 16, name=f"{sample.key}.{ext}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _damaged_clips(path: Path, clips: list[dict]) -> list[str]:
    bad = []
    with open(path, "rb") as fh:
        for c in clips:
            fh.seek(c["offset"])
            if hashlib.sha256(fh.read(c["bytes"])).hexdigest() != c.get("sha256"):
                bad.append(f"clip {c['key']} (bytes {c['offset']}..{c['offset'] + c['bytes']})")
    return bad

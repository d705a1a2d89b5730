"""The three layers and who may import whom: core ← builder + tools, core ← loader; torch only in the loader.

* ``loaders`` imports only ``shardgen.core*`` of shardgen;
* the builder and the tools (build, verify, inspect, preview, report, derive) import the core and
  never ``loaders``; neither they nor the core import torch;
* the core imports nothing of shardgen outside itself; the tools (``shardgen.tools``) and the demo generator
  (``shardgen.demo``) import only the core, and the build pipeline (``shardgen.build``) neither of them;
* imports sit at the top of files, except the optional heavy extras (matplotlib, Ray, boto3).

Checked twice: statically over every source file, and by running each side in a fresh
interpreter and looking at ``sys.modules`` afterwards (a run could import through a path the
static check does not see, e.g. a dependency that pulls torch in).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sources import ego4d_json, write_source

ROOT = Path(__file__).resolve().parents[1]
# optional extras, imported on first use: slow to import and not needed by most runs
LAZY_OK = {"matplotlib", "matplotlib.pyplot", "matplotlib.patches", "ray", "boto3", "botocore.exceptions",
           "boto3.s3.transfer", "botocore.config",
           "nvidia"}  # nvImageCodec: optional by platform, imported once a process needs it, its stderr advice hidden


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(absolute module name, imported at module level?) for every import in a file."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1] if path.name != "__init__.py"
                       else path.relative_to(ROOT).parts[:-1])
    top = {id(n) for n in tree.body} | {id(n) for s in tree.body if isinstance(s, ast.Try) for n in s.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            names = [f"{mod}.{a.name}" for a in node.names] if not node.module else [mod]  # from . import x
            out += [(n, id(node) in top) for n in names]
    return out


def _files(folder: str) -> list[Path]:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, folder
    return files


def test_every_import_respects_the_layers():
    problems = []
    for path in _files("loaders"):
        for mod, _ in _imports(path):
            if mod.startswith("shardgen") and not (mod == "shardgen.core" or mod.startswith("shardgen.core.")):
                problems.append(f"{path.relative_to(ROOT)} imports {mod} (the loader may import only shardgen.core)")
    for path in _files("shardgen"):
        core = "core" in path.relative_to(ROOT).parts
        for mod, _ in _imports(path):
            if mod.split(".")[0] in ("loaders", "torch"):
                problems.append(f"{path.relative_to(ROOT)} imports {mod}")
            if core and mod.startswith("shardgen") and not mod.startswith("shardgen.core"):
                problems.append(f"{path.relative_to(ROOT)} (core) imports {mod} from outside the core")
            package = path.relative_to(ROOT).parts[1] if len(path.relative_to(ROOT).parts) > 2 else None
            if (package in ("tools", "demo") and mod.startswith("shardgen.")
                    and not mod.startswith(("shardgen.core", f"shardgen.{package}"))):
                problems.append(f"{path.relative_to(ROOT)} ({package}) imports {mod}: tools and the demo use only the core")
            if package == "build" and mod.startswith(("shardgen.tools", "shardgen.demo")):
                problems.append(f"{path.relative_to(ROOT)} (build) imports {mod}: the pipeline never needs a tool or the demo")
    assert not problems, "\n".join(problems)


def test_imports_sit_at_the_top_of_files():
    hidden = [f"{p.relative_to(ROOT)}: {mod}" for folder in ("shardgen", "loaders") for p in _files(folder)
              for mod, at_top in _imports(p) if not at_top and mod not in LAZY_OK]
    assert not hidden, "imports inside functions:\n" + "\n".join(hidden)


PROBE = """
import json, sys
{body}
print("MODULES=" + json.dumps(sorted(sys.modules)))
"""


def _modules_after(body: str) -> list[str]:
    res = subprocess.run([sys.executable, "-c", PROBE.format(body=body)], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    line = next(x for x in res.stdout.splitlines() if x.startswith("MODULES="))
    return json.loads(line[len("MODULES="):])


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("layers")
    ann = ego4d_json({"v0": {"1": [(f, 4, 4, 30, 30) for f in range(0, 45)]}}, {"v0": {"1": [(5, 20)]}})
    return write_source(root / "src", {"v0": 45}, splits={"train": ["v0"]}, annotations=ann, size=(160, 90))


def test_a_build_with_derived_members_and_the_tools_import_neither_loaders_nor_torch(source, tmp_path):
    out = tmp_path / "out"
    args = ["build", "--data", str(source), "--out", str(out), "--split", "train", "--clip-seconds", "1",
            "--derive", "small,crops", "--workers", "1", "--no-progress"]
    body = (f"from shardgen.cli import main\n"
            f"assert main({args!r}) == 0\n"
            f"assert main(['verify', {str(out / 'train' / 'manifest.json')!r}]) == 0\n"
            f"assert main(['inspect', {str(out / 'train')!r}]) == 0\n")
    mods = _modules_after(body)
    assert "shardgen.build.derive" in mods and "shardgen.tools.verify" in mods  # the probe really ran the derive path
    assert sorted((out / "train").glob("*.tar"))
    bad = [m for m in mods if m.split(".")[0] in ("loaders", "torch", "boto3")]  # boto3: only when S3 is used
    assert not bad, bad


def test_a_loader_run_imports_only_the_core_of_shardgen(source, tmp_path):
    out = tmp_path / "out"
    subprocess.run([sys.executable, "-m", "shardgen", "build", "--data", str(source), "--out", str(out), "--split", "train",
                    "--clip-seconds", "1", "--no-progress", "--workers", "1"], check=True, cwd=ROOT, capture_output=True)
    body = ("import loaders\n"
            f"batches = list(loaders.make_loader({str(out / 'train')!r}, mode='asd-tracks', batch_size=1))\n"
            "assert batches\n")
    mods = _modules_after(body)
    shardgen = [m for m in mods if m.split(".")[0] == "shardgen"]
    assert "shardgen.core.format" in shardgen and "loaders.dataset" in mods and "torch" in mods
    assert all(m in ("shardgen", "shardgen.core") or m.startswith("shardgen.core.") for m in shardgen), shardgen

"""One read path and one resolver, held by reading the packages' own sources (their syntax trees).

* stdlib ``tarfile`` never parses shard bytes: the only module that imports it is the builder's
  writer (``shardgen/build/writer.py``), and every archive it opens is opened for writing;
* the hostile-safe tar parser (``shardgen.core.tario.iter_tar``) is called by one module, the core's
  clip reader, and tar member names are split into clip key and extension only there: every reader
  of shard bytes (loader, verify, inspect, preview, report, eval-gt, view, the index-less scan) goes
  through ``shardgen.core.clip_reader.iter_clips``;
* a source becomes a manifest URL in one place (``shardgen/core/sources.py``): no other reader (tools,
  loaders, the rest of the core) names ``manifest.json`` or ``MANIFEST_NAME``.

Each detector is first shown a planted violation, so these checks cannot pass by finding nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("shardgen", "loaders")
WRITER = "shardgen/build/writer.py"
CLIP_READER = "shardgen/core/clip_reader.py"
RESOLVER = "shardgen/core/sources.py"
READERS = ("shardgen/tools/", "shardgen/core/", "loaders/")  # what reads data (the builder writes it)


def sources() -> dict[str, ast.Module]:
    out = {str(p.relative_to(ROOT)): ast.parse(p.read_text(), str(p)) for pkg in PACKAGES
           for p in sorted((ROOT / pkg).rglob("*.py"))}
    assert len(out) > 40 and WRITER in out and CLIP_READER in out and RESOLVER in out
    return out


def tarfile_uses(tree: ast.Module) -> list[str]:
    """Every import of ``tarfile``, and every ``tarfile.open`` whose mode is not a literal starting with 'w'."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name == "tarfile" for a in node.names):
            found.append(f"line {node.lineno}: import tarfile")
        elif isinstance(node, ast.ImportFrom) and node.module == "tarfile":
            found.append(f"line {node.lineno}: from tarfile import ...")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "open"
              and isinstance(node.func.value, ast.Name) and node.func.value.id == "tarfile"):
            mode = next((k.value for k in node.keywords if k.arg == "mode"), node.args[1] if len(node.args) > 1 else None)
            if not (isinstance(mode, ast.Constant) and isinstance(mode.value, str) and mode.value.startswith("w")):
                found.append(f"line {node.lineno}: tarfile.open for reading")
    return found


def calls_to(tree: ast.Module, name: str) -> list[int]:
    """Lines that call ``name`` (as a bare name or an attribute)."""
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call) and (
        (isinstance(node.func, ast.Name) and node.func.id == name)
        or (isinstance(node.func, ast.Attribute) and node.func.attr == name))]


def manifest_names(tree: ast.Module) -> list[int]:
    """Lines naming the manifest file in code (docstrings and comments aside)."""
    doc_nodes = {id(n.body[0].value) for n in ast.walk(tree)
                 if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                 and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [node.lineno for node in ast.walk(tree)
            if (isinstance(node, ast.Name) and node.id == "MANIFEST_NAME")
            or (isinstance(node, ast.alias) and node.name == "MANIFEST_NAME")
            or (isinstance(node, ast.Constant) and isinstance(node.value, str) and "manifest.json" in node.value
                and id(node) not in doc_nodes and not node.value.endswith(" "))]


def test_the_detectors_find_what_they_look_for():
    planted = ast.parse('import tarfile\nfrom tarfile import TarFile\nwith tarfile.open(p, mode="r:") as t: pass\n'
                        'tarfile.open(p, "w")\nx = iter_tar(s)\ny = mod.iter_tar(s)\n'
                        'from .manifest import MANIFEST_NAME\nu = join(d, "manifest.json")\n')
    assert len(tarfile_uses(planted)) == 3  # the two imports and the read; the write is fine
    assert calls_to(planted, "iter_tar") == [5, 6]
    assert manifest_names(planted) == [7, 8]


def test_stdlib_tarfile_never_parses_shard_bytes():
    found = {path: uses for path, tree in sources().items() if (uses := tarfile_uses(tree))}
    assert set(found) == {WRITER}, found  # the writer imports tarfile to write shards ...
    assert found[WRITER] == [next(u for u in found[WRITER] if u.endswith("import tarfile"))]  # ... and reads none


def test_one_tar_parser_caller_and_one_place_that_splits_member_names():
    trees = sources()
    for name in ("iter_tar", "split_member_name"):
        callers = sorted(path for path, tree in trees.items() if calls_to(tree, name))
        assert callers == [CLIP_READER], (name, callers)
    users = sorted(path for path, tree in trees.items() if calls_to(tree, "iter_clips"))
    assert users == sorted([RESOLVER, "loaders/reader.py", "shardgen/tools/inspection.py", "shardgen/tools/verify.py"])
    readers = sorted(path for path, tree in trees.items() if calls_to(tree, "read_clip"))
    assert readers == sorted(["loaders/reader.py", "shardgen/tools/eval_gt.py", "shardgen/tools/html_report.py",
                              "shardgen/tools/preview.py", "shardgen/tools/view/clips.py",
                              "shardgen/tools/view/summary.py"])


def test_one_resolver_from_a_source_to_its_manifest():
    named = {path: lines for path, tree in sources().items()
             if path.startswith(READERS) and path not in (RESOLVER, "shardgen/core/manifest.py")
             and (lines := manifest_names(tree))}
    assert not named, f"these readers name the manifest themselves instead of asking core.sources: {named}"
    users = sorted(path for path, tree in sources().items() if calls_to(tree, "find_manifest") or calls_to(tree, "find_manifests")
                   or calls_to(tree, "resolve"))
    for tool in ("verify", "inspection", "preview", "html_report", "eval_gt", "view/catalog"):
        assert f"shardgen/tools/{tool}.py" in users, (tool, users)

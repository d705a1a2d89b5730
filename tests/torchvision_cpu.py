"""Lets PyPI's torchvision 0.28.0 import beside the CPU build of torch 2.13.0 (test-only).

transformers' video processor imports torchvision, and transformers' image utilities import it
whenever it is installed. The torchvision release for torch 2.13.0 on PyPI is a CUDA build: its C
extension (``_C.so``: nms, roi_align... kernels) cannot load beside the CPU torch, and
``import torchvision`` then stops at registering fake kernels for two ops that extension would
have defined (``RuntimeError: operator torchvision::nms does not exist``). Its Python transforms —
the resize transformers calls — are plain torch and work. When the extension does not load, this
defines the two op schemas (never called) so the real torchvision code imports unchanged; when it
does load (a matching CPU build), it changes nothing. Imported by tests/conftest.py, so any test
may import transformers.
"""

from __future__ import annotations

import glob
import importlib.util
import os

import torch


def _load_or_stand_in() -> torch.library.Library | None:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    extension = glob.glob(os.path.join(spec.submodule_search_locations[0], "_C*.so"))
    try:
        torch.ops.load_library(extension[0])
        return None
    except Exception:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
        return lib


_SCHEMAS = _load_or_stand_in()  # held: the registration lives as long as the Library object

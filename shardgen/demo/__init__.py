"""The embedded demo corpus: a deterministic synthetic source layout, so ``make shards`` needs no download.

``scene`` plans each video (faces, voices, boxes, annotations), ``media`` renders a plan to JPEG and wav
bytes, ``corpus`` writes the source layout, ``videos`` writes the same corpus (or test clips) as video files.
"""

from .corpus import make_demo_corpus
from .videos import make_demo_videos

__all__ = ["make_demo_corpus", "make_demo_videos"]

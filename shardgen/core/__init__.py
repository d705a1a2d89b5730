"""avshards core: what the builder and the loader share, and nothing else.

The sample format (:mod:`.format`), the manifest schema and reader (:mod:`.manifest`), the
source index (:mod:`.sources`: a source spec → shards and clip byte ranges), the safe tar reader
(:mod:`.tario`), storage (:mod:`.storage`: local, ``file://``, ``http(s)://``, ``s3://``), JPEG
decoding (:mod:`.decode`), TalkNet crops (:mod:`.crops`) and MFCC (:mod:`.features`).

Layering: ``loaders`` imports only this package of ``shardgen``; the builder and the tools
(``build``, ``verify``, ``inspect``, ``preview``, ``report``, ``derive``) import it and never
``loaders``. Nothing here imports torch (``tests/test_import_layers.py`` checks all three rules).
"""

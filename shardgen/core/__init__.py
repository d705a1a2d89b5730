"""avshards core: what the builder, the tools and the loader share, and nothing else.

The sample format (:mod:`.format`, :mod:`.codecs`), the manifest (:mod:`.manifest`) and the clip index
(:mod:`.clip_index`: every clip's place in the shards, in memory-mapped columns), the one resolver and
clip read (:mod:`.sources`: a source spec → manifest, shards and clip index; one clip by key or row), the
one tar parser (:mod:`.tario`) and the one clip reader (:mod:`.clip_reader`), a clip read back and checked
(:mod:`.sample`), storage (:mod:`.storage`: local, ``file://``, ``http(s)://``, ``s3://``), JPEG decoding
(:mod:`.decode`), TalkNet crops (:mod:`.crops`), MFCC (:mod:`.features`) and the AVA evaluation
(:mod:`.ava_eval`).

Layering: ``loaders`` imports only this package of ``shardgen``; the build pipeline
(``shardgen.build``), the tools (``shardgen.tools``) and the demo (``shardgen.demo``) import it and never
``loaders``. Nothing here imports torch (``tests/test_import_layers.py`` checks all three rules).
"""

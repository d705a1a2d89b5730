"""Tools over a finished build — each reads shards only through :mod:`shardgen.core` and writes nothing into it.

``verify`` (sizes, sha256, every clip decodes), ``inspection`` (``shardgen inspect``: what a shard or split
holds), ``preview`` (one clip drawn), ``html_report`` (``shardgen report``: a whole build on one page),
``eval_gt`` (AVA-ActiveSpeaker ground truth from a split's face tracks), ``view`` (``shardgen view``: a local
web player over any build).
"""

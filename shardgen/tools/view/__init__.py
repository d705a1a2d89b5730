"""``shardgen view``: watch a build's clips in a browser — frames and audio in sync, boxes and labels on them.

Read-only over any build a tool can read (a build or split directory, a manifest, shards; local,
``http(s)://`` or ``s3://``), through the clip index and byte-range reads of the core:

* :mod:`.catalog` — the source's splits, videos and skipped clips (from the clip indexes);
* :mod:`.summary` — one line per clip (persons, voice and speaking shares, flags) and the filters;
* :mod:`.clips` — the clips being watched, each read whole once (``shardgen.core.sources.read_clip``);
* :mod:`.media` — a clip as the player takes it (its data and members);
* :mod:`.pages` — the HTML; ``static/`` — the player script and the style sheet;
* :mod:`.server` — routes, byte ranges and refusals (stdlib ``http.server``).
"""

from .server import BackgroundServer, make_server, serve, server_url

__all__ = ["BackgroundServer", "make_server", "serve", "server_url"]

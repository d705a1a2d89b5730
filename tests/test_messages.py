"""Messages a newcomer can act on (issue 19, the smaller cases): each names what is wrong and what to do.

* a server that ignores HTTP ``Range`` is named once, with what it costs (``python -m http.server``, on loopback);
* an HTTP error is summarised (status, reason, the page's title), never the server's HTML dumped;
* the loader pointed at a build directory says which split to pass;
* too few mini-batches for the readers says mini-batches, not "items";
* clips decoded from a video file are described as such (no ``img_NNNNN`` source images, their own audio words).
"""

from __future__ import annotations

import functools
import http.server
import json
import threading
import warnings
from pathlib import Path

import pytest

import loaders
from shardgen.build.pipeline import build
from shardgen.build.plan import BuildParams
from shardgen.core.storage import read_bytes
from shardgen.core.storage.http import RangeIgnoredWarning, summarise_body
from tests.sources import ego4d_json, read_clips, write_source
from tests.videos import needs_ffmpeg, video_source


@pytest.fixture()
def small_build(tmp_path) -> Path:
    src = write_source(tmp_path / "s", {"a": 60, "b": 60}, splits={"train": ["a", "b"], "val": ["a2"]})
    write_source(src, {"a2": 30}, splits={"val": ["a2"]},  # val: one face track, for the asd-tracks case
                 annotations=ego4d_json({"a2": {"1": [(f, 1, 1, 9, 9) for f in range(30)]}}, {}))
    out = tmp_path / "o"
    build(src, out, ["train", "val"], BuildParams(clip_seconds=0.5, shard_clips=2, allow_unannotated=True),
          progress=False)
    return out


@pytest.fixture()
def plain_http_server(small_build):
    """Python's http.server (no Range support: it answers every GET with the whole file, 200) on loopback."""
    handler = functools.partial(QuietHandler, directory=str(small_build))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    gets = 0

    def do_GET(self):
        type(self).gets += 1
        super().do_GET()

    def log_message(self, *args):  # no access log on the test's stderr
        pass


def test_a_server_that_ignores_range_is_named_once_with_what_it_costs(plain_http_server):
    QuietHandler.gets = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = list(loaders.make_loader(f"{plain_http_server}/train", shuffle=False, allow_unlabelled=True,
                                         labels="voice"))
    assert len(items) == 8  # 2 videos × 4 half-second clips: the epoch still reads right
    ranged = [w for w in caught if issubclass(w.category, RangeIgnoredWarning)]
    host = plain_http_server.removeprefix("http://")
    assert len(ranged) == 1 and QuietHandler.gets > 1  # many reads, one warning
    text = str(ranged[0].message)
    assert text.startswith(f"{host} ignores HTTP Range requests")
    assert "costs N extra bytes" in text and "python -m http.server does not" in text


def test_http_errors_are_summarised_not_dumped(plain_http_server):
    with pytest.raises(FileNotFoundError) as err:
        read_bytes(f"{plain_http_server}/train/missing.tar")
    message = str(err.value)
    assert "HTTP 404 File not found (server: Error response)" in message and "<" not in message
    page = b"<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head><body><h1>Forbidden</h1>" + b"x" * 500
    assert summarise_body(page, "text/html") == "403 Forbidden"
    assert summarise_body(b"  plain\n\n text  " + b"y" * 300)[-1] == "…" and len(summarise_body(b"z" * 300)) == 120


def test_the_loader_pointed_at_a_build_directory_says_which_split_to_pass(small_build):
    with pytest.raises(FileNotFoundError, match=rf"{small_build} is a build directory: pass one of its splits, e\.g\. "
                                                rf"{small_build}/train \(it has train, val\)"):
        loaders.make_loader(small_build)


def test_too_few_mini_batches_for_the_readers_says_mini_batches(small_build):
    ld = loaders.make_loader(small_build / "val", mode="asd-tracks", batch_frames=10_000, world_size=2, rank=0)
    with pytest.raises(ValueError, match=r"1 mini-batches \(batch_frames\) cannot feed 2 readers"):
        list(ld)


@needs_ffmpeg
def test_video_file_clips_are_described_as_such(tmp_path):
    from shardgen.tools.preview import _audio_zeros_labels, _frames_origin

    src = video_source(tmp_path / "src", {"v": {"fps": 30, "seconds": 1.0, "audio_delay_s": 0.2}})
    build(src, tmp_path / "o", ["train"], BuildParams(clip_seconds=1.0, allow_unannotated=True), progress=False)
    [fields] = read_clips(*sorted((tmp_path / "o" / "train").glob("*.tar"))).values()
    meta = json.loads(fields["json"])
    assert "source_images" not in meta and "img_" not in meta["time_basis"]
    assert _frames_origin(meta) == "videos/v.mp4 decoded at 30 fps"
    assert _audio_zeros_labels(meta) == ("audio stream starts later: zeros ", "audio stream ended: zeros ")
    frames = write_source(tmp_path / "f", {"f": 30})
    build(frames, tmp_path / "fo", ["train"], BuildParams(clip_seconds=1.0, allow_unannotated=True), progress=False)
    [fields] = read_clips(*sorted((tmp_path / "fo" / "train").glob("*.tar"))).values()
    meta = json.loads(fields["json"])
    assert meta["source_images"] == [1, 30] and _frames_origin(meta) == "img_00001…"
    assert _audio_zeros_labels(meta)[1] == "wav ended: zeros "

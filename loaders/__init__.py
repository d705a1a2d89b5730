"""avshards loaders: stream shards into TalkNet / Light-ASD tensors, crops and raw clips.

The one entry point is :func:`make_loader`; the loader's own pieces (the epoch schedule, the reader,
the modes, timing and M-RoPE ids, predictions) are importable on their own, and what it shares with
the builder and the tools (sources, tar reading, decoding, features, crops) is :mod:`shardgen.core`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from shardgen.core.ava_eval import mean_ap
from shardgen.core.sources import resolve
from shardgen.core.storage import TransportOptions
from shardgen.core.tario import DEFAULT_MAX_MEMBER

from .dataset import ShardReadError, ShardStream, StreamConfig
from .loader import ASDLoader
from .modes import ModeOptions
from .omni import MODEL_INPUTS as OMNI_MODEL_INPUTS
from .omni import OmniConfig
from .omni_video import normalise_patches
from .predictions import PredictionWriter
from .timing import audio_feature_times, frame_times, mrope_ids, tmrope_ids

__all__ = ["make_loader", "ASDLoader", "ShardReadError", "PredictionWriter", "mean_ap", "resolve", "frame_times",
           "audio_feature_times", "mrope_ids", "tmrope_ids", "OmniConfig", "OMNI_MODEL_INPUTS",
           "normalise_patches"]


def _dist_defaults(rank, world_size):
    if rank is not None and world_size is not None:
        return int(rank), int(world_size)
    try:
        if dist.is_available() and dist.is_initialized():
            return (dist.get_rank() if rank is None else int(rank),
                    dist.get_world_size() if world_size is None else int(world_size))
    except Exception:
        pass
    return (0 if rank is None else int(rank)), (1 if world_size is None else int(world_size))


def make_loader(
    source,
    mode: str = "talknet",
    batch_size: int | None = None,
    labels: str = "voice",
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    *,
    shuffle_buffer: int = 8,
    drop_last: bool = False,
    samples_per_epoch: int | None = None,
    remainder: str = "drop",
    with_meta: bool = False,
    person: int | str | None = None,
    augment: bool = False,
    on_error: str = "raise",
    pin_memory: bool = False,
    prefetch_factor: int | None = None,
    use_derived: bool = True,
    smooth_boxes: bool = False,
    raw_size: tuple[int, int] | None = None,
    allow_unlabelled: bool = False,
    remote_options: dict | None = None,
    cache_dir: str | None = None,
    cache_bytes: int = 10 << 30,
    timeout: float = 0,
    batch_frames: int | None = None,
    faces_dtype=None,
    omni: "OmniConfig | dict | None" = None,
    crop_cache_dir: str | None = None,
    crop_cache_bytes: int = 20 << 30,
    max_member_bytes: int = DEFAULT_MAX_MEMBER,
) -> ASDLoader:
    """A resumable, rank- and worker-split loader over avshards shards.

    Args:
        source: a manifest, split directory/prefix, shard, brace pattern or a list of them;
            local paths or ``http(s)://`` / ``s3://`` URLs.
        mode: ``"talknet"`` (audio [B,4T,13], faces [B,T,112,112], labels [B,T]),
            ``"asd-tracks"`` (same contract, one item per face track, TalkNet crops),
            ``"raw"`` (a list of dicts with RGB frames, waveform, all labels, timing) or
            ``"qwen-omni"`` (a dict a Qwen2.5-Omni thinker takes: the keys in ``loaders.OMNI_MODEL_INPUTS``,
            plus ``frame_labels`` at the sampled frames and ``meta``; see :mod:`loaders.omni`).
        batch_size: items per batch (default 1); a batch is cut to its shortest item, first frames
            kept (TalkNet's rule).
        batch_frames: ``asd-tracks`` only, exclusive with ``batch_size``: TalkNet-ASD's training
            batches — face tracks sorted longest first and packed ``max(batch_frames // L, 1)`` at a
            time from the longest unpacked one (length ``L``), fixed for the whole run; each epoch
            shuffles the batches (with ``seed``) and deals them to ranks × workers. TalkNet's
            ``--batchSize`` default is 2500.
        faces_dtype: ``torch.float32`` (default, values 0–255) or ``torch.uint8`` (the same values,
            4× fewer bytes to move to the GPU; convert there) — talknet and asd-tracks modes.
        labels: ``"visible"``, ``"voice"`` or ``"speaking"`` (talknet mode; asd-tracks always
            gives the track's person speaking). ``person`` picks whose speaking.
        shuffle, seed: shard order and a buffer of ``shuffle_buffer`` items each reader draws from, both
            seeded per epoch.
        num_workers: DataLoader worker processes per rank; each reads its own run of clips.
        rank, world_size: default to torch.distributed's when it is initialised, else 0 / 1.
        drop_last: drop each reader's final partial batch.
        samples_per_epoch: fixed epoch length in items (all ranks together), else all items.
        remainder: the items that do not divide evenly among ranks × workers: ``"drop"`` (they
            sit out the epoch — a different few each epoch — so no item is seen twice) or ``"pad"``
            (every item is read, a few twice; for evaluation).
        with_meta: append a 4th element with keys, timestamps (``frame_t``, ``audio_feat_t``)
            and metadata per item (talknet / asd-tracks), per-frame fields cut with the batch (``T`` rows).
        augment: TalkNet's flip/crop/rotate and noise-mix augmentation (talknet and asd-tracks; other modes
            refuse it). The flip/crop/rotate draw and the noise level are seeded by (``seed``, epoch, item), so
            an item gets them alike under any ranks × workers. The noise is another item of the same batch
            (TalkNet's ``overlap``), so with ``batch_size > 1`` which item lends it depends on who shares the
            batch, which the layout decides; ``batch_frames`` batches are fixed for the run, so there it does
            not; a batch of one item gets no noise.
        on_error: ``"raise"`` (default) or ``"skip"`` damaged clips, counted in ``loader.stats``.
        use_derived: use stored 112x112 ``g``/``c`` members when the shards have them.
        remote_options: how HTTP/S3 shards are read: a ``shardgen.core.storage.TransportOptions``
            or a dict of its fields — ``timeout``, ``retries``, ``backoff``, ``s3_options`` (a
            ``shardgen.core.storage.S3Options``: endpoint, region, addressing style, credentials;
            default from the AWS environment variables). An unknown key is a TypeError naming it.
        omni: ``"qwen-omni"`` only: a :class:`loaders.OmniConfig` or a dict of its fields (frame
            sampling ``fps``, pixel bounds, token ids...; ``OmniConfig.from_model_config(config)``
            reads a model config). Default: Qwen2.5-Omni-7B's processor at 2 fps.
        cache_dir, cache_bytes: keep remote shards in a local LRU cache of at most ``cache_bytes``
            (verified by the manifest's sha256), so later epochs read from disk.
        crop_cache_dir, crop_cache_bytes: ``asd-tracks``: keep the face crops cut from plain shards on local
            disk (at most ``crop_cache_bytes``, least recently used evicted; W workers sharing it may pass that by
            < 64·W entries between recounts), so later epochs take 112x112
            crops instead of decoding frames — with ``batch_frames`` without even reading the frames; with
            ``batch_size`` the clips are still read whole (``loaders.crop_cache``: what it costs, when it wins).
        max_member_bytes: the largest tar member a shard may declare (default 256 MiB) before it is refused
            as damaged, unread: raise it for clips whose audio or frames are larger.
    """
    if batch_size is not None and batch_frames is not None:
        raise ValueError("batch_frames and batch_size are exclusive: a frame budget decides each batch's size")
    rank, world_size = _dist_defaults(rank, world_size)
    transport = TransportOptions.coerce(remote_options)
    if cache_dir:
        transport = transport.replace(cache_dir=str(cache_dir), cache_bytes=int(cache_bytes))
    opts = ModeOptions(mode=mode, labels=labels, person=person, with_meta=with_meta, use_derived=use_derived,
                       smooth_boxes=smooth_boxes, raw_size=raw_size, augment=augment, allow_unlabelled=allow_unlabelled,
                       faces_dtype=torch.float32 if faces_dtype is None else faces_dtype,
                       omni=OmniConfig.coerce(omni) if mode == "qwen-omni" else omni,
                       crop_cache_dir=None if crop_cache_dir is None else str(crop_cache_dir),
                       crop_cache_bytes=int(crop_cache_bytes))
    cfg = StreamConfig(batch_size=1 if batch_size is None else batch_size, batch_frames=batch_frames, shuffle=shuffle, seed=seed, shuffle_buffer=shuffle_buffer, rank=rank,
                       world_size=world_size, drop_last=drop_last, samples_per_epoch=samples_per_epoch, remainder=remainder,
                       on_error=on_error, max_member_bytes=int(max_member_bytes))
    stream = ShardStream(resolve(source, remote_options=transport), opts, cfg, transport)
    return ASDLoader(stream, num_workers=num_workers, pin_memory=pin_memory, prefetch_factor=prefetch_factor, timeout=timeout)

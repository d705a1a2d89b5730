"""Output modes: a checked clip (:class:`~shardgen.core.sample.ClipSample`) → what a model takes.

* ``talknet``: ``(audio [4T,13], faces [T,112,112], labels [T])`` — the whole frame as 112x112
  gray (or the stored ``g`` member), TalkNet's MFCC of the clip's audio, a label array.
* ``asd-tracks``: the same contract for one face track: TalkNet crops along that person's
  boxes, the MFCC of exactly the track's audio span, that person's ``speaking`` labels.
* ``raw``: a dict with RGB frames, the waveform, every label array and the metadata.
* ``qwen-omni``: what a Qwen2.5-Omni thinker takes (see :mod:`loaders.omni`).

Each mode can attach timing for M-RoPE (``frame_t``, ``audio_feat_t``; see :mod:`loaders.timing`).
Collation follows TalkNet: items in a batch are cut to the shortest one, keeping their first
frames. Faces travel as uint8 until collation writes them into the batch tensor, as float32
0–255 by default or, with ``faces_dtype=torch.uint8``, as they are (4× fewer bytes from the
workers to the GPU; convert there). A DataLoader worker always sends uint8 faces (a quarter of the
bytes through its queue and shared memory, and no float32 pass in the worker); the consuming
process converts them (:func:`faces_as`), so the batch a training loop gets is the same either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import get_worker_info

from shardgen.core.decode import FACE, gray_frame, gray_small, rgb_frame
from shardgen.core.features import fit_to_frames, mfcc_geometry, talknet_mfcc
from shardgen.core.format import FormatError, audio_sample_range
from shardgen.core.sample import ClipSample

from . import augment
from .batch_memory import BufferPool, shared_tensor
from .faces import batch_faces as _batch_faces
from .faces import kept_frames, track_boxes
from .timing import audio_feature_times, frame_times

MODES = ("talknet", "asd-tracks", "raw", "qwen-omni")
LABELS = ("visible", "voice", "speaking")
FACES_DTYPES = (torch.float32, torch.uint8)


@dataclass
class ModeOptions:
    mode: str = "talknet"
    labels: str = "voice"
    person: int | str | None = None  # talknet + labels="speaking": which person (row or person_id)
    with_meta: bool = False
    use_derived: bool = True
    smooth_boxes: bool = False
    raw_size: tuple[int, int] | None = None
    augment: bool = False
    allow_unlabelled: bool = False
    faces_dtype: torch.dtype = torch.float32
    omni: object = None  # qwen-omni: a loaders.omni.OmniConfig
    crop_cache_dir: str | None = None  # asd-tracks: keep crops cut from plain shards (loaders.crop_cache)
    crop_cache_bytes: int = 20 << 30

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r}: choose one of {MODES}")
        if self.labels not in LABELS:
            raise ValueError(f"labels {self.labels!r}: choose one of {LABELS}")
        if self.faces_dtype not in FACES_DTYPES:
            raise ValueError(f"faces_dtype {self.faces_dtype!r}: choose torch.float32 or torch.uint8")
        if self.mode in ("raw", "qwen-omni") and self.faces_dtype != torch.float32:
            raise ValueError("faces_dtype applies to the talknet and asd-tracks modes")
        if (self.mode == "qwen-omni") != (self.omni is not None):
            raise ValueError("omni options go with mode='qwen-omni' (and that mode needs them)")
        if self.mode in ("raw", "qwen-omni") and self.augment:
            raise ValueError(f"augment is TalkNet's augmentation, for the talknet and asd-tracks modes: mode={self.mode!r} "
                             "does not apply it")
        if self.crop_cache_dir is not None and self.mode != "asd-tracks":
            raise ValueError(f"crop_cache_dir keeps face-track crops: it needs mode='asd-tracks', not {self.mode!r}")


def _timing(sample: ClipSample, first: int, n: int, n_rows: int, track_id) -> dict:
    m = sample.meta
    start = m["start_frame"] + first
    return {
        "key": sample.key,
        "track_id": track_id,
        "frame_t": frame_times(start, n, m["fps"]),
        "audio_feat_t": audio_feature_times(start, n_rows, m["fps"], m["sample_rate"]),
        "clip_start": m["start_frame"] / m["fps"],
        "start_time": start / m["fps"],
        "fps": m["fps"],
        "sample_rate": m["sample_rate"],
        "meta": m,
    }


def _check_labelled(sample: ClipSample, opts: ModeOptions) -> None:
    if not sample.meta["labels"].get("present", True) and not opts.allow_unlabelled:
        raise FormatError(f"{sample.key}: built without annotations (labels all zero); pass allow_unlabelled=True to use it")


def _person_row(sample: ClipSample, person) -> int:
    persons = sample.meta["persons"]
    if person is None:
        for i, p in enumerate(persons):
            if not p.get("camera_wearer"):
                return i
        raise FormatError(f"{sample.key}: labels='speaking' needs a person, and the clip has none with a face")
    if isinstance(person, int):
        if not 0 <= person < len(persons):
            raise FormatError(f"{sample.key}: person row {person} out of range ({len(persons)} persons)")
        return person
    for i, p in enumerate(persons):
        if p["person_id"] == str(person):
            return i
    raise FormatError(f"{sample.key}: no person {person!r}")


def clip_labels(sample: ClipSample, opts: ModeOptions) -> np.ndarray:
    """The clip's per-frame labels of the kind ``opts.labels`` asks for (``person``'s, for ``speaking``)."""
    if opts.labels == "visible":
        return sample.visible
    if opts.labels == "voice":
        return sample.voice
    return sample.speaking[_person_row(sample, opts.person)]


def talknet_item(sample: ClipSample, opts: ModeOptions, rng: np.random.Generator | None = None, noise=None):
    _check_labelled(sample, opts)
    T = sample.n_frames
    fps = sample.meta["fps"]
    faces = np.empty((T, FACE, FACE), np.uint8)
    derived = opts.use_derived and "g" in sample.meta.get("derived", ())
    for i in range(T):
        name = f"{sample.key} frame {i + 1}"
        faces[i] = gray_small(sample.gray(i), name=name) if derived else gray_frame(sample.frame(i), name=name)
    samples, sr = sample.audio()
    if opts.augment and rng is not None:
        faces = augment.visual(faces, rng)
        samples = augment.mix_noise(samples, noise, rng)
    audio = fit_to_frames(talknet_mfcc(samples, fps=fps, sample_rate=sr), T)
    labels = clip_labels(sample, opts)
    # faces stay uint8 until collate writes them, as float, straight into the batch tensor (one pass)
    item = (torch.from_numpy(np.ascontiguousarray(audio, np.float32)), torch.from_numpy(faces),
            torch.from_numpy(labels.astype(np.int64)))
    if opts.with_meta:
        item += (_timing(sample, 0, T, audio.shape[0], None),)
    return item


def track_item(sample: ClipSample, track: tuple, opts: ModeOptions, rng=None, noise=None, keep: int | None = None,
               faces: np.ndarray | None = None):
    """One face track's item. ``keep``: decode only its first ``keep`` frames (a frame-budget batch is cut
    to its shortest track, known before reading); the MFCC is still the whole track's, cut later, as TalkNet's.
    ``faces``: its crops, already cut for the whole batch (:func:`loaders.faces.batch_faces`)."""
    _check_labelled(sample, opts)
    p, first, n = (int(v) for v in track)
    kept = kept_frames(track, keep)
    m = sample.meta
    if faces is None:
        faces = _batch_faces([sample], [track], keep=kept, use_derived=opts.use_derived, smooth=opts.smooth_boxes)[0]
        if isinstance(faces, Exception):
            raise faces
    annotated = track_boxes(sample, track, kept, smooth=False).annotated if opts.with_meta else None
    samples, sr = track_audio(sample, track)
    if opts.augment and rng is not None:
        faces = augment.visual(faces, rng)
        samples = augment.mix_noise(samples, noise, rng)
    mfcc_audio = samples
    if kept < n:  # only the first 4·kept rows survive the cut: a prefix of the audio gives exactly those rows
        frame_len, frame_step = mfcc_geometry(m["fps"], sr)
        mfcc_audio = samples[: (4 * kept - 1) * frame_step + frame_len]
    audio = fit_to_frames(talknet_mfcc(mfcc_audio, fps=m["fps"], sample_rate=sr), kept)
    labels = sample.speaking[p, first:first + kept]
    item = (torch.from_numpy(np.ascontiguousarray(audio, np.float32)), torch.from_numpy(faces),
            torch.from_numpy(labels.astype(np.int64)))
    if opts.with_meta:
        pid = m["persons"][p]["person_id"]
        track_id = f"{m['video_id']}:{pid}@{m['start_frame'] + first}"
        item += (_timing(sample, first, kept, audio.shape[0], track_id)
                 | {"person_id": pid, "person_row": p, "source_frame": m["start_frame"] + first,
                    "track_frames": n, "boxes": annotated[:kept]},)
    return item


def track_audio(sample: ClipSample, track: tuple) -> tuple[np.ndarray, int]:
    """Exactly the audio samples of a face track's frames (the format's sample range), and the rate."""
    _, first, n = (int(v) for v in track)
    m = sample.meta
    clip_audio, sr = sample.audio()
    a, b = audio_sample_range(m["start_frame"] + first, m["start_frame"] + first + n, m["fps"], sr)
    a -= m["audio_start_sample"]
    b -= m["audio_start_sample"]
    return clip_audio[max(a, 0):b], sr


def raw_item(sample: ClipSample, opts: ModeOptions):
    T = sample.n_frames
    if sample.meta.get("originals", True):
        frames = np.stack([rgb_frame(sample.frame(i), opts.raw_size, name=f"{sample.key} frame {i + 1}") for i in range(T)])
    else:
        frames = np.stack([np.repeat(gray_small(sample.gray(i))[..., None], 3, axis=2) for i in range(T)])
    samples, sr = sample.audio()
    t = _timing(sample, 0, T, 4 * T, None)
    return {
        "key": sample.key, "frames": frames, "waveform": samples.astype(np.float32) / 32768.0,
        "visible": sample.visible, "voice": sample.voice, "boxes": sample.boxes, "speaking": sample.speaking,
        "person_ids": [p["person_id"] for p in sample.meta["persons"]], **t,
        "audio_t": (sample.meta["audio_start_sample"] + np.arange(len(samples))) / sr,
    }


#: an item's metadata fields with a row per frame, and with a row per MFCC row (4 a frame): cut with the batch
PER_FRAME_META = ("frame_t", "boxes")
PER_AUDIO_ROW_META = ("audio_feat_t",)


def cut_meta(meta: dict, T: int) -> dict:
    """An item's metadata as its batch keeps it: every per-frame field's first ``T`` rows, per-MFCC-row fields' ``4T``."""
    out = dict(meta)
    for k in PER_FRAME_META:
        if k in out:
            out[k] = out[k][:T]
    for k in PER_AUDIO_ROW_META:
        if k in out:
            out[k] = out[k][: 4 * T]
    return out


def collate_talknet(items: list, faces_dtype: torch.dtype = torch.float32, alloc=None) -> tuple:
    """Stack to ``[B, ...]``, cutting every item to the batch's shortest, first frames kept (TalkNet's rule);
    with metadata, its per-frame fields are cut alike, so each describes exactly the frames delivered.

    The faces are written once, uint8 → ``faces_dtype``, into the tensor ``alloc(shape, dtype)`` gives (a
    reused buffer, shared memory: :mod:`loaders.batch_memory`; default a fresh one)."""
    T = min(it[1].shape[0] for it in items)
    audio = torch.stack([it[0][: 4 * T] for it in items])
    shape = (len(items), T, *items[0][1].shape[1:])
    faces = torch.empty(shape, dtype=faces_dtype) if alloc is None else alloc(shape, faces_dtype)
    out = faces.numpy()
    for i, it in enumerate(items):
        np.copyto(out[i], it[1][:T].numpy())  # uint8 → float32 0-255 (or uint8 as is), no intermediate copy
    labels = torch.stack([it[2][:T] for it in items])
    if len(items[0]) == 4:
        return audio, faces, labels, [cut_meta(it[3], T) for it in items]
    return audio, faces, labels


@dataclass(frozen=True)
class TrackCollate:
    """:func:`collate_talknet` with the faces' dtype and memory chosen by where it runs: in the process that
    consumes the batches, ``faces_dtype`` in reused buffers (``buffers``); in a DataLoader worker, uint8 in
    shared memory (the consumer converts with :func:`faces_as`)."""

    faces_dtype: torch.dtype = torch.float32
    buffers: BufferPool = field(default_factory=BufferPool, compare=False)

    def __call__(self, items: list) -> tuple:
        if get_worker_info() is not None:
            return collate_talknet(items, torch.uint8, shared_tensor)
        return collate_talknet(items, self.faces_dtype, self.buffers.tensor)


def faces_as(batch, dtype: torch.dtype, buffers: BufferPool | None = None):
    """A collated batch (the DataLoader hands it on as a list) with its faces in ``dtype`` (float32 0–255 from
    uint8): one pass, into pinned memory if the faces were pinned, else into a buffer of ``buffers``. Faces
    already in ``dtype`` are returned as they are."""
    if batch[1].dtype == dtype:
        return batch
    if batch[1].is_pinned():
        faces = torch.empty(batch[1].shape, dtype=dtype, pin_memory=True)
        faces.copy_(batch[1])
    else:
        faces = torch.empty(batch[1].shape, dtype=dtype) if buffers is None else buffers.tensor(tuple(batch[1].shape), dtype)
        np.copyto(faces.numpy(), batch[1].numpy())
    return type(batch)([batch[0], faces, *batch[2:]])


def collate_raw(items: list) -> list:
    return items

"""loaders.timing: frame/MFCC-row timestamps and Qwen-style (t, h, w) position ids."""

import numpy as np
import pytest

from shardgen.core.features import talknet_mfcc
from loaders.timing import (
    audio_feature_times,
    audio_start_sample,
    frame_times,
    mrope_ids,
    tmrope_ids,
)


# ---------------------------------------------------------------- timestamps


@pytest.mark.parametrize("start,n,fps", [(0, 10, 30.0), (82, 129, 30.0), (1234, 7, 29.97), (5, 3, 25.0)])
def test_frame_times_are_zero_based_frame_over_fps(start, n, fps):
    np.testing.assert_array_equal(frame_times(start, n, fps), [(start + i) / fps for i in range(n)])


def test_audio_rows_drift_behind_frames_at_30fps():
    rows = audio_feature_times(0, 4 * 451, 30.0)
    frames = frame_times(0, 451, 30.0)
    # 133-sample step: row 4*i starts at 532*i samples, frame i is at 533.33*i samples.
    np.testing.assert_allclose(rows[::4], 532 * np.arange(451) / 16000, rtol=0, atol=1e-12)
    lag = frames[450] - rows[4 * 450]
    assert lag == pytest.approx(0.0375, abs=1e-12)  # 600 samples at frame 450 (15 s)
    np.testing.assert_allclose(frames - rows[::4], np.arange(451) * (4 / 3) / 16000, atol=1e-12)


def test_audio_rows_align_with_frames_at_25fps():
    np.testing.assert_allclose(audio_feature_times(100, 400, 25.0)[::4], frame_times(100, 100, 25.0), atol=1e-12)


def test_audio_rows_start_at_the_clips_first_sample():
    # frame 300 at 30 fps is 10 s = sample 160000; frame 7 at 30 fps is 3733.33 -> 3733
    assert audio_start_sample(300, 30.0) == 160000
    assert audio_start_sample(7, 30.0) == 3733
    assert audio_feature_times(7, 2, 30.0).tolist() == [3733 / 16000, (3733 + 133) / 16000]
    assert audio_start_sample(1, 2.0, sample_rate=5) == 3  # 2.5 rounds half up, like the builder


def test_row_count_and_times_agree_with_the_mfcc():
    """The i-th row time is where the i-th MFCC window starts: the last row begins inside the clip."""
    samples = np.random.default_rng(0).integers(-1000, 1000, 16000 * 2).astype(np.int16)
    n_rows = talknet_mfcc(samples, 30.0).shape[0]
    times = audio_feature_times(0, n_rows, 30.0)
    assert times[-1] < len(samples) / 16000 <= times[-1] + 333 / 16000


# ---------------------------------------------------------------- M-RoPE (Qwen2-VL / Qwen2.5-VL)


def test_mrope_qwen2vl_hand_example():
    # 4 frames, temporal patch 2 -> 2 grid steps; 2x2 merged grid; t = step index (Qwen2-VL).
    ids = mrope_ids(frame_times(0, 4, 30.0), (2, 2))
    np.testing.assert_array_equal(
        ids,
        [
            [0, 0, 0, 0, 1, 1, 1, 1],
            [0, 0, 1, 1, 0, 0, 1, 1],
            [0, 1, 0, 1, 0, 1, 0, 1],
        ],
    )
    np.testing.assert_array_equal(mrope_ids(frame_times(0, 4, 30.0), (2, 2), start_id=7), ids + 7)


def test_mrope_qwen25vl_absolute_time():
    # 2 fps sampling, temporal patch 2 -> one step per second; tokens_per_second=2 -> t = 0, 2, 4.
    ids = mrope_ids(frame_times(0, 6, 2.0), (1, 1), tokens_per_second=2)
    np.testing.assert_array_equal(ids[0], [0, 2, 4])
    # Qwen: long(step * (2/fps) * 2); at 30 fps, steps of 1/15 s -> 0, 0, 0, 0, 0, 0, 0, 0, 1 (step 8)
    ids = mrope_ids(frame_times(0, 18, 30.0), (1, 1), tokens_per_second=2)
    np.testing.assert_array_equal(ids[0], [(s * 2 * 2) // 30 for s in range(9)])


# ---------------------------------------------------------------- TMRoPE (Qwen2.5-Omni)


def test_tmrope_hand_example():
    # Frames every 0.5 s (6 frames), temporal patch 2 -> steps at 0, 1, 2 s -> t = 0, 25, 50.
    # Grid 1x2 -> 2 patches per step. Audio tokens every 0.5 s -> t = 0, 12, 25, 37, 50, 62.
    # Chunks of 2 s = 50 ids: chunk 0 = video t<50 then audio t<50; chunk 1 = the rest.
    ids, modality, order = tmrope_ids(frame_times(0, 6, 2.0), np.arange(6) * 0.5, (1, 2), start_id=10)
    want = np.array(
        [
            # V0   V0  V25 V25  A0 A12 A25 A37 V50 V50 A50 A62
            [0, 0, 25, 25, 0, 12, 25, 37, 50, 50, 50, 62],  # t
            [0, 0, 0, 0, 0, 12, 25, 37, 0, 0, 50, 62],  # h: grid row / audio t
            [0, 1, 0, 1, 0, 12, 25, 37, 0, 1, 50, 62],  # w: grid col / audio t
        ]
    )
    np.testing.assert_array_equal(ids, want + 10)
    np.testing.assert_array_equal(modality, [0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1])
    # unordered list = [6 video patches, 6 audio tokens]
    np.testing.assert_array_equal(order, [0, 1, 2, 3, 6, 7, 8, 9, 4, 5, 10, 11])


def test_tmrope_floors_time_without_float_noise():
    ids, _, _ = tmrope_ids(np.array([]), np.array([0.0, 0.12, 0.36]), (1, 1))
    np.testing.assert_array_equal(ids[0], [0, 3, 9])  # 0.12*25 = 2.9999999999999996 in float


def qwen25_omni_reference(grid_t, grid_hw, second_per_grid, audio_len):
    """Qwen2.5-Omni get_rope_index, use_audio_in_video branch, st_idx = 0, in plain Python.

    Integer-exact: second_per_grid is passed as a Fraction to avoid float32 truncation noise.
    """
    h, w = grid_hw
    video = [(int(g * second_per_grid * 25), r, c) for g in range(grid_t) for r in range(h) for c in range(w)]
    audio = [(k, k, k) for k in range(audio_len)]

    def chunked(tokens, per_chunk=50):
        # transformers' get_chunked_index: advance one chunk each time a boundary is crossed
        out, start, current = [], 0, 1
        for i, tok in enumerate(tokens):
            if tok[0] >= current * per_chunk:
                out.append((start, i))
                start, current = i, current + 1
        out.append((start, len(tokens)))
        return out

    vc, ac = chunked(video), chunked(audio)
    ordered = []
    for j in range(max(len(vc), len(ac))):
        if j < len(vc):
            ordered += video[vc[j][0] : vc[j][1]]
        if j < len(ac):
            ordered += audio[ac[j][0] : ac[j][1]]
    return np.array(ordered).T


@pytest.mark.parametrize("fps,n_frames,audio_seconds", [(30, 150, 5.0), (2, 10, 5.0), (25, 61, 2.2)])
def test_tmrope_matches_qwen25_omni_on_evenly_spaced_streams(fps, n_frames, audio_seconds):
    from fractions import Fraction

    start_frame = 900  # absolute source times; ids are relative to the stream start
    frame_t = frame_times(start_frame, n_frames, fps)
    audio_len = round(audio_seconds * 25)
    audio_t = start_frame / fps + np.arange(audio_len) * 0.04  # 40 ms audio tokens

    ids, modality, order = tmrope_ids(frame_t, audio_t, (2, 3))
    grid_t = -(-n_frames // 2)
    want = qwen25_omni_reference(grid_t, (2, 3), Fraction(2, fps), audio_len)
    np.testing.assert_array_equal(ids, want)
    assert (modality == 0).sum() == grid_t * 6 and (modality == 1).sum() == audio_len
    # order permutes [video..., audio...] into stream order
    assert sorted(order.tolist()) == list(range(order.size))
    assert (modality == (order >= grid_t * 6)).all()

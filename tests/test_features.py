"""shardgen.core.features against python_speech_features (TalkNet's own MFCC) and TalkNet's load_audio."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardgen.core.features import fit_to_frames, mfcc_geometry, talknet_mfcc

psf = pytest.importorskip("python_speech_features")
wavfile = pytest.importorskip("scipy.io.wavfile")

from tests.sources import REALDATA

WAV = REALDATA / "wav" / "short_hamilton_clip.wav"
FPS = [25.0, 30.0, 29.97]
TOL = 1e-3  # absolute, on values of magnitude ~1..100 (log energies and cepstra)


def reference(samples, fps):
    """Exactly TalkNet's call (dataLoader.load_audio)."""
    return psf.mfcc(samples, 16000, numcep=13, winlen=0.025 * 25 / fps, winstep=0.010 * 25 / fps)


@pytest.fixture(scope="module")
def speech():
    if not WAV.exists():
        pytest.skip(f"../shared/realdata is absent ({WAV}): the real-clip tests need the shared folder")
    sr, audio = wavfile.read(WAV)
    assert sr == 16000 and audio.dtype == np.int16
    return audio


@pytest.mark.parametrize("fps", FPS)
def test_matches_reference_on_real_speech(speech, fps):
    ref = reference(speech, fps)
    out = talknet_mfcc(speech, fps)
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert np.abs(out - ref).max() < TOL


def _synthetic():
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    speechlike = rng.normal(0, 3000, t.size) * (1 + np.sin(2 * np.pi * 3 * t))
    return {
        "tone": (12000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16),
        "noise_with_digital_silence": np.concatenate(
            [np.zeros(4000), np.clip(speechlike, -32768, 32767)[:20000], np.zeros(3000)]
        ).astype(np.int16),
        "full_scale_square": (32767 * np.sign(np.sin(2 * np.pi * 100 * t))).astype(np.int16),
        "all_zero": np.zeros(5000, np.int16),  # every band hits the eps substitution
        "one_sample": np.array([1234], np.int16),
        "shorter_than_window": rng.integers(-500, 500, 200).astype(np.int16),
    }


@pytest.mark.parametrize("fps", FPS)
@pytest.mark.parametrize("name", list(_synthetic()))
def test_matches_reference_on_synthetic(name, fps):
    x = _synthetic()[name]
    ref = reference(x, fps)
    out = talknet_mfcc(x, fps)
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() < TOL


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 6000),
    amp=st.integers(1, 32767),
    fps=st.sampled_from(FPS + [24.0, 60.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_matches_reference_any_length(n, amp, fps, seed):
    """Frame count (ceil formula, zero-padded last frame) and values for arbitrary lengths."""
    x = np.random.default_rng(seed).integers(-amp, amp, n, endpoint=True).astype(np.int16)
    ref = reference(x, fps)
    out = talknet_mfcc(x, fps)
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() < TOL


def test_window_geometry():
    # psf_round_half_up(0.025*25/fps*16000), psf_round_half_up(0.010*25/fps*16000)
    assert mfcc_geometry(25.0) == (400, 160)
    assert mfcc_geometry(30.0) == (333, 133)  # 333.33 and 133.33: the source of the 30 fps drift
    assert mfcc_geometry(29.97) == (334, 133)  # 333.67 rounds up


def test_rejects_multichannel():
    with pytest.raises(ValueError):
        talknet_mfcc(np.zeros((100, 2), np.int16))


def test_runtime_does_not_import_python_speech_features():
    code = (
        "import sys, numpy as np; from shardgen.core.features import talknet_mfcc; "
        "talknet_mfcc(np.ones(1000, np.int16), 30.0); "
        "assert 'python_speech_features' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def talknet_fit(audio, numFrames):
    """TalkNet-ASD dataLoader.load_audio, after the mfcc call, verbatim."""
    maxAudio = int(numFrames * 4)
    if audio.shape[0] < maxAudio:
        shortage = maxAudio - audio.shape[0]
        audio = np.pad(audio, ((0, shortage), (0, 0)), "wrap")
    audio = audio[: int(round(numFrames * 4)), :]
    return audio


@pytest.mark.parametrize("rows,n_frames", [(37, 12), (40, 10), (41, 10), (5, 30), (11, 2.9), (12, 2.9)])
def test_fit_to_frames_matches_talknet(rows, n_frames):
    mfcc = np.arange(rows * 13, dtype=np.float32).reshape(rows, 13)
    out = fit_to_frames(mfcc, n_frames)
    np.testing.assert_array_equal(out, talknet_fit(mfcc, n_frames))


def test_fit_to_frames_wraps_from_the_start():
    mfcc = np.arange(6 * 13).reshape(6, 13)
    out = fit_to_frames(mfcc, 4)  # needs 16 rows from 6: 0..5, 0..5, 0..3
    assert out.shape == (16, 13)
    np.testing.assert_array_equal(out[:, 0] // 13, [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 0, 1, 2, 3])

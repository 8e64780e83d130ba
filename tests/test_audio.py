"""Audio reading, mono mixing, resampling and inference windows."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
from hypothesis import given, settings
from hypothesis import strategies as st

from clapcurate import audio
from clapcurate.audio import (
    MIN_TAIL_FRACTION,
    STREAM_BLOCK_FRAMES,
    StreamedClip,
    audio_duration,
    clip_windows,
    inference_windows,
    load_audio,
    open_audio,
    stream_windows,
)
from clapcurate.errors import AudioError, ClapcurateError


def sine(freq_hz: float, sample_rate: int, n_samples: int) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq_hz * np.arange(n_samples) / sample_rate)).astype(
        np.float32
    )


@pytest.mark.parametrize(
    "suffix, subtype, tolerance",
    [
        ("wav", "PCM_16", 1e-4),
        ("wav", "FLOAT", 0.0),
        ("flac", "PCM_24", 1e-6),
        ("ogg", "VORBIS", 0.05),
    ],
)
def test_load_audio_averages_channels_in_any_format(tmp_path, suffix, subtype, tolerance):
    left = sine(440, 16000, 8000)
    right = sine(1000, 16000, 8000)
    path = tmp_path / f"stereo.{suffix}"
    soundfile.write(path, np.stack([left, right], axis=1), 16000, subtype=subtype)

    wave = load_audio(path, 16000)

    assert wave.dtype == np.float32 and wave.ndim == 1
    assert wave.shape == (8000,)
    np.testing.assert_allclose(wave, (left + right) / 2, atol=tolerance)


def test_load_audio_resamples_to_the_requested_rate(tmp_path):
    path = tmp_path / "tone.wav"
    soundfile.write(path, sine(1000, 44100, 44100), 44100, subtype="FLOAT")

    wave = load_audio(path, 16000)

    assert wave.dtype == np.float32
    assert abs(wave.shape[0] - 16000) <= 1
    expected = sine(1000, 16000, wave.shape[0])
    interior = slice(200, -200)  # the resampling filter's edges are not a pure tone
    np.testing.assert_allclose(wave[interior], expected[interior], atol=2e-3)


def test_load_audio_keeps_the_native_rate_unchanged(tmp_path):
    original = np.random.default_rng(0).uniform(-1, 1, 3000).astype(np.float32)
    path = tmp_path / "noise.wav"
    soundfile.write(path, original, 22050, subtype="FLOAT")

    np.testing.assert_array_equal(load_audio(path, 22050), original)


def write_text(path, text="not audio at all\n"):
    path.write_text(text)
    return path


def write_empty_wav(path):
    soundfile.write(path, np.zeros((0, 1), dtype=np.float32), 16000, subtype="FLOAT")
    return path


def write_float_wav_with(value):
    def write(path):
        samples = np.zeros(1000, dtype=np.float32)
        samples[500] = value
        soundfile.write(path, samples, 16000, subtype="FLOAT")
        return path

    return write


@pytest.mark.parametrize(
    "make_file, reason",
    [
        (lambda path: path, "no such file"),
        (lambda path: (path.mkdir(), path)[1], "no such file"),
        (write_text, "not a readable audio file"),
        (write_empty_wav, "no samples"),
        (write_float_wav_with(np.nan), "NaN or infinite"),
        (write_float_wav_with(np.inf), "NaN or infinite"),
    ],
    ids=["missing", "directory", "text", "empty", "nan", "inf"],
)
def test_load_audio_raises_one_typed_error_naming_the_file(tmp_path, make_file, reason):
    path = make_file(tmp_path / "bad.wav")

    with pytest.raises(AudioError) as raised:
        load_audio(path, 16000)

    assert isinstance(raised.value, ClapcurateError)
    assert raised.value.path == str(path)
    assert str(path) in str(raised.value)
    assert reason in raised.value.reason


def test_audio_duration_reads_the_header(tmp_path):
    path = tmp_path / "tone.flac"
    soundfile.write(path, sine(440, 32000, 48000), 32000)

    assert audio_duration(path) == pytest.approx(1.5)
    with pytest.raises(AudioError, match="not a readable audio file"):
        audio_duration(write_text(tmp_path / "notes.wav"))


def test_short_clip_is_repeated_to_fill_one_window():
    wave = np.array([1, 2, 3], dtype=np.float32)

    windows = inference_windows(wave, 8)

    np.testing.assert_array_equal(windows, [[1, 2, 3, 1, 2, 3, 1, 2]])


def test_long_clip_keeps_a_tail_of_at_least_a_tenth_of_a_window_completed_by_the_start():
    wave = np.arange(25, dtype=np.float32)  # two full windows of 10 and a tail of 5

    windows = inference_windows(wave, 10)

    assert windows.shape == (3, 10)
    np.testing.assert_array_equal(windows[:2].ravel(), wave[:20])
    np.testing.assert_array_equal(windows[2], [20, 21, 22, 23, 24, 0, 1, 2, 3, 4])


def test_long_clip_drops_a_tail_shorter_than_a_tenth_of_a_window():
    wave = np.arange(2009, dtype=np.float32)  # two full windows of 1000 and a tail of 9

    windows = inference_windows(wave, 1000)

    assert windows.shape == (2, 1000)
    np.testing.assert_array_equal(windows.ravel(), wave[:2000])


@settings(max_examples=200, deadline=None)
@given(length=st.integers(1, 500), n_samples=st.integers(1, 120))
def test_inference_windows_are_the_clip_played_in_a_loop(length, n_samples):
    wave = np.arange(length, dtype=np.float32)

    windows = inference_windows(wave, n_samples)

    n_windows = windows.shape[0]
    assert windows.shape == (n_windows, n_samples) and n_windows >= 1
    positions = np.arange(n_windows * n_samples).reshape(n_windows, n_samples)
    np.testing.assert_array_equal(windows, wave[positions % length])
    uncovered = length - n_windows * n_samples
    assert uncovered < MIN_TAIL_FRACTION * n_samples  # only a short tail is ever dropped
    if length > n_samples:
        assert (n_windows - 1) * n_samples < length  # no window is pure repetition
    np.testing.assert_array_equal(inference_windows(wave, n_samples), windows)


@pytest.mark.parametrize(
    "file_rate, channels, seconds, fill, suffix, subtype",
    [
        (16000, 1, 3.05, "loop", "wav", "FLOAT"),  # no resampling; a tail of 5 % is dropped
        (44100, 2, 3.5, "loop", "wav", "FLOAT"),  # stereo, resampled; the tail completed by the clip's start
        (8000, 1, 10.3, "repeat_then_silence", "wav", "PCM_16"),  # several blocks per window
        (22050, 1, 0.7, "repeat_then_silence", "wav", "FLOAT"),  # shorter than a window: the fill applies
        (44100, 2, 2.5, "loop", "flac", "PCM_24"),  # compressed formats decode alike in blocks
        (48000, 2, 2.5, "loop", "ogg", "VORBIS"),
    ],
)
def test_streamed_windows_are_byte_identical_to_the_whole_file_windows(tmp_path, monkeypatch, file_rate, channels,
                                                                     seconds, fill, suffix, subtype):
    monkeypatch.setattr(audio, "STREAM_BLOCK_FRAMES", 5003)  # blocks that end anywhere in a window
    rng = np.random.default_rng(file_rate)
    samples = rng.uniform(-0.5, 0.5, (int(seconds * file_rate), channels)).astype(np.float32)
    path = tmp_path / f"clip.{suffix}"
    soundfile.write(path, samples, file_rate, subtype=subtype)

    whole = inference_windows(load_audio(path, 16000), 16000, fill)
    streamed = list(stream_windows(open_audio(path, 16000, streamed_after=0.0), 16000, 16000, fill))

    assert all(part.dtype == np.float32 for part in streamed)
    assert np.concatenate(streamed).tobytes() == whole.tobytes()
    assert max(len(part) for part in streamed) < len(whole) or len(whole) == 1  # cut as they complete


def test_open_audio_streams_only_files_longer_than_the_limit(tmp_path):
    path = tmp_path / "tone.wav"
    soundfile.write(path, sine(440, 16000, 32000), 16000)

    assert open_audio(path, 16000, streamed_after=1.9) == StreamedClip(str(path))
    np.testing.assert_array_equal(open_audio(path, 16000, streamed_after=2.0), load_audio(path, 16000))
    whole = np.concatenate(list(clip_windows(path, 16000, 12000, streamed_after=10.0)))
    np.testing.assert_array_equal(np.concatenate(list(clip_windows(path, 16000, 12000, streamed_after=1.0))), whole)


def test_open_audio_checks_a_streamed_file_to_its_end(tmp_path):
    samples = np.zeros(3 * STREAM_BLOCK_FRAMES + 7, dtype=np.float32)
    samples[-10] = np.nan  # in the last block only
    path = tmp_path / "late-nan.wav"
    soundfile.write(path, samples, 16000, subtype="FLOAT")

    with pytest.raises(AudioError, match="NaN or infinite"):
        open_audio(path, 16000, streamed_after=1.0)

"""The log-mel front-end against torchlibrosa (as PANNs configures it) and librosa's filters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clapcurate.errors import ClapcurateError
from clapcurate.model.frontend import LogMel, slaney_mel_filterbank

librosa = pytest.importorskip("librosa")
torchlibrosa_stft = pytest.importorskip("torchlibrosa.stft")

# (sample_rate, window_size, hop_size, mel_bins, fmin, fmax)
PANNS_32K = (32000, 1024, 320, 64, 50, 14000)
CONFIGS = [PANNS_32K, (16000, 512, 160, 64, 50, 8000), (44100, 1024, 320, 64, 50, 14000)]


def torchlibrosa_logmel(sample_rate, window_size, hop_size, mel_bins, fmin, fmax):
    """torchlibrosa's front-end exactly as PANNs' Cnn14 builds it."""
    spectrogram = torchlibrosa_stft.Spectrogram(
        n_fft=window_size,
        hop_length=hop_size,
        win_length=window_size,
        window="hann",
        center=True,
        pad_mode="reflect",
        freeze_parameters=True,
    )
    logmel = torchlibrosa_stft.LogmelFilterBank(
        sr=sample_rate,
        n_fft=window_size,
        n_mels=mel_bins,
        fmin=fmin,
        fmax=fmax,
        ref=1.0,
        amin=1e-10,
        top_db=None,
        freeze_parameters=True,
    )
    return torch.nn.Sequential(spectrogram, logmel)


def mixed_signal(sample_rate: int, seconds: float, batch: int = 2) -> torch.Tensor:
    """Noise at several levels plus tones: every mel band well above float32 rounding."""
    rng = np.random.default_rng(0)
    n = int(sample_rate * seconds)
    t = np.arange(n) / sample_rate
    tones = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3000 * t)
    levels = np.array([0.01, 0.2])[:batch, None]
    return torch.tensor(tones + levels * rng.standard_normal((batch, n)), dtype=torch.float32)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c[0]}Hz-{c[1]}")
def test_logmel_matches_torchlibrosa(config):
    """Equal to torchlibrosa up to float32 rounding, and closer than torchlibrosa itself to
    torchlibrosa's computation in float64: its O(n_fft) sums per bin round more than an FFT,
    by up to ~4e-4 dB in bands 50 dB down."""
    waveform = mixed_signal(config[0], seconds=1.3)
    ours = LogMel(*config)
    reference = torchlibrosa_logmel(*config)

    with torch.no_grad():
        expected = reference(waveform)
        exact = reference.double()(waveform.double())
        actual = ours(waveform)

    assert actual.shape == expected.shape == (2, 1, waveform.shape[1] // config[2] + 1, config[3])
    assert actual.dtype == torch.float32
    ours_error = (actual - exact).abs().max().item()
    torchlibrosa_error = (expected - exact).abs().max().item()
    # float32 FFT rounding depends on the CPU's kernels: 0.7e-4 to 1.1e-4 dB measured
    assert ours_error < 2e-4  # dB
    assert ours_error < 0.5 * torchlibrosa_error
    assert (actual - expected).abs().max().item() < 1e-3  # dB


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c[0]}Hz-{c[1]}")
def test_parameters_equal_torchlibrosa_and_librosa(config):
    sample_rate, window_size, _, mel_bins, fmin, fmax = config
    ours = LogMel(*config).state_dict()
    reference = torchlibrosa_logmel(*config).state_dict()
    librosa_filters = librosa.filters.mel(
        sr=sample_rate, n_fft=window_size, n_mels=mel_bins, fmin=fmin, fmax=fmax,
        htk=False, norm="slaney",
    )  # [mel_bins, bins]

    for name in ("conv_real", "conv_imag"):
        kernel = ours[f"spectrogram_extractor.stft.{name}.weight"]
        assert kernel.shape == (window_size // 2 + 1, 1, window_size)
        torch.testing.assert_close(kernel, reference[f"0.stft.{name}.weight"], atol=1e-6, rtol=0)
    assert ours["logmel_extractor.melW"].shape == (window_size // 2 + 1, mel_bins)
    np.testing.assert_allclose(
        slaney_mel_filterbank(sample_rate, window_size, mel_bins, fmin, fmax),
        librosa_filters,
        rtol=1e-5,
        atol=1e-9,
    )
    torch.testing.assert_close(ours["logmel_extractor.melW"], reference["1.melW"])


def test_frontend_parameters_are_frozen_but_kept_in_the_state_dict():
    frontend = LogMel(*PANNS_32K)

    assert sorted(frontend.state_dict()) == [
        "logmel_extractor.melW",
        "spectrogram_extractor.stft.conv_imag.weight",
        "spectrogram_extractor.stft.conv_real.weight",
    ]
    assert not any(parameter.requires_grad for parameter in frontend.parameters())


def test_torchlibrosa_weights_load_and_another_configuration_is_refused():
    frontend = LogMel(*PANNS_32K)
    reference = torchlibrosa_logmel(*PANNS_32K)
    frontend.spectrogram_extractor.load_state_dict(reference[0].state_dict())
    frontend.logmel_extractor.load_state_dict(reference[1].state_dict())

    other_rate = torchlibrosa_logmel(44100, 1024, 320, 64, 50, 14000)
    with pytest.raises(ClapcurateError, match="melW.*sample_rate=32000"):
        frontend.logmel_extractor.load_state_dict(other_rate[1].state_dict())
    scaled_kernels = {key: 2 * value for key, value in reference[0].state_dict().items()}
    with pytest.raises(ClapcurateError, match="conv_real.weight"):
        frontend.spectrogram_extractor.load_state_dict(scaled_kernels)


def test_logmel_stays_float32_under_autocast_and_is_independent_per_clip():
    frontend = LogMel(16000, 512, 160, 64, 50, 8000)
    waveform = mixed_signal(16000, seconds=0.5)

    with torch.no_grad():
        full_precision = frontend(waveform)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            autocast = frontend(waveform)
        first_alone = frontend(waveform[:1])

    assert autocast.dtype == torch.float32
    torch.testing.assert_close(autocast, full_precision)
    torch.testing.assert_close(first_alone, full_precision[:1], atol=1e-4, rtol=0)

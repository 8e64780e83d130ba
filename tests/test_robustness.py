"""Any audio a user may hold goes through decoding, the front-end and the model to a finite
embedding or a reported skip, never a crash (property-based, generated files)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clapcurate.embed import embed_audio
from clapcurate.features import FrontendSettings, LogMelCache

SUBTYPES = {"PCM_16": np.int16, "PCM_24": np.int32, "PCM_U8": np.int16, "FLOAT": np.float32, "DOUBLE": np.float64}
SPECIAL = [np.nan, np.inf, -np.inf, 1e30, -1e30, 1e18, 3.0, 0.0]


@st.composite
def audio_files(draw):
    sample_rate = draw(st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000]))
    seconds = draw(st.one_of(st.just(0.0), st.floats(0.0, 0.2), st.floats(0.2, 8.0), st.floats(60.0, 120.0)))
    channels = draw(st.integers(1, 3))
    subtype = draw(st.sampled_from(sorted(SUBTYPES)))
    frames = int(seconds * sample_rate)
    seed = draw(st.integers(0, 2**16))
    wave = 0.5 * np.random.default_rng(seed).standard_normal((frames, channels))
    if SUBTYPES[subtype] in (np.float32, np.float64) and frames:
        specials = draw(st.lists(st.sampled_from(SPECIAL), max_size=3))
        positions = draw(st.lists(st.integers(0, frames * channels - 1), min_size=len(specials), max_size=len(specials)))
        wave.reshape(-1)[positions] = specials
        if draw(st.booleans()):
            wave *= draw(st.sampled_from([1e-30, 1e6, 1e18, 1e30]))  # tiny or huge but finite samples
    return sample_rate, channels, subtype, wave


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow, HealthCheck.data_too_large])
@given(audio=audio_files())
def test_any_file_gives_a_finite_embedding_or_a_reported_skip(audio, tiny_clap, tmp_path_factory):
    sample_rate, channels, subtype, wave = audio
    path = tmp_path_factory.mktemp("audio") / "clip.wav"
    with np.errstate(invalid="ignore", over="ignore"):
        soundfile.write(path, wave.astype(SUBTYPES[subtype]) if subtype.startswith("PCM") else wave,
                        sample_rate, subtype=subtype)
    manifest = pd.DataFrame({"id": ["a"], "clip_id": ["a"], "audio_path": [str(path)]})

    result = embed_audio(tiny_clap, manifest, batch_size=16)
    if result.ids:
        assert np.isfinite(result.embeddings).all()
        np.testing.assert_allclose(np.linalg.norm(result.embeddings, axis=1), 1.0, atol=1e-4)
    else:
        assert list(result.skipped["id"]) == ["a"] and result.skipped["reason"].iloc[0]

    features, failures = LogMelCache(FrontendSettings.of(tiny_clap.config.audio)).get_many([str(path)])
    if features.present[0]:
        assert np.isfinite(features[0].astype(np.float32)).all()
    else:
        assert failures[str(path)]

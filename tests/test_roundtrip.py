"""Round trips: a model as a CLAP family holds it -> clapcurate -> fit-student a few steps ->
`clapcurate export` -> loaded by that family's own code (transformers; laion_clap and msclap by
file, see published.py) -> the same embeddings as clapcurate's student, within 1e-5 for
transformers (its spectrogram is float64) and 2e-6 for the others.
"""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
import yaml

from clapcurate.audio import inference_windows
from clapcurate.cli import main
from clapcurate.model.checkpoints import load, load_model

from published import package_dir, published_function
from test_teachers import (CAPTIONS, LAION_TINY_AUDIO, MSCLAP_TINY_AUDIO, SAMPLE_RATE, _laion_preprocessing,
                           _laion_reference, _laion_tokenizer, _msclap_2023_reference, _msclap_wrapper, _save_laion,
                           _waveforms, _write_tiny_world, tiny_gpt2_dir, tiny_roberta_dir)  # noqa: F401 (fixtures)
from test_transformers_clap import _randomize, roberta_tokenizer

OTHER_FAMILIES_TOLERANCE = 2e-6
TRANSFORMERS_TOLERANCE = 1e-5
# a tiny ClapModel on 1 s clips at 16 kHz (the tiny world's clips)
TINY_FEATURES = dict(feature_size=16, sampling_rate=SAMPLE_RATE, hop_length=160, max_length_s=1, fft_window_size=512,
                     frequency_min=50, frequency_max=8000, truncation="rand_trunc", padding="repeatpad")


def _fit_student(teacher, tmp_path, steps: int = 3):
    """fit-student from `teacher` on the tiny world's pairs (curated and replayed); its last/."""
    _write_tiny_world(tmp_path)
    config = tmp_path / "student.yaml"
    config.write_text(yaml.safe_dump(dict(
        teacher=str(teacher), improvement_set=str(tmp_path / "train.csv"), replay_manifest=str(tmp_path / "train.csv"),
        loss=dict(kind="soft_label", beta=0.3), data=dict(batch_size=4, val_fraction=0.0), optim=dict(lr=3e-3),
        trainer=dict(max_steps=steps, max_epochs=None, progress_bar=False), out_dir=str(tmp_path / "student"))))
    assert main(["fit-student", "--config", str(config)]) == 0
    return tmp_path / "student" / "last"


def _export(student, out, *options):
    assert main(["export", str(student), str(out), *options]) == 0
    card = (out / "README.md").read_text()
    assert "training steps: 3" in card and "12 pairs" in card  # the run's steps and curated set
    return out


def _ours(model, waves):
    windows = np.concatenate([inference_windows(wave, model.clip_samples, model.config.audio.short_clip_fill)
                              for wave in waves])
    with torch.no_grad():
        return model.encode_audio(torch.from_numpy(windows)), model.encode_text(CAPTIONS)


def _assert_same(ours, theirs, tolerance, teacher_embeddings):
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() < tolerance
    # the student moved away from its teacher, so the agreement is the student's
    assert (ours - teacher_embeddings).abs().max().item() > 100 * tolerance


# --- transformers -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_transformers_clap(tmp_path_factory):
    _, tokenizer = roberta_tokenizer()
    text = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=130)
    audio = dict(spec_size=64, num_mel_bins=16, window_size=4, depths=[1, 1, 1], num_attention_heads=[1, 2, 4],
                 patch_embeds_hidden_size=8, hidden_size=32, enable_fusion=False)
    torch.manual_seed(8)
    model = transformers.ClapModel(transformers.ClapConfig(text_config=text, audio_config=audio, projection_dim=24))
    _randomize(model.eval(), seed=8)
    folder = tmp_path_factory.mktemp("tiny_transformers_clap")
    model.save_pretrained(folder)
    extractor = transformers.ClapFeatureExtractor(**TINY_FEATURES)
    transformers.ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def test_transformers_round_trip(tiny_transformers_clap, tmp_path):
    student = _fit_student(tiny_transformers_clap, tmp_path)
    out = _export(student, tmp_path / "exported")  # the teacher's form: a ClapModel folder
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    clap = transformers.ClapModel.from_pretrained(out).eval()
    processor = transformers.ClapProcessor.from_pretrained(out)
    waves = _waveforms()
    with torch.no_grad():
        audio = clap.get_audio_features(**processor(audio=waves, sampling_rate=SAMPLE_RATE, return_tensors="pt"))
        text = clap.get_text_features(**processor(text=CAPTIONS, padding=True, return_tensors="pt"))
    ours = _ours(load(student), waves)
    teacher = _ours(load_model(tiny_transformers_clap), waves)
    _assert_same(ours[0], audio.pooler_output, TRANSFORMERS_TOLERANCE, teacher[0])
    _assert_same(ours[1], text.pooler_output, TRANSFORMERS_TOLERANCE, teacher[1])

"""Round trips: a model as a CLAP family holds it -> clapcurate -> fit-student a few steps ->
`clapcurate export` -> loaded by that family's own code (transformers; laion_clap and msclap by
file, see published.py) -> the same embeddings as clapcurate's student, within 1e-5 for
transformers (its spectrogram is float64) and 2e-6 for the others.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
import yaml

from clapcurate.audio import inference_windows
from clapcurate.cli import main
from clapcurate.model.checkpoints import load, load_model, save

from published import msclap_modules, package_dir, published_function
from test_teachers import (CAPTIONS, _randomize, LAION_TINY_AUDIO, MSCLAP_TINY_AUDIO, SAMPLE_RATE, _laion_preprocessing,
                           _laion_reference, _laion_tokenizer, _msclap_2023_reference, _msclap_wrapper, _save_laion,
                           _waveforms, _write_tiny_world, tiny_gpt2_dir, tiny_roberta_dir)  # noqa: F401 (fixtures)
from test_transformers_clap import _randomize as _randomize_transformers_clap, roberta_tokenizer

OTHER_FAMILIES_TOLERANCE = 2e-6
TRANSFORMERS_TOLERANCE = 1e-5
# a tiny ClapModel on 1 s clips at 16 kHz (the tiny world's clips)
TINY_FEATURES = dict(feature_size=16, sampling_rate=SAMPLE_RATE, hop_length=160, max_length_s=1, fft_window_size=512,
                     frequency_min=50, frequency_max=8000, truncation="rand_trunc", padding="repeatpad")


def _fit_student(teacher, tmp_path, steps: int = 3, loss: str = "soft_label"):
    """fit-student from `teacher` on the tiny world's pairs (curated and replayed); its last/."""
    _write_tiny_world(tmp_path)
    config = tmp_path / "student.yaml"
    config.write_text(yaml.safe_dump(dict(
        teacher=str(teacher), improvement_set=str(tmp_path / "train.csv"), replay_manifest=str(tmp_path / "train.csv"),
        loss=dict(kind=loss, beta=0.3), data=dict(batch_size=4, val_fraction=0.0), optim=dict(lr=3e-3),
        trainer=dict(max_steps=steps, max_epochs=None, progress_bar=False, keep_best=False, save_resume_state=False),
        out_dir=str(tmp_path / "student"))))
    assert main(["fit-student", "--config", str(config)]) == 0
    return tmp_path / "student" / "last"


def _export(student, out, steps: int = 3):
    assert main(["export", str(student), str(out)]) == 0
    card = (out / "README.md").read_text()
    assert f"training steps: {steps}" in card and "12 pairs" in card  # the run's steps and curated set
    assert "No evaluation of this model was recorded." in card  # no study evaluated it
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
    _randomize_transformers_clap(model.eval(), seed=8)
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


def _import(command, checkpoint, text_dir, audio, out):
    settings = [arg for key, value in audio.items() for arg in ("--set", f"{key}={value}")]
    assert main([command, str(checkpoint), str(out), "--text-encoder", str(text_dir), *settings]) == 0
    return out


# --- LAION-CLAP ---------------------------------------------------------------------------------

def _laion_loader():
    """laion_clap's `load_state_dict` (factory.py), which `CLAP_Module.load_ckpt` calls before a strict load."""
    from packaging import version

    return published_function(package_dir("laion_clap") / "clap_module" / "factory.py", "load_state_dict",
                              {"torch": torch, "version": version, "transformers": transformers})


def test_laion_clap_round_trip(tiny_roberta_dir, tmp_path):
    published = tmp_path / "630k-tiny.pt"
    _save_laion(_laion_reference(tiny_roberta_dir, "htsat", classes=527)[0], published)
    teacher = _import("import-laion-clap", published, tiny_roberta_dir, LAION_TINY_AUDIO, tmp_path / "teacher")
    student = _fit_student(teacher, tmp_path)
    out = _export(student, tmp_path / "exported")  # the teacher's form: a LAION-CLAP .pt
    card = (out / "README.md").read_text()
    assert "give laion_clap's audio_cfg these: sample_rate=16000" in card  # the tiny model's settings, named

    clap, audio_cfg = _laion_reference(tiny_roberta_dir, "htsat", classes=527)
    clap.load_state_dict(_laion_loader()(str(out / "laion_clap.pt")))  # strict, as load_ckpt does
    clap.eval()
    quantize, get_audio_features = _laion_preprocessing()
    waves = _waveforms()
    with torch.no_grad():
        prepared = [get_audio_features({}, torch.from_numpy(quantize(wave)).float(), SAMPLE_RATE, "rand_trunc",
                                       "repeatpad", audio_cfg) for wave in waves]
        audio = clap.get_audio_embedding(prepared)
        text = clap.get_text_embedding(_laion_tokenizer(tiny_roberta_dir)(CAPTIONS))
    ours, before = _ours(load(student), waves), _ours(load(teacher), waves)
    _assert_same(ours[0], audio, OTHER_FAMILIES_TOLERANCE, before[0])
    _assert_same(ours[1], text, OTHER_FAMILIES_TOLERANCE, before[1])


# --- MS CLAP 2022 and 2023 ---------------------------------------------------------------------

MSCLAP_2022_TINY_AUDIO = dict(sample_rate=SAMPLE_RATE, hop_size=160, fmin=50, fmax=8000, clip_seconds=1.0)


def _msclap_2022_reference(bert_dir):
    """MS CLAP 2022 built by msclap's model code: its CNN14 (full width: msclap fixes it), a tiny BERT."""
    msclap = msclap_modules()
    torch.manual_seed(9)
    clap = msclap.clap.CLAP(audioenc_name="Cnn14", sample_rate=SAMPLE_RATE, window_size=512, hop_size=160,
                            mel_bins=64, fmin=50, fmax=8000, classes_num=5, out_emb=2048, text_model=str(bert_dir),
                            transformer_embed_dim=32, d_proj=24)
    _randomize(clap, seed=10)
    return clap.eval()


def _msclap_2022_text(bert_dir):
    """msclap's `preprocess_text` with BERT's tokenizer, padded to MS CLAP 2022's 100 tokens."""
    source = package_dir("msclap") / "CLAPWrapper.py"
    tokenizer = transformers.AutoTokenizer.from_pretrained(bert_dir)
    wrapper = types.SimpleNamespace(
        args=types.SimpleNamespace(text_model=str(bert_dir), text_len=100),
        tokenizer=types.SimpleNamespace(encode_plus=lambda text, **kwargs: tokenizer(text, **kwargs)),
        token_keys=["input_ids", "token_type_ids", "attention_mask"], use_cuda=False,
        default_collate=lambda items: {key: torch.stack([item[key] for item in items]) for key in items[0]})
    return published_function(source, "preprocess_text", {"torch": torch}).__get__(wrapper)


@pytest.mark.parametrize("year", [2022, 2023])
def test_msclap_round_trip(year, tiny_text_encoder_dir, tiny_gpt2_dir, tmp_path):
    # MS CLAP 2022's CNN14 is full width (msclap fixes it): one contrastive step (no teacher forward
    # pass) is enough to move the student
    text_dir, reference, settings, steps = {
        2022: (tiny_text_encoder_dir, _msclap_2022_reference, MSCLAP_2022_TINY_AUDIO, 1),
        2023: (tiny_gpt2_dir, _msclap_2023_reference, MSCLAP_TINY_AUDIO, 3)}[year]
    published = tmp_path / f"CLAP_weights_{year}_tiny.pth"
    torch.save({"model": reference(text_dir).state_dict()}, published)
    teacher = _import("import-msclap", published, text_dir, settings, tmp_path / "teacher")
    student = _fit_student(teacher, tmp_path, steps, "contrastive" if year == 2022 else "soft_label")
    out = _export(student, tmp_path / "exported", steps)  # the teacher's form: MS CLAP's .pth of that year

    clap = reference(text_dir)
    missing, unexpected = clap.load_state_dict(torch.load(out / f"CLAP_weights_{year}.pth")["model"], strict=False)
    unused = (".head.", "tscam_conv", "fc_audioset", "pooler")  # AudioSet heads, BERT's pooler: msclap's own
    assert not unexpected and all(any(name in key for name in unused) for key in missing)
    wrapper, load_into_tensor = _msclap_wrapper(text_dir)
    preprocess_text = wrapper.preprocess_text if year == 2023 else _msclap_2022_text(text_dir)
    waves = _waveforms()
    with torch.no_grad():
        wrapper.read_audio = lambda wave, resample: (torch.from_numpy(wave)[None], SAMPLE_RATE)
        prepared = torch.stack([load_into_tensor(wave, 1) for wave in waves])  # msclap: 1 s clips, looped
        audio = F.normalize(clap.audio_encoder(prepared)[0], dim=-1)
        text = F.normalize(clap.caption_encoder(preprocess_text(CAPTIONS)), dim=-1)
    ours, before = _ours(load(student), waves), _ours(load(teacher), waves)
    _assert_same(ours[0], audio, OTHER_FAMILIES_TOLERANCE, before[0])
    _assert_same(ours[1], text, OTHER_FAMILIES_TOLERANCE, before[1])


# --- what cannot be represented, and preprocessing that differs ---------------------------------

def test_a_cnn14_model_as_a_transformers_clap_is_refused_before_any_work(tiny_clap, tmp_path, capsys, monkeypatch):
    from clapcurate.model import checkpoints

    save(tiny_clap, tmp_path / "cnn14")
    monkeypatch.setattr(checkpoints, "load", lambda *args, **kwargs: pytest.fail("the weights were loaded"))
    assert main(["export", str(tmp_path / "cnn14"), str(tmp_path / "out"), "--format", "hf"]) == 2
    error = capsys.readouterr().err.strip()
    assert "CNN14 audio tower has no counterpart in a transformers ClapModel folder (HTSAT only)" in error and "\n" not in error
    assert not (tmp_path / "out").exists()
    assert main(["export", str(tmp_path / "cnn14"), str(tmp_path / "out"), "--format", "laion"]) == 2
    assert "MS CLAP projection heads have no counterpart" in capsys.readouterr().err


def test_a_laion_clap_model_as_a_transformers_clap_warns_with_the_measured_difference(tiny_roberta_dir, tmp_path):
    from clapcurate.export import export, probe_clips

    published = tmp_path / "630k-tiny.pt"
    _save_laion(_laion_reference(tiny_roberta_dir, "htsat")[0], published)
    teacher = _import("import-laion-clap", published, tiny_roberta_dir, LAION_TINY_AUDIO, tmp_path / "teacher")
    exported = export(teacher, tmp_path / "hf", "hf")
    warning, = exported.warnings
    measured = float(warning.rsplit("up to ", 1)[1].split()[0])
    # the difference is the 16-bit round trip's: transformers' embeddings of the probe clips differ by it
    model = load(teacher)
    clap = transformers.ClapModel.from_pretrained(exported.folder).eval()
    extractor = transformers.ClapFeatureExtractor.from_pretrained(exported.folder)
    probe = probe_clips(model)
    with torch.no_grad():
        theirs = clap.get_audio_features(**extractor(list(probe.numpy()), sampling_rate=SAMPLE_RATE,
                                                     return_tensors="pt")).pooler_output
        ours = model.encode_audio(probe)
    assert (ours - theirs).abs().max().item() == pytest.approx(measured, rel=0.05)
    assert measured > 1e-5 and "16-bit round trip" in (exported.folder / "README.md").read_text()


# --- the Python API's notebook example ----------------------------------------------------------

def test_the_python_api_notebook_example_runs(tiny_transformers_clap, tmp_path, monkeypatch, capsys):
    """docs/python-api.md's first python block, run as written in a folder holding what it names."""
    import re
    import shutil
    from pathlib import Path

    page = (Path(__file__).parents[1] / "docs" / "python-api.md").read_text()
    example = re.search(r"```python\n(.*?)```", page, re.S).group(1)
    _write_tiny_world(tmp_path)
    shutil.copytree(tiny_transformers_clap, tmp_path / "my-clap")
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "docs/python-api.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "pairs at sigma" in printed and "student" in printed
    assert transformers.ClapModel.from_pretrained(tmp_path / "exported") is not None
    assert "training steps: 2" in (tmp_path / "exported" / "README.md").read_text()

"""Conformance of the MS CLAP 2023 and LAION-CLAP imports with the families' own published code.

For each family a model is built by the published package's model code (tiny widths, random
weights), saved in the family's checkpoint layout, imported by us, and both embed the same
waveforms and captions, each prepared by the family's own preprocessing functions: the
normalised embeddings agree within 2e-6.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import types

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import transformers

from clapcurate.audio import inference_windows
from clapcurate.errors import ClapcurateError
from clapcurate.model.checkpoints import load, load_model, save
from clapcurate.model.imports import import_laion_clap, import_msclap_2023

from published import laion_clap_modules, msclap_modules, package_dir, published_function

TOLERANCE = 2e-6
SAMPLE_RATE = 16000
CAPTIONS = ["a dog barks", "rain on a tin roof", "this is a sound of birds near a car"]
BPE_CORPUS = ["a dog barks", "rain on a tin roof", "this is a sound of birds", "a car passes by near the road"]


def _byte_level_bpe(special_tokens: list[str]):
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(BPE_CORPUS * 4, vocab_size=300, min_frequency=1, special_tokens=special_tokens,
                            show_progress=False)
    return bpe


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory):
    """A tiny random GPT-2 with a byte-level BPE tokenizer whose "!" is id 0 and whose
    "<|endoftext|>" is the last id, as GPT-2's (the folder name holds "gpt": msclap checks it)."""
    bpe = _byte_level_bpe([])
    bpe.add_special_tokens(["<|endoftext|>"])
    tokenizer = transformers.GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>",
                                               bos_token="<|endoftext|>", unk_token="<|endoftext|>")
    assert tokenizer.convert_tokens_to_ids("!") == 0
    torch.manual_seed(1)
    model = transformers.GPT2Model(transformers.GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2,
                                                           n_head=2, n_positions=128, initializer_range=0.2))
    out_dir = tmp_path_factory.mktemp("tiny_gpt2")
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_roberta_dir(tmp_path_factory):
    """A small random RoBERTa (hidden 768: LAION-CLAP's text projection assumes it; one layer)."""
    bpe = _byte_level_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tokenizer = transformers.RobertaTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")
    torch.manual_seed(2)
    config = transformers.RobertaConfig(vocab_size=len(tokenizer), hidden_size=768, num_hidden_layers=1,
                                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=130,
                                        pad_token_id=1, bos_token_id=0, eos_token_id=2, initializer_range=0.1)
    model = transformers.RobertaModel(config)
    out_dir = tmp_path_factory.mktemp("tiny_roberta")
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _waveforms() -> list[np.ndarray]:
    """A clip of one model clip (1 s), a shorter and a far shorter one (for the padding rules).

    Each has a noise floor, as recorded audio does: a pure synthetic tone leaves mel bands at
    ~1e-10 power, where float32 DFTs (torchlibrosa's convolution and our FFT alike) are off by
    0.02-0.08 dB from a float64 one, which is larger than the agreement asked for here.
    """
    rng = np.random.default_rng(5)
    time = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    floor = 0.01 * rng.standard_normal(SAMPLE_RATE)
    tone = (0.5 * np.sin(2 * np.pi * 440 * time) + 5 * floor).astype(np.float32)
    chirp = (0.8 * np.sin(2 * np.pi * (200 + 3000 * time) * time) + floor).astype(np.float32)
    noise = (0.3 * rng.standard_normal(int(0.37 * SAMPLE_RATE))).astype(np.float32)
    return [tone, chirp[: int(0.6 * SAMPLE_RATE)], noise]


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial affine norms, biases and batch-norm statistics (bn0 at log-mel scale)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.LayerNorm)):
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                level, spread = (-40.0, 20.0) if name.endswith("bn0") else (0.0, 1.0)
                module.running_mean.copy_(level + torch.randn(module.running_mean.shape, generator=generator))
                module.running_var.copy_(spread**2 * (torch.rand(module.running_var.shape, generator=generator) + 0.5))
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and module.bias is not None:
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.05)


def _assert_conforms(ours: torch.Tensor, reference: torch.Tensor) -> None:
    assert ours.shape == reference.shape
    assert (ours - reference).abs().max().item() < TOLERANCE, (ours - reference).abs().amax(dim=-1)
    # the agreement is meaningful: different inputs give clearly different embeddings
    assert (reference[0] - reference[1:]).abs().amax(dim=-1).min() > 0.01


# --- MS CLAP 2023 -------------------------------------------------------------------------------

TINY_HTSAT = dict(spec_size=64, patch_size=4, patch_stride=(4, 4), embed_dim=8, depths=[2, 2, 2],
                  num_heads=[1, 2, 4], window_size=4)
# the tiny msclap model: 16 kHz audio, 1 s clips, a filterbank designed for 12 kHz (msclap 2023
# designs it for 32 kHz and feeds 44.1 kHz audio: the same mismatch, scaled down)
MSCLAP_TINY_AUDIO = dict(sample_rate=SAMPLE_RATE, mel_sample_rate=12000, hop_size=160, fmin=50, fmax=5000,
                         clip_seconds=1.0)


def _msclap_2023_reference(gpt2_dir):
    """MS CLAP 2023 built by msclap's model code, with a tiny HTS-AT (msclap's own class)."""
    msclap = msclap_modules()
    torch.manual_seed(3)
    clap = msclap.clap.CLAP(audioenc_name="Cnn14", sample_rate=SAMPLE_RATE, window_size=512, hop_size=160,
                            mel_bins=16, fmin=50, fmax=5000, classes_num=5, out_emb=32, text_model=str(gpt2_dir),
                            transformer_embed_dim=32, d_proj=24)
    config = types.SimpleNamespace(**{**vars(msclap.config), "sample_rate": 12000, "window_size": 512,
                                      "hop_size": 160, "mel_bins": 16, "fmin": 50, "fmax": 5000})
    htsat = msclap.htsat.HTSAT_Swin_Transformer(num_classes=5, config=config, **TINY_HTSAT)
    clap.audio_encoder.base = msclap.htsat.HTSATWrapper(SAMPLE_RATE, 512, 160, 16, 50, 5000, 5, 32)
    clap.audio_encoder.base.htsat = htsat
    _randomize(clap, seed=4)
    with torch.no_grad():
        clap.logit_scale.fill_(2.9)
    return clap.eval()


def _msclap_wrapper(gpt2_dir):
    """The preprocessing methods of msclap's CLAPWrapper on a stand-in `self` (the class itself
    imports torchaudio)."""
    source = package_dir("msclap") / "CLAPWrapper.py"
    namespace = {"np": np, "random": random, "torch": torch}
    tokenizer = transformers.AutoTokenizer.from_pretrained(gpt2_dir)
    tokenizer.add_special_tokens({"pad_token": "!"})
    # msclap calls `encode_plus`, which transformers 5 removed; calling the tokenizer is the same
    encode_plus = types.SimpleNamespace(encode_plus=lambda text, **kwargs: tokenizer(text, **kwargs))
    wrapper = types.SimpleNamespace(
        args=types.SimpleNamespace(text_model=str(gpt2_dir), text_len=77, sampling_rate=SAMPLE_RATE),
        tokenizer=encode_plus, token_keys=["input_ids", "attention_mask"], use_cuda=False,
        default_collate=lambda items: {key: torch.stack([item[key] for item in items]) for key in items[0]},
    )
    wrapper.preprocess_text = published_function(source, "preprocess_text", namespace).__get__(wrapper)
    load_into_tensor = published_function(source, "load_audio_into_tensor", namespace).__get__(wrapper)
    return wrapper, load_into_tensor


@pytest.fixture
def msclap_2023_checkpoint(tiny_gpt2_dir, tmp_path):
    reference = _msclap_2023_reference(tiny_gpt2_dir)
    path = tmp_path / "CLAP_weights_2023_tiny.pth"
    torch.save({"model": reference.state_dict()}, path)
    return path, reference


def test_msclap_2023_import_matches_published_code(msclap_2023_checkpoint, tiny_gpt2_dir):
    path, reference = msclap_2023_checkpoint
    model = import_msclap_2023(path, text_encoder=str(tiny_gpt2_dir), **MSCLAP_TINY_AUDIO)
    assert (model.config.audio.encoder, model.config.audio.htsat.depths, model.config.audio.htsat.spec_size) == (
        "htsat", [2, 2, 2], 64)
    wrapper, load_into_tensor = _msclap_wrapper(tiny_gpt2_dir)
    waves = _waveforms()
    with torch.no_grad():
        wrapper.read_audio = lambda wave, resample: (torch.from_numpy(wave)[None], SAMPLE_RATE)
        prepared = torch.stack([load_into_tensor(wave, 1) for wave in waves])  # msclap: 1 s clips, looped
        audio_reference = F.normalize(reference.audio_encoder(prepared)[0], dim=-1)
        windows = np.concatenate([inference_windows(wave, model.clip_samples, model.config.audio.short_clip_fill)
                                  for wave in waves])
        _assert_conforms(model.encode_audio(torch.from_numpy(windows)), audio_reference)
        text_reference = F.normalize(reference.caption_encoder(wrapper.preprocess_text(CAPTIONS)), dim=-1)
        _assert_conforms(model.encode_text(CAPTIONS), text_reference)
    assert model.logit_scale.item() == pytest.approx(2.9)


def test_load_model_recognises_msclap_2023_and_the_folder_round_trips(msclap_2023_checkpoint, tiny_gpt2_dir,
                                                                        tmp_path, monkeypatch):
    path, _ = msclap_2023_checkpoint
    from clapcurate.model import imports

    monkeypatch.setitem(imports.MSCLAP_2023_AUDIO, "sample_rate", SAMPLE_RATE)  # the tiny model's settings
    for key, value in MSCLAP_TINY_AUDIO.items():
        monkeypatch.setitem(imports.MSCLAP_2023_AUDIO, key, value)
    model = load_model(path, text_encoder=str(tiny_gpt2_dir))
    save(model, tmp_path / "folder")
    loaded = load(tmp_path / "folder")
    wave = torch.from_numpy(_waveforms()[0])[None]
    with torch.no_grad():
        assert torch.equal(loaded.encode_audio(wave), model.encode_audio(wave))
        assert torch.equal(loaded.encode_text(CAPTIONS), model.encode_text(CAPTIONS))


# --- LAION-CLAP ---------------------------------------------------------------------------------

LAION_TINY_AUDIO = dict(sample_rate=SAMPLE_RATE, hop_size=160, fmin=50, fmax=8000, clip_seconds=1.0)


@contextlib.contextmanager
def _tiny_roberta_for_laion(laion, roberta_dir):
    """LAION-CLAP's model code builds RoBERTa with `RobertaModel.from_pretrained('roberta-base')`
    (a download): give it the tiny local one instead."""
    original = laion.model.RobertaModel
    laion.model.RobertaModel = types.SimpleNamespace(
        from_pretrained=lambda name: transformers.RobertaModel.from_pretrained(roberta_dir))
    try:
        yield
    finally:
        laion.model.RobertaModel = original


def _laion_reference(roberta_dir, tower: str, classes: int = 5):
    """LAION-CLAP built by its own model code: a tiny HTS-AT (its own class) or its PANNs Cnn14
    (full width: its Cnn6 and Cnn10 do not take the model's dict input), with an AudioSet-style
    head of `classes` classes (unused by the embeddings)."""
    laion = laion_clap_modules()
    mel_bins = 16 if tower == "htsat" else 64  # LAION's PANNs fix bn0 at 64 mel bins
    window = 512 if tower == "htsat" else 1024
    audio_cfg = dict(model_type="PANN", model_name="Cnn14" if tower == "pann" else "Cnn6", sample_rate=SAMPLE_RATE, audio_length=1024,
                     window_size=window, hop_size=160, fmin=50, fmax=8000, class_num=classes, mel_bins=mel_bins,
                     clip_samples=SAMPLE_RATE)
    text_cfg = dict(context_length=77, vocab_size=300, width=512, heads=8, layers=12, model_type="roberta")
    torch.manual_seed(6)
    embed_dim = 32 if tower == "htsat" else 2048
    with _tiny_roberta_for_laion(laion, roberta_dir):
        clap = laion.model.CLAP(embed_dim=embed_dim, audio_cfg=audio_cfg, text_cfg=text_cfg, joint_embed_shape=24)
    if tower == "htsat":
        audio_cfg = {**audio_cfg, "model_type": "HTSAT", "model_name": "tiny"}
        clap.audio_cfg = laion.model.CLAPAudioCfp(**audio_cfg)
        clap.audio_branch = laion.htsat.HTSAT_Swin_Transformer(num_classes=classes, config=clap.audio_cfg,
                                                               **TINY_HTSAT)
    _randomize(clap, seed=7)
    if tower == "pann":
        _measure_batch_norm_statistics(clap.audio_branch)
    with torch.no_grad():
        clap.logit_scale_a.fill_(3.1)
        clap.logit_scale_t.fill_(2.3)
    return clap.eval(), audio_cfg


def _measure_batch_norm_statistics(branch: torch.nn.Module) -> None:
    """Batch-norm statistics measured on the test clips: a random full-width CNN14 with made-up
    statistics saturates and gives every clip nearly the same embedding."""
    batch_norms = [m for m in branch.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
    for module in batch_norms:
        module.reset_running_stats()
        module.momentum = None  # cumulative average over the calibration batch
        module.train()
    waves = torch.from_numpy(np.stack([np.resize(wave, SAMPLE_RATE) for wave in _waveforms()]))
    with torch.no_grad():
        branch({"waveform": waves, "longer": torch.zeros(len(waves), dtype=torch.bool)})
    for module in batch_norms:
        module.eval()


def _laion_preprocessing():
    """LAION-CLAP's int16 round trip and `get_audio_features`, from its training/data.py."""
    from contextlib import suppress

    source = package_dir("laion_clap") / "training" / "data.py"
    namespace = {"np": np, "torch": torch, "F": F, "suppress": suppress}
    to_int16 = published_function(source, "float32_to_int16", namespace)
    to_float32 = published_function(source, "int16_to_float32", namespace)
    get_audio_features = published_function(source, "get_audio_features", namespace)
    return lambda wave: to_float32(to_int16(wave)), get_audio_features


def _laion_tokenizer(roberta_dir):
    """`CLAP_Module.tokenizer` of laion_clap's hook.py on a stand-in `self` holding the tokenizer."""
    method = published_function(package_dir("laion_clap") / "hook.py", "tokenizer", {})
    return method.__get__(types.SimpleNamespace(tokenize=transformers.AutoTokenizer.from_pretrained(roberta_dir)))


def _save_laion(clap, path):
    """LAION-CLAP's training writes `{"epoch": ..., "state_dict": DDP state dict}`."""
    torch.save({"epoch": 45, "state_dict": {f"module.{k}": v for k, v in clap.state_dict().items()}}, path)


@pytest.mark.parametrize("tower", ["htsat", "pann"])
def test_laion_clap_import_matches_published_code(tower, tiny_roberta_dir, tmp_path):
    reference, audio_cfg = _laion_reference(tiny_roberta_dir, tower)
    path = tmp_path / "630k-tiny.pt"
    _save_laion(reference, path)
    model = import_laion_clap(path, text_encoder=str(tiny_roberta_dir), **LAION_TINY_AUDIO)
    assert model.config.audio.encoder == ("htsat" if tower == "htsat" else "cnn14")
    quantize, get_audio_features = _laion_preprocessing()
    waves = _waveforms()
    with torch.no_grad():
        prepared = [get_audio_features({}, torch.from_numpy(quantize(wave)).float(), SAMPLE_RATE, "rand_trunc",
                                       "repeatpad", audio_cfg) for wave in waves]
        audio_reference = reference.get_audio_embedding(prepared)
        windows = np.concatenate([inference_windows(wave, model.clip_samples, model.config.audio.short_clip_fill)
                                  for wave in waves])
        _assert_conforms(model.encode_audio(torch.from_numpy(windows)), audio_reference)
        text_reference = reference.get_text_embedding(_laion_tokenizer(tiny_roberta_dir)(CAPTIONS))
        _assert_conforms(model.encode_text(CAPTIONS), text_reference)
    assert model.logit_scale.item() == pytest.approx(3.1)
    assert model.text_logit_scale.item() == pytest.approx(2.3)


def test_laion_clap_fusion_checkpoints_are_refused(tiny_roberta_dir, tmp_path):
    reference, _ = _laion_reference(tiny_roberta_dir, "htsat")
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}
    state["module.audio_branch.patch_embed.fusion_model.local_att.0.weight"] = torch.zeros(1)
    path = tmp_path / "630k-fusion-tiny.pt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(ClapcurateError, match="fusion checkpoint; fusion is not supported"):
        load_model(path, text_encoder=str(tiny_roberta_dir))


# --- every stage takes an imported teacher --------------------------------------------------------

def _write_tiny_world(root):
    """Captioned pairs, an unlabelled pool and a labelled evaluation set of 1 s clips at 16 kHz."""
    from test_train import write_clips

    clips = write_clips(root / "audio", 24, seed=1)
    pairs, pool = clips.iloc[:12], clips.iloc[12:]
    pairs.to_csv(root / "train.csv", index=False)
    pool.drop(columns=["caption"]).assign(caption="").to_csv(root / "pool.csv", index=False)
    labelled = clips.iloc[:8].assign(label=[("dog", "rain")[k % 2] for k in range(8)])
    labelled[["audio_path", "label"]].to_csv(root / "eval.csv", index=False)


def _family_checkpoint(family, tmp_path, gpt2_dir, roberta_dir):
    """(checkpoint file, import command, its --text-encoder, its --set audio settings)."""
    if family == "msclap-2023":
        path = tmp_path / "CLAP_weights_2023_tiny.pth"
        torch.save({"model": _msclap_2023_reference(gpt2_dir).state_dict()}, path)
        return path, "import-msclap", gpt2_dir, MSCLAP_TINY_AUDIO
    path = tmp_path / "630k-audioset-tiny.pt"
    _save_laion(_laion_reference(roberta_dir, "htsat")[0], path)
    return path, "import-laion-clap", roberta_dir, LAION_TINY_AUDIO


@pytest.mark.parametrize("family", ["msclap-2023", "laion-clap"])
def test_import_embed_curate_fit_student_evaluate(family, tiny_gpt2_dir, tiny_roberta_dir, tmp_path):
    import yaml

    from clapcurate.cli import main
    from clapcurate.embed import load_embeddings

    _write_tiny_world(tmp_path)
    checkpoint, command, text_dir, audio = _family_checkpoint(family, tmp_path, tiny_gpt2_dir, tiny_roberta_dir)
    teacher = tmp_path / "teacher"
    settings = [arg for key, value in audio.items() for arg in ("--set", f"{key}={value}")]
    assert main([command, str(checkpoint), str(teacher), "--text-encoder", str(text_dir), *settings]) == 0

    assert main(["embed", "--model", str(teacher), "--manifest", str(tmp_path / "pool.csv"),
                 "--out", str(tmp_path / "pool_emb"), "--batch-size", "5"]) == 0
    ids, embeddings = load_embeddings(tmp_path / "pool_emb")
    assert embeddings.shape == (12, load(teacher).config.d_proj)

    curate_config = tmp_path / "curate.yaml"
    curate_config.write_text(yaml.safe_dump(dict(
        teacher=str(teacher), train_manifest=str(tmp_path / "train.csv"), pool_manifest=str(tmp_path / "pool.csv"),
        pool_embeddings=str(tmp_path / "pool_emb"), sigma=None, keep_fraction=0.25, out_dir=str(tmp_path / "du"),
        progress=False)))
    assert main(["curate", "du", "--config", str(curate_config)]) == 0
    assert len(pd.read_csv(tmp_path / "du" / "improvement_set.csv")) > 0

    student_config = tmp_path / "student.yaml"
    student_config.write_text(yaml.safe_dump(dict(
        teacher=str(teacher), improvement_set=str(tmp_path / "du" / "improvement_set.csv"),
        replay_manifest=str(tmp_path / "train.csv"), loss=dict(kind="soft_label", beta=0.3),
        data=dict(batch_size=4, val_fraction=0.0), optim=dict(lr=1e-4),
        trainer=dict(max_steps=2, max_epochs=None, progress_bar=False), out_dir=str(tmp_path / "student"))))
    assert main(["fit-student", "--config", str(student_config)]) == 0
    student = load(tmp_path / "student" / "last")
    assert student.config.audio == load(teacher).config.audio  # the family's preprocessing travels along
    teacher_text = load(teacher).config.text
    assert student.config.text == dataclasses.replace(teacher_text, name_or_path=student.config.text.name_or_path)

    assert main(["evaluate", "--model", str(tmp_path / "student" / "last"), "--dataset",
                 f"csv:{tmp_path / 'eval.csv'}", "--out", str(tmp_path / "acc.csv")]) == 0
    accuracy = pd.read_csv(tmp_path / "acc.csv")
    assert accuracy["clips"].tolist() == [8] and accuracy["accuracy_percent"].between(0, 100).all()



def test_student_fine_tunes_a_tiny_htsat_teacher_until_it_overfits(tiny_clap_config, build_tiny_clap, tmp_path):
    """The student fit (soft labels, replay, cached log-mels cropped in frames) trains an HTS-AT
    teacher as it trains a CNN: 32 pairs are retrieved perfectly after 100 steps."""
    import soundfile

    from clapcurate.model.clap import AudioConfig
    from clapcurate.model.htsat import HTSATConfig
    from clapcurate.train import (AugmentConfig, DataConfig, LossConfig, OptimConfig, ReplayConfig, StudentConfig,
                                  TextTrainConfig, TrainerConfig, fit_student)
    from clapcurate.metrics import retrieval_metrics
    from test_train import write_clips

    audio = AudioConfig(encoder="htsat", sample_rate=SAMPLE_RATE, window_size=512, hop_size=160, mel_bins=32,
                        fmin=50, fmax=8000, clip_seconds=1.0,
                        htsat=HTSATConfig(embed_dim=16, depths=[1, 1, 1], num_heads=[2, 2, 4], window_size=4,
                                          spec_size=64, drop_path=0.0))
    teacher = build_tiny_clap(dataclasses.replace(tiny_clap_config, audio=audio, projection_dropout=0.0))
    save(teacher, tmp_path / "teacher")
    manifest = write_clips(tmp_path / "audio", 32)
    manifest.to_csv(tmp_path / "pairs.csv", index=False)
    config = StudentConfig(
        teacher=str(tmp_path / "teacher"), improvement_set=str(tmp_path / "pairs.csv"),
        replay_manifest=str(tmp_path / "pairs.csv"), replay=ReplayConfig(replay_prob=0.5),
        loss=LossConfig(kind="soft_label", beta=0.1), data=DataConfig(val_fraction=0.0, batch_size=32),
        optim=OptimConfig(lr=3e-3), augment=AugmentConfig(random_crop=False, gain_db=0.0, time_masks=0, freq_masks=0),
        trainer=TrainerConfig(max_steps=100, max_epochs=None, progress_bar=False, log_every_n_steps=1),
        text=TextTrainConfig(freeze_text_encoder=True, cache_text_features=True), freeze_batchnorm=False,
        out_dir=str(tmp_path / "student"))
    student = load(fit_student(config) / "last")
    assert student.config.audio.encoder == "htsat"
    waves = torch.stack([torch.from_numpy(soundfile.read(path, dtype="float32")[0]) for path in manifest.audio_path])
    with torch.no_grad():
        metrics = retrieval_metrics(student.encode_audio(waves).numpy(),
                                    student.encode_text(manifest.caption.tolist()).numpy(), np.arange(32))
    assert metrics["text_to_audio/R@1"] == 1.0 and metrics["audio_to_text/R@1"] == 1.0


def test_import_commands_refuse_the_other_family(msclap_2023_checkpoint, tiny_gpt2_dir, tmp_path, capsys):
    from clapcurate.cli import main

    path, _ = msclap_2023_checkpoint
    assert main(["import-laion-clap", str(path), str(tmp_path / "out"), "--text-encoder", str(tiny_gpt2_dir)]) == 2
    assert "an MS CLAP 2023 checkpoint, expected LAION-CLAP" in capsys.readouterr().err
    assert main(["import-msclap", str(path), str(tmp_path / "out"), "--set", "fmax"]) == 2
    assert "--set expects KEY=VALUE" in capsys.readouterr().err


def test_study_runs_from_an_imported_teacher(tiny_roberta_dir, tmp_path):
    """`teacher_checkpoint`: the study curates with and trains students from a given teacher."""
    import yaml

    from clapcurate.study import load_study_config, run_study

    path = tmp_path / "630k-audioset-tiny.pt"
    _save_laion(_laion_reference(tiny_roberta_dir, "htsat")[0], path)
    teacher = tmp_path / "teacher"
    save(import_laion_clap(path, text_encoder=str(tiny_roberta_dir), **LAION_TINY_AUDIO), teacher)
    stage = dict(data=dict(batch_size=16), trainer=dict(max_steps=2, max_epochs=None, val_check_interval=2,
                                                        progress_bar=False),
                 text=dict(freeze_text_encoder=True, cache_text_features=True))
    config_path = tmp_path / "study.yaml"
    config_path.write_text(yaml.safe_dump(dict(
        name="given", out_root=str(tmp_path / "runs"), world=dict(dir=str(tmp_path / "world"), seed=3, scale=0.01),
        seeds=[0], low_resource_fraction=None, variants=False, teacher_checkpoint=str(teacher), student=stage,
        curation=dict(du_sigma=None, du_keep_fraction=0.05, ds_sigma=0.2, ads_sigma=None, ads_keep_fraction=0.1))))
    out = run_study(load_study_config(config_path))
    results = pd.read_csv(f"{out}/results.csv")
    assert set(results.teacher) == {"full"} and {"teacher", "DU", "ADS+SL"} <= set(results.model)
    assert results.accuracy.between(0, 1).all()
    assert not (tmp_path / "runs" / "given" / "teachers").exists()  # no teacher was trained


def test_int16_round_trip_and_short_clip_fill_follow_laion_clap():
    from clapcurate.model.frontend import int16_round_trip

    quantize, _ = _laion_preprocessing()
    wave = np.random.default_rng(0).uniform(-1.3, 1.3, 5000).astype(np.float32)
    expected = quantize(wave)
    assert np.array_equal(int16_round_trip(wave), expected)  # the log-mel cache's path (numpy)
    assert np.array_equal(int16_round_trip(torch.from_numpy(wave)).numpy(), expected)  # the model's path (torch)
    short = np.arange(1, 4, dtype=np.float32)
    np.testing.assert_array_equal(inference_windows(short, 8, "repeat_then_silence"), [[1, 2, 3, 1, 2, 3, 0, 0]])
    np.testing.assert_array_equal(inference_windows(short, 8), [[1, 2, 3, 1, 2, 3, 1, 2]])
    long = np.arange(20, dtype=np.float32)
    np.testing.assert_array_equal(inference_windows(long, 8, "repeat_then_silence"), inference_windows(long, 8))


# --- the published sizes and settings ---------------------------------------------------------------

def test_published_sizes_import_with_the_family_defaults(tiny_gpt2_dir, tiny_roberta_dir, tmp_path):
    """HTS-AT tiny as each family's code builds it at its published settings (LAION-CLAP: 48 kHz,
    hop 480, 10 s; MS CLAP 2023: 44.1 kHz audio, a 32 kHz filterbank, hop 320, 7 s) imports with
    no settings given (the front-end weights would be refused if a default were off) and embeds
    a clip of the published length as the published code does."""
    laion = laion_clap_modules()
    audio_cfg = dict(model_type="HTSAT", model_name="tiny", sample_rate=48000, audio_length=1024, window_size=1024,
                     hop_size=480, fmin=50, fmax=14000, class_num=527, mel_bins=64, clip_samples=480000)
    text_cfg = dict(context_length=77, vocab_size=300, width=512, heads=8, layers=12, model_type="roberta")
    torch.manual_seed(8)
    with _tiny_roberta_for_laion(laion, tiny_roberta_dir):
        laion_clap = laion.model.CLAP(embed_dim=768, audio_cfg=audio_cfg, text_cfg=text_cfg).eval()
    _save_laion(laion_clap, tmp_path / "630k-audioset-best.pt")
    model = load_model(tmp_path / "630k-audioset-best.pt", text_encoder=str(tiny_roberta_dir))
    assert (model.config.audio.htsat.embed_dim, model.config.audio.htsat.depths, model.config.audio.htsat.spec_size,
            model.config.audio.htsat.window_size, model.config.d_proj) == (96, [2, 2, 6, 2], 256, 8, 512)
    quantize, get_audio_features = _laion_preprocessing()
    rng = np.random.default_rng(9)
    wave = (0.3 * rng.standard_normal(300000)).astype(np.float32)  # 6.25 s: repeated then zero-padded
    with torch.no_grad():
        prepared = get_audio_features({}, torch.from_numpy(quantize(wave)).float(), 480000, "rand_trunc",
                                      "repeatpad", audio_cfg)
        reference = laion_clap.get_audio_embedding([prepared])
        ours = model.encode_audio(torch.from_numpy(inference_windows(wave, model.clip_samples,
                                                                     model.config.audio.short_clip_fill)))
    assert (ours - reference).abs().max().item() < TOLERANCE

    msclap = msclap_modules()
    torch.manual_seed(10)
    ms_clap = msclap.clap.CLAP(audioenc_name="HTSAT", sample_rate=44100, window_size=1024, hop_size=320, mel_bins=64,
                               fmin=50, fmax=8000, classes_num=527, out_emb=768, text_model=str(tiny_gpt2_dir),
                               transformer_embed_dim=32, d_proj=1024).eval()
    torch.save({"model": ms_clap.state_dict()}, tmp_path / "CLAP_weights_2023.pth")
    model = load_model(tmp_path / "CLAP_weights_2023.pth", text_encoder=str(tiny_gpt2_dir))
    assert (model.config.audio.sample_rate, model.config.audio.clip_samples, model.config.d_proj) == (44100, 308700, 1024)
    _, load_into_tensor = _msclap_wrapper(tiny_gpt2_dir)
    wave = (0.3 * rng.standard_normal(200000)).astype(np.float32)  # 4.5 s: looped to 7 s
    with torch.no_grad():
        load_into_tensor.__self__.read_audio = lambda wave, resample: (torch.from_numpy(wave)[None], 44100)
        reference = F.normalize(ms_clap.audio_encoder(load_into_tensor(wave, 7)[None])[0], dim=-1)
        ours = model.encode_audio(torch.from_numpy(inference_windows(wave, model.clip_samples)))
    assert (ours - reference).abs().max().item() < TOLERANCE


def test_student_of_an_htsat_teacher_trains_under_ddp(tiny_clap_config, tmp_path):
    """Two CPU processes (DDP, gloo): every parameter of an HTS-AT student with LAION-CLAP's heads
    takes part in the loss (DDP fails on unused ones) and the global-batch losses run."""
    from clapcurate.model.clap import CLAP, AudioConfig
    from clapcurate.model.htsat import HTSATConfig
    from clapcurate.train import (DataConfig, LossConfig, OptimConfig, StudentConfig, TextTrainConfig, TrainerConfig,
                                  fit_student)
    from test_train import write_clips

    audio = AudioConfig(encoder="htsat", sample_rate=SAMPLE_RATE, window_size=512, hop_size=160, mel_bins=32, fmin=50,
                        fmax=8000, clip_seconds=1.0, htsat=HTSATConfig(embed_dim=16, depths=[1, 1, 1],
                                                                       num_heads=[2, 2, 4], window_size=4, spec_size=64))
    torch.manual_seed(0)
    teacher = CLAP(dataclasses.replace(tiny_clap_config, audio=audio, projection="mlp", text_logit_scale=True))
    save(teacher, tmp_path / "teacher")
    write_clips(tmp_path / "audio", 16).to_csv(tmp_path / "pairs.csv", index=False)
    config = StudentConfig(
        teacher=str(tmp_path / "teacher"), improvement_set=str(tmp_path / "pairs.csv"),
        replay_manifest=str(tmp_path / "pairs.csv"), loss=LossConfig(kind="soft_label"),
        data=DataConfig(val_fraction=0.0, batch_size=4), optim=OptimConfig(lr=1e-3),
        trainer=TrainerConfig(max_steps=3, max_epochs=None, progress_bar=False, accelerator="cpu", devices=2,
                              strategy="ddp_spawn"),
        text=TextTrainConfig(freeze_text_encoder=True, cache_text_features=True), out_dir=str(tmp_path / "student"))
    student = load(fit_student(config) / "last")
    changed = [name for name, value in student.state_dict().items()
               if not torch.equal(value, teacher.state_dict()[name])]
    assert any(name.startswith("audio_encoder.layers.") for name in changed)
    assert "text_logit_scale" not in changed  # LAION-CLAP's text scale is kept, not trained


def test_htsat_refuses_clips_longer_than_its_input(tiny_clap_config):
    from clapcurate.model.clap import CLAP, AudioConfig
    from clapcurate.model.htsat import HTSATConfig

    audio = AudioConfig(encoder="htsat", sample_rate=SAMPLE_RATE, window_size=512, hop_size=160, mel_bins=32,
                        fmax=8000, clip_seconds=3.0, htsat=HTSATConfig(embed_dim=8, depths=[1, 1, 1], num_heads=[1, 1, 1],
                                                            window_size=4, spec_size=64))
    with pytest.raises(ClapcurateError, match="3 s clips at hop 160 give 301 frames, more than the 128 HTS-AT takes"):
        CLAP(dataclasses.replace(tiny_clap_config, audio=audio))

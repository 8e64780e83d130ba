import dataclasses
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers

import clapcurate
from clapcurate.errors import ClapcurateError, ConfigError
from clapcurate.model import checkpoints, text_encoders
from clapcurate.model.checkpoints import checkpoint_hash, load, save
from clapcurate.model.imports import import_msclap
from clapcurate.model.clap import CLAP, TextConfig
from clapcurate.model.text_encoders import default_text_encoder_path
from clapcurate.model.weights import tensors_hash
from safetensors.torch import load_file

CAPTIONS = ["a dog barks", "rain on a tin roof", " ".join(["a long caption"] * 60)]


def randomize_affine_normalization(model: torch.nn.Module) -> None:
    """Give every BatchNorm and LayerNorm non-trivial affine weights (scale and shift)."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.LayerNorm)):
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)


# --- our format -----------------------------------------------------------------------------


def test_round_trip_without_the_original_text_encoder_folder(tiny_clap_config, build_tiny_clap, tiny_text_encoder_dir,
                                                            tmp_path, tiny_waveforms):
    text_dir = shutil.copytree(tiny_text_encoder_dir, tmp_path / "text_encoder_copy")
    config = dataclasses.replace(
        tiny_clap_config, text=TextConfig(name_or_path=str(text_dir), pooling="mean", max_length=40)
    )
    model = build_tiny_clap(config)
    randomize_affine_normalization(model)
    save(model, tmp_path / "ckpt")
    shutil.rmtree(text_dir)

    loaded = clapcurate.load(tmp_path / "ckpt")
    assert not loaded.training
    assert loaded.config.audio == config.audio and loaded.config.d_proj == config.d_proj
    assert (loaded.config.text.pooling, loaded.config.text.max_length) == ("mean", 40)
    with torch.no_grad():
        assert torch.equal(loaded.encode_audio(tiny_waveforms), model.encode_audio(tiny_waveforms))
        assert torch.equal(loaded.encode_text(CAPTIONS), model.encode_text(CAPTIONS))
    assert loaded.logit_scale.item() == model.logit_scale.item()


def test_checkpoint_hash_is_stable_and_tracks_weights(tiny_clap, tmp_path):
    save(tiny_clap, tmp_path / "a")
    first = checkpoint_hash(tmp_path / "a")
    assert len(first) == 64
    assert checkpoint_hash(tmp_path / "a") == first
    shutil.copytree(tmp_path / "a", tmp_path / "copy")
    assert checkpoint_hash(tmp_path / "copy") == first
    save(tiny_clap, tmp_path / "again")
    assert checkpoint_hash(tmp_path / "again") == first
    with torch.no_grad():
        tiny_clap.logit_scale.add_(0.5)
    save(tiny_clap, tmp_path / "changed")
    assert checkpoint_hash(tmp_path / "changed") != first


def test_load_reports_broken_folders(tiny_clap, tmp_path):
    with pytest.raises(ClapcurateError, match="missing model.safetensors"):
        load(tmp_path)
    save(tiny_clap, tmp_path / "ckpt")
    config_path = tmp_path / "ckpt" / "config.json"
    config = json.loads(config_path.read_text())

    config_path.write_text(json.dumps({**config, "d_proj": 16}))
    with pytest.raises(ClapcurateError, match=r"shape mismatches \(checkpoint vs model\): audio_projection.layer_norm.bias"):
        load(tmp_path / "ckpt")

    config_path.write_text(json.dumps({**config, "width": 3}))
    with pytest.raises(ConfigError, match="config.json: unknown config key width"):
        load(tmp_path / "ckpt")

    config_path.write_text("{not json")
    with pytest.raises(ClapcurateError, match="config.json: not valid JSON"):
        load(tmp_path / "ckpt")


# --- parts referred to by hash ------------------------------------------------------------------


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def text_encoder_bytes(model: CLAP) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in model.text_encoder.state_dict().values())


def same_weights(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    a, b = first.state_dict(), second.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def parts(folder: Path) -> dict:
    return json.loads((Path(folder) / checkpoints.PARTS_FILE).read_text())["parts"]


def stored_keys(folder: Path, prefix: str) -> set[str]:
    return {key for key in load_file(str(Path(folder) / checkpoints.WEIGHTS_FILE)) if key.startswith(prefix)}


@pytest.fixture
def own_encoder(tiny_text_encoder_dir, tiny_clap_config, build_tiny_clap, tmp_path):
    """A model whose pretrained text encoder is a folder of this test's own (a copy of the tiny
    one); no referenced part is kept in memory from other tests."""
    text_dir = shutil.copytree(tiny_text_encoder_dir, tmp_path / "encoder")
    config = dataclasses.replace(tiny_clap_config, text=dataclasses.replace(tiny_clap_config.text,
                                                                            name_or_path=str(text_dir)))
    checkpoints.forget_loaded_sources()
    yield build_tiny_clap(config), text_dir
    checkpoints.forget_loaded_sources()


def test_an_unchanged_text_encoder_is_referred_to_and_loads_bit_identical(own_encoder, tmp_path):
    model, text_dir = own_encoder
    save(model, tmp_path / "ckpt")
    assert stored_keys(tmp_path / "ckpt", "audio_encoder.") and not stored_keys(tmp_path / "ckpt", "text_encoder.")
    source = parts(tmp_path / "ckpt")["text_encoder"]["source"]
    assert (source["kind"], source["path"]) == ("pretrained", str(text_dir))
    save(model, tmp_path / "full", self_contained=True)
    assert stored_keys(tmp_path / "full", "text_encoder.")
    assert folder_bytes(tmp_path / "full") - folder_bytes(tmp_path / "ckpt") >= text_encoder_bytes(model)

    loaded = load(tmp_path / "ckpt")
    assert same_weights(loaded, model)
    with torch.no_grad():
        assert torch.equal(loaded.encode_text(CAPTIONS), model.encode_text(CAPTIONS))
    # a checkpoint of the loaded model refers to the same encoder, not to the checkpoint it came from
    save(loaded, tmp_path / "again")
    assert parts(tmp_path / "again")["text_encoder"]["source"]["path"] == str(text_dir)
    assert ({part: entry["sha256"] for part, entry in parts(tmp_path / "again").items()}
            == {part: entry["sha256"] for part, entry in parts(tmp_path / "ckpt").items()})


def test_checkpoint_hash_is_that_of_the_weights_however_they_are_stored(own_encoder, tmp_path):
    model, _ = own_encoder
    save(model, tmp_path / "ref")
    save(model, tmp_path / "full", self_contained=True)
    assert checkpoint_hash(tmp_path / "ref") == checkpoint_hash(tmp_path / "full")
    with torch.no_grad():
        model.text_encoder.model.embeddings.word_embeddings.weight[0, 0] += 1.0
    save(model, tmp_path / "changed")
    assert "source" not in parts(tmp_path / "changed")["text_encoder"]
    assert checkpoint_hash(tmp_path / "changed") != checkpoint_hash(tmp_path / "ref")


def test_a_folder_written_before_weights_json_keeps_its_earlier_hash_and_loads(tiny_clap, tmp_path):
    save(tiny_clap, tmp_path / "old", self_contained=True)
    (tmp_path / "old" / checkpoints.PARTS_FILE).unlink()
    earlier = hashlib.sha256()  # the hash folders had before: names and bytes of all their files
    files = [tmp_path / "old" / "config.json", tmp_path / "old" / "model.safetensors",
             *sorted(p for p in (tmp_path / "old" / "text_encoder").rglob("*") if p.is_file())]
    for path in files:
        earlier.update(path.relative_to(tmp_path / "old").as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    assert checkpoint_hash(tmp_path / "old") == earlier.hexdigest()
    loaded = load(tmp_path / "old")
    assert same_weights(loaded, tiny_clap)
    assert loaded.weight_sources["text_encoder"].kind == "checkpoint"


def test_a_changed_text_encoder_is_stored_in_full(own_encoder, tmp_path):
    model, text_dir = own_encoder
    with torch.no_grad():
        for parameter in model.text_encoder.parameters():
            parameter.mul_(1.01)
    save(model, tmp_path / "ckpt")
    assert "source" not in parts(tmp_path / "ckpt")["text_encoder"]
    assert stored_keys(tmp_path / "ckpt", "text_encoder.") == {f"text_encoder.{key}" for key in model.text_encoder.state_dict()}
    shutil.rmtree(text_dir)
    assert same_weights(load(tmp_path / "ckpt"), model)


def test_a_changed_or_missing_referenced_encoder_is_a_clear_error(own_encoder, tiny_text_encoder_dir, tmp_path,
                                                                   monkeypatch):
    model, text_dir = own_encoder
    save(model, tmp_path / "ckpt")
    expected = tensors_hash(model.text_encoder.state_dict())
    other = transformers.AutoModel.from_pretrained(text_dir)
    with torch.no_grad():
        other.embeddings.word_embeddings.weight[1].add_(1.0)
    other.save_pretrained(text_dir)
    with pytest.raises(ClapcurateError, match=rf"ckpt: the text encoder it refers to has changed: {re.escape(str(text_dir))} "
                                              rf"holds sha256 [0-9a-f]{{64}}, expected {expected} \("):
        load(tmp_path / "ckpt")

    shutil.rmtree(text_dir)
    with pytest.raises(ClapcurateError, match=rf"ckpt: the text encoder it refers to is missing: {re.escape(str(text_dir))} "
                                              rf"\(sha256 {expected}\); .* {checkpoints.SEARCH_PATH_ENV}$"):
        load(tmp_path / "ckpt")
    # a copy at another place is found through the search path
    shutil.copytree(tiny_text_encoder_dir, tmp_path / "elsewhere" / "any_name")
    monkeypatch.setenv(checkpoints.SEARCH_PATH_ENV, str(tmp_path / "elsewhere"))
    assert same_weights(load(tmp_path / "ckpt"), model)


def test_a_part_stored_in_a_parent_checkpoint_is_referred_to_and_moves_with_it(own_encoder, tmp_path):
    model, text_dir = own_encoder
    save(model, tmp_path / "study" / "teacher", self_contained=True)  # e.g. an imported teacher
    shutil.rmtree(text_dir)
    student = load(tmp_path / "study" / "teacher")
    with torch.no_grad():
        student.audio_projection.linear1.weight.add_(0.1)  # what training changes
    save(student, tmp_path / "study" / "student")
    for part in ("text_encoder", "audio_encoder"):
        assert parts(tmp_path / "study" / "student")[part]["source"]["kind"] == "checkpoint"
    assert stored_keys(tmp_path / "study" / "student", "") == {key for key in student.state_dict()
                                                               if not key.startswith(("text_encoder.", "audio_encoder."))}
    shutil.move(tmp_path / "study", tmp_path / "moved")
    checkpoints.forget_loaded_sources()
    assert same_weights(load(tmp_path / "moved" / "student"), student)


def test_loading_again_from_the_same_random_state_gives_the_same_model_and_random_state(tiny_clap, tmp_path):
    save(tiny_clap, tmp_path / "ckpt")
    text_encoders._INITIALISATIONS.clear()  # the first load below initialises in full
    loads = []
    for _ in range(2):
        torch.manual_seed(5)
        model = load(tmp_path / "ckpt")
        loads.append((torch.get_rng_state(), dict(model.named_buffers()), model.state_dict()))
    (first_rng, first_buffers, first_state), (rng, buffers, state) = loads
    torch.manual_seed(5)
    assert not torch.equal(first_rng, torch.get_rng_state())  # loading draws the random initialisation's numbers
    assert torch.equal(rng, first_rng)
    assert buffers.keys() == first_buffers.keys() and all(torch.equal(buffers[k], first_buffers[k]) for k in buffers)
    assert all(torch.equal(state[k], first_state[k]) for k in state)


def test_a_demo_size_student_checkpoint_takes_under_5_mb(tmp_path):
    from clapcurate.study import load_study_config

    config = load_study_config(Path(__file__).parent.parent / "configs" / "demo.yaml").model
    torch.manual_seed(0)
    save(CLAP(config), tmp_path / "teacher")  # the offline MiniLM, as the demo's teachers
    student = load(tmp_path / "teacher")
    with torch.no_grad():
        for name, parameter in student.named_parameters():
            if parameter.requires_grad and not name.startswith("text_encoder."):
                parameter.add_(0.01)  # a student trains everything but its frozen text encoder
    save(student, tmp_path / "student")
    assert folder_bytes(tmp_path / "student") <= 5e6 < text_encoder_bytes(student)
    assert same_weights(load(tmp_path / "student"), student)


# --- MS CLAP 2022 import ------------------------------------------------------------------------


def msclap_state_dict(model: CLAP) -> dict[str, torch.Tensor]:
    """`model`'s weights in MS CLAP 2022's key layout, with the keys MS CLAP has and we do not use."""
    prefixes = {
        "audio_encoder.": "audio_encoder.base.",
        "audio_projection.": "audio_encoder.projection.",
        "text_encoder.model.": "caption_encoder.base.",
        "text_projection.": "caption_encoder.projection.",
        "logit_scale": "logit_scale",
    }
    state = {}
    for key, tensor in model.state_dict().items():
        ours = next(p for p in prefixes if key.startswith(p))
        state[prefixes[ours] + key[len(ours):]] = tensor.clone()
    generator = torch.Generator().manual_seed(11)
    fc_width = state["audio_encoder.base.fc1.weight"].shape[0]
    hidden = model.text_encoder.out_dim
    state["audio_encoder.base.fc_audioset.weight"] = torch.randn(527, fc_width, generator=generator)
    state["audio_encoder.base.fc_audioset.bias"] = torch.randn(527, generator=generator)
    state["caption_encoder.base.pooler.dense.weight"] = torch.randn(hidden, hidden, generator=generator)
    state["caption_encoder.base.pooler.dense.bias"] = torch.randn(hidden, generator=generator)
    state["caption_encoder.base.embeddings.position_ids"] = torch.arange(128)[None]
    return state


# The keys of MS CLAP 2022's `CLAP_weights_2022.pth` outside the BERT, written out from msclap's
# model code (CLAP = audio_encoder(base = PANNs Cnn14, projection) + caption_encoder(base = BERT,
# projection) + logit_scale; Projection = linear1, linear2 (no biases), layer_norm) and PANNs'
# Cnn14 (`pytorch/models.py`): the fixture below must produce exactly these names.
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
PANNS_CNN14_KEYS = [
    "spectrogram_extractor.stft.conv_real.weight", "spectrogram_extractor.stft.conv_imag.weight",
    "logmel_extractor.melW", *(f"bn0.{p}" for p in _BN),
    *(f"conv_block{i}.{part}" for i in range(1, 7)
      for part in ("conv1.weight", "conv2.weight", *(f"bn1.{p}" for p in _BN), *(f"bn2.{p}" for p in _BN))),
    "fc1.weight", "fc1.bias", "fc_audioset.weight", "fc_audioset.bias",
]
_PROJECTION = ("linear1.weight", "linear2.weight", "layer_norm.weight", "layer_norm.bias")
MSCLAP_2022_NON_TEXT_KEYS = {
    "logit_scale",
    *(f"audio_encoder.base.{key}" for key in PANNS_CNN14_KEYS),
    *(f"audio_encoder.projection.{key}" for key in _PROJECTION),
    *(f"caption_encoder.projection.{key}" for key in _PROJECTION),
}


def test_msclap_fixture_has_the_published_key_names(tiny_clap, tiny_text_encoder_dir):
    state = msclap_state_dict(tiny_clap)
    text_keys = {key for key in state if key.startswith("caption_encoder.base.")}
    assert set(state) - text_keys == MSCLAP_2022_NON_TEXT_KEYS
    bert = transformers.BertModel(transformers.BertConfig.from_pretrained(tiny_text_encoder_dir))
    assert text_keys == {f"caption_encoder.base.{key}" for key in bert.state_dict()} | {
        "caption_encoder.base.embeddings.position_ids"}


def test_panns_key_names_match_the_real_cnn14_listing():
    listing = Path(__file__).resolve().parents[2] / "shared" / "real-metadata" / "panns" / "cnn14_keys.txt"
    if not listing.is_file():
        pytest.skip("real PANNs metadata not available")
    keys = [line.split("\t")[0] for line in listing.read_text().splitlines() if line and not line.startswith("#")]
    assert keys == PANNS_CNN14_KEYS


def reference_projection(x, state, prefix):
    """MS CLAP's Projection in eval mode: LayerNorm(h + linear2(gelu(h))), h = linear1(x)."""
    hidden = x @ state[prefix + "linear1.weight"].T
    summed = hidden + F.gelu(hidden) @ state[prefix + "linear2.weight"].T
    return F.layer_norm(summed, summed.shape[-1:], state[prefix + "layer_norm.weight"], state[prefix + "layer_norm.bias"])


def reference_batch_norm(x, state, prefix):
    return F.batch_norm(x, state[prefix + "running_mean"], state[prefix + "running_var"],
                        state[prefix + "weight"], state[prefix + "bias"], training=False, eps=1e-5)


def reference_cnn14_embedding(waveforms, state, hop_size):
    """PANNs Cnn14's `embedding` output in eval mode, computed from the MS CLAP weights alone."""
    base = "audio_encoder.base."
    conv_real = state[base + "spectrogram_extractor.stft.conv_real.weight"]  # [bins, 1, n_fft]
    conv_imag = state[base + "spectrogram_extractor.stft.conv_imag.weight"]
    n_fft = conv_real.shape[-1]
    padded = F.pad(waveforms[:, None, :], (n_fft // 2, n_fft // 2), mode="reflect")  # [B, 1, T + n_fft]
    power = F.conv1d(padded, conv_real, stride=hop_size) ** 2 + F.conv1d(padded, conv_imag, stride=hop_size) ** 2
    mel = power.transpose(1, 2)[:, None] @ state[base + "logmel_extractor.melW"]  # [B, 1, frames, mels]
    x = 10.0 * torch.log10(mel.clamp(min=1e-10))
    x = reference_batch_norm(x.transpose(1, 3), state, base + "bn0.").transpose(1, 3)
    for block in range(1, 7):
        prefix = f"{base}conv_block{block}."
        for conv, bn in (("conv1", "bn1"), ("conv2", "bn2")):
            x = F.conv2d(x, state[prefix + conv + ".weight"], padding=1)
            x = F.relu(reference_batch_norm(x, state, prefix + bn + "."))
        x = F.avg_pool2d(x, kernel_size=(2, 2) if block < 6 else (1, 1))
    x = x.mean(dim=3)  # [B, C, frames]
    x = x.max(dim=2).values + x.mean(dim=2)  # [B, C]
    return F.relu(x @ state[base + "fc1.weight"].T + state[base + "fc1.bias"])


def reference_text_cls(captions, state, text_encoder_dir):
    """BERT's CLS hidden state with MS CLAP's tokenization (padded to 100), via transformers directly."""
    bert = transformers.BertModel(transformers.BertConfig.from_pretrained(text_encoder_dir)).eval()
    bert_state = {key[len("caption_encoder.base."):]: value for key, value in state.items()
                  if key.startswith("caption_encoder.base.") and "position_ids" not in key}
    bert.load_state_dict(bert_state, strict=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(text_encoder_dir)
    tokens = tokenizer(captions, padding="max_length", max_length=100, truncation=True, return_tensors="pt")
    return bert(**tokens).last_hidden_state[:, 0]


@pytest.fixture
def msclap_checkpoint(tiny_clap, tmp_path):
    """A tiny random model written as MS CLAP 2022 writes its checkpoints: torch.save({"model": sd})."""
    randomize_affine_normalization(tiny_clap)
    state = msclap_state_dict(tiny_clap)
    path = tmp_path / "CLAP_weights_tiny.pth"
    torch.save({"model": state}, path)
    return path, state


TINY_MSCLAP_AUDIO = dict(sample_rate=16000, hop_size=160, fmin=50, fmax=8000, clip_seconds=1.0)


def test_import_msclap_matches_reference_forward(msclap_checkpoint, tiny_text_encoder_dir, tiny_waveforms):
    path, state = msclap_checkpoint
    model = import_msclap(path, text_encoder=str(tiny_text_encoder_dir), **TINY_MSCLAP_AUDIO)
    assert not model.training
    assert (model.config.d_proj, model.config.audio.base_channels) == (32, 4)
    assert (model.config.audio.mel_bins, model.config.audio.window_size) == (32, 512)
    assert (model.config.text.pooling, model.config.text.max_length) == ("cls", 100)
    with torch.no_grad():
        audio_expected = F.normalize(reference_projection(
            reference_cnn14_embedding(tiny_waveforms, state, hop_size=160), state, "audio_encoder.projection."), dim=-1)
        text_expected = F.normalize(reference_projection(
            reference_text_cls(CAPTIONS, state, tiny_text_encoder_dir), state, "caption_encoder.projection."), dim=-1)
        torch.testing.assert_close(model.encode_audio(tiny_waveforms), audio_expected, atol=5e-4, rtol=1e-3)
        torch.testing.assert_close(model.encode_text(CAPTIONS), text_expected, atol=1e-5, rtol=1e-5)
    # the tolerances are far below the differences between clips and between captions
    # (the audio tolerance allows for the front-end computing the DFT by FFT, the reference by convolution)
    assert (audio_expected[0] - audio_expected[1:]).abs().amax(dim=-1).min() > 0.05
    assert (text_expected[0] - text_expected[1:]).abs().amax(dim=-1).min() > 0.05
    assert model.logit_scale.item() == state["logit_scale"].item()


def test_import_msclap_accepts_bare_state_dict_and_saves_in_our_format(msclap_checkpoint, tiny_text_encoder_dir, tmp_path, tiny_waveforms):
    path, state = msclap_checkpoint
    bare_path = tmp_path / "bare.pth"
    torch.save(state, bare_path)
    model = import_msclap(bare_path, text_encoder=str(tiny_text_encoder_dir), **TINY_MSCLAP_AUDIO)
    save(model, tmp_path / "ours")
    with torch.no_grad():
        assert torch.equal(load(tmp_path / "ours").encode_audio(tiny_waveforms), model.encode_audio(tiny_waveforms))


def test_import_msclap_rejects_foreign_keys(msclap_checkpoint, tiny_text_encoder_dir, tmp_path):
    _, state = msclap_checkpoint
    path = tmp_path / "foreign.pth"
    torch.save({"model": {**state, "audio_encoder.head.weight": torch.zeros(2)}}, path)
    with pytest.raises(ClapcurateError, match="unexpected key 'audio_encoder.head.weight'"):
        import_msclap(path, text_encoder=str(tiny_text_encoder_dir), **TINY_MSCLAP_AUDIO)
    incomplete = {k: v for k, v in state.items() if not k.startswith("caption_encoder.base.encoder.layer.1.")}
    torch.save({"model": incomplete}, path)
    with pytest.raises(ClapcurateError, match="missing keys: text_encoder.model.encoder.layer.1"):
        import_msclap(path, text_encoder=str(tiny_text_encoder_dir), **TINY_MSCLAP_AUDIO)


def test_import_msclap_reports_wrong_text_encoder_and_settings(msclap_checkpoint, tmp_path):
    path, _ = msclap_checkpoint
    wide_dir = tmp_path / "wide_bert"
    wide = transformers.BertConfig(vocab_size=30522, hidden_size=48, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=64)
    wide.save_pretrained(wide_dir)
    transformers.AutoTokenizer.from_pretrained(default_text_encoder_path()).save_pretrained(wide_dir)
    with pytest.raises(ClapcurateError, match="hidden size 32"):
        import_msclap(path, text_encoder=str(wide_dir), **TINY_MSCLAP_AUDIO)
    with pytest.raises(ClapcurateError, match="mel_bins are read from the checkpoint"):
        import_msclap(path, text_encoder=str(wide_dir), mel_bins=64)
    with pytest.raises(ClapcurateError, match="nothing.pth: no such checkpoint file"):
        import_msclap(tmp_path / "nothing.pth")


def test_a_checkpoint_saved_after_tokenizing_has_the_same_files_and_hash(tiny_clap, tmp_path):
    """A tokenizer keeps the padding and truncation of its last call and would save them: a
    checkpoint's files (and so its hash, which embedding folders record) must not depend on what
    the model tokenized before it was saved."""
    before = save(tiny_clap, tmp_path / "before")
    tiny_clap.text_encoder.tokenize(["a dog barks", "rain"])
    after = save(tiny_clap, tmp_path / "after")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (before / "text_encoder" / name).read_bytes() == (after / "text_encoder" / name).read_bytes(), name
    assert checkpoint_hash(before) == checkpoint_hash(after)
    assert tiny_clap.text_encoder.tokenize(["a dog barks"])["input_ids"].shape[1] == tiny_clap.text_encoder.max_length

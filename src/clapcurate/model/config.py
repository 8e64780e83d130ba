"""The model's settings as config dataclasses (`AudioConfig`, `TextConfig`, `CLAPConfig`,
`HTSATConfig`): importable without torch, so that every stage's config is validated at once."""

from __future__ import annotations

import dataclasses
from typing import Literal

from ..errors import ClapcurateError

DEFAULT_TEXT_ENCODER = "minilm"

# the widths the published HTS-AT checkpoints use: name -> (embed_dim, depths, num_heads)
HTSAT_WIDTHS = {
    "tiny": (96, (2, 2, 6, 2), (4, 8, 16, 32)),
    "base": (128, (2, 2, 12, 2), (4, 8, 16, 32)),
    "large": (256, (2, 2, 12, 2), (4, 8, 16, 32)),
}

@dataclasses.dataclass
class HTSATConfig:
    """The transformer's shape (defaults: HTS-AT tiny, the published 256 x 256 input, 4 x 4 patches)."""

    embed_dim: int = 96
    depths: list[int] = dataclasses.field(default_factory=lambda: [2, 2, 6, 2])
    num_heads: list[int] = dataclasses.field(default_factory=lambda: [4, 8, 16, 32])
    window_size: int = 8
    spec_size: int = 256
    patch_size: int = 4
    patch_stride: int = 4
    mlp_ratio: float = 4.0
    drop_path: float = 0.1  # stochastic depth at the last block, as published; 0 at the first

    def __post_init__(self):
        sizes = [self.embed_dim, self.window_size, self.spec_size, self.patch_size, self.patch_stride,
                 *self.depths, *self.num_heads]
        if not self.depths or min(sizes) < 1:
            raise ValueError(f"HTS-AT sizes must be positive and depths non-empty, got {self}")
        if len(self.depths) != len(self.num_heads):
            raise ValueError(f"{len(self.depths)} stage depths but {len(self.num_heads)} head counts")
        if not 0.0 <= self.drop_path < 1.0 or self.mlp_ratio <= 0:
            raise ValueError(f"need 0 <= drop_path < 1 and mlp_ratio > 0, got {self.drop_path}, {self.mlp_ratio}")

    @classmethod
    def named(cls, name: str) -> "HTSATConfig":
        """The published width `name` ("tiny", "base", "large")."""
        if name not in HTSAT_WIDTHS:
            raise ClapcurateError(f"unknown HTS-AT width {name!r}; choose one of {', '.join(HTSAT_WIDTHS)}")
        embed_dim, depths, heads = HTSAT_WIDTHS[name]
        return cls(embed_dim=embed_dim, depths=list(depths), num_heads=list(heads))


@dataclasses.dataclass
class AudioConfig:
    """Audio encoder and its log-mel front-end (defaults: MS CLAP 2022, 44.1 kHz, 5 s clips).

    `htsat` shapes the transformer when `encoder` is "htsat". The waveform settings reproduce each
    family's preprocessing: `mel_sample_rate` is the rate the mel filterbank is designed for (0:
    `sample_rate`; MS CLAP 2023 uses 32000 on 44.1 kHz audio), `int16_round_trip` quantises the
    waveform to 16 bits and back (LAION-CLAP), `short_clip_fill` completes clips shorter than
    `clip_seconds`: "loop" repeats the clip and cuts it (MS CLAP), "repeat_then_silence" repeats
    it a whole number of times and pads with zeros (LAION-CLAP's "repeatpad").
    """

    encoder: Literal["cnn14", "cnn10", "cnn6", "htsat"] = "cnn14"
    sample_rate: int = 44100
    window_size: int = 1024
    hop_size: int = 320
    mel_bins: int = 64
    fmin: int = 50
    fmax: int = 14000
    base_channels: int = 64
    clip_seconds: float = 5.0
    block_dropout: float = 0.2  # PANNs' dropout after each conv block
    head_dropout: float = 0.5  # PANNs' dropout before fc1 and on the embedding
    htsat: HTSATConfig = dataclasses.field(default_factory=HTSATConfig)
    mel_sample_rate: int = 0
    int16_round_trip: bool = False
    short_clip_fill: Literal["loop", "repeat_then_silence"] = "loop"

    def __post_init__(self):
        for key in ("sample_rate", "window_size", "hop_size", "mel_bins", "base_channels"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        if self.mel_sample_rate < 0:
            raise ValueError(f"mel_sample_rate must be positive (or 0: sample_rate), got {self.mel_sample_rate}")
        mel_rate = self.mel_sample_rate or self.sample_rate  # the rate the filterbank is designed for
        if not 0 <= self.fmin < self.fmax <= mel_rate / 2:
            raise ValueError(f"need 0 <= fmin < fmax <= sample_rate / 2, got fmin {self.fmin}, fmax {self.fmax} "
                             f"at {mel_rate} Hz")
        if not self.clip_seconds > 0:
            raise ValueError(f"clip_seconds must be positive, got {self.clip_seconds}")
        for key in ("block_dropout", "head_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ValueError(f"{key} must lie in [0, 1), got {getattr(self, key)}")

    @property
    def clip_samples(self) -> int:
        """Samples in one model input clip (sample_rate * clip_seconds)."""
        return int(round(self.sample_rate * self.clip_seconds))

    def build_encoder(self):
        """The encoder (with its front-end) these settings describe, freshly initialised."""
        from .audio_encoders import build_audio_encoder
        from .htsat import HTSAT

        mel_sample_rate = self.mel_sample_rate or self.sample_rate
        if self.encoder == "htsat":
            return HTSAT(sample_rate=self.sample_rate, window_size=self.window_size, hop_size=self.hop_size,
                         mel_bins=self.mel_bins, fmin=self.fmin, fmax=self.fmax, mel_sample_rate=mel_sample_rate,
                         config=self.htsat)
        return build_audio_encoder(
            self.encoder, sample_rate=mel_sample_rate, window_size=self.window_size, hop_size=self.hop_size,
            mel_bins=self.mel_bins, fmin=self.fmin, fmax=self.fmax, base_channels=self.base_channels,
            block_dropout=self.block_dropout, head_dropout=self.head_dropout,
        )


@dataclasses.dataclass
class TextConfig:
    """Text encoder: a Hugging Face name or local folder ("minilm" = the offline MiniLM)."""

    name_or_path: str = DEFAULT_TEXT_ENCODER
    pooling: Literal["cls", "mean", "pooler", "last"] = "cls"
    max_length: int = 100
    caption_suffix: str = ""  # appended to every caption (MS CLAP 2023: " <|endoftext|>")
    pad_token: str = ""  # set as the tokenizer's padding token (MS CLAP 2023 pads GPT-2 with "!")


@dataclasses.dataclass
class CLAPConfig:
    """The whole model: both encoders, the shared embedding width and the temperature."""

    audio: AudioConfig = dataclasses.field(default_factory=AudioConfig)
    text: TextConfig = dataclasses.field(default_factory=TextConfig)
    d_proj: int = 1024
    projection_dropout: float = 0.5
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    projection: Literal["msclap", "mlp"] = "msclap"
    text_logit_scale: bool = False  # keep LAION-CLAP's text-side scale (a buffer)

    def __post_init__(self):
        if self.d_proj < 1:
            raise ValueError(f"d_proj must be positive, got {self.d_proj}")
        if not 0.0 <= self.projection_dropout < 1.0:
            raise ValueError(f"projection_dropout must lie in [0, 1), got {self.projection_dropout}")
        if not (self.init_temperature > 0 and self.max_logit_scale > 0):
            raise ValueError("init_temperature and max_logit_scale must be positive")

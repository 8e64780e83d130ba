"""The CLAP model: audio and text encoders, projections, a learnable temperature.

Three families share it: MS CLAP 2022 (PANNs CNN14 + BERT), MS CLAP 2023 (HTS-AT + GPT-2), both
with MS CLAP's projection head, and LAION-CLAP (HTS-AT or PANNs CNN + RoBERTa) with its MLP head.
Similarity logits are `logit_scale_exp() * a @ t.T` for L2-normalised embeddings `a`, `t`;
the logit scale is 1/tau, starting at tau = 0.07 (as the authors' code) and clamped at 100.
LAION-CLAP keeps a second, text-side scale; its contrastive loss (without the MLP loss) uses the
audio-side one in both directions, as ours does, so the text scale is kept as a buffer (saved,
restored, not trained).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ClapcurateError
from .audio_encoders import build_audio_encoder
from .frontend import int16_round_trip
from .htsat import HTSAT, HTSATConfig
from .text_encoders import DEFAULT_TEXT_ENCODER, TextEncoder
from .weights import WeightsSource


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


class Projection(nn.Module):
    """MS CLAP 2022 projection head: LayerNorm(h + dropout(linear2(gelu(h)))), h = linear1(x)."""

    def __init__(self, d_in: int, d_out: int, dropout: float = 0.5):
        super().__init__()
        self.linear1 = nn.Linear(d_in, d_out, bias=False)
        self.linear2 = nn.Linear(d_out, d_out, bias=False)
        self.drop = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.linear1(x)  # [B, d_out]
        return self.layer_norm(hidden + self.drop(self.linear2(F.gelu(hidden))))


class MLPProjection(nn.Sequential):
    """LAION-CLAP projection head: linear (with bias) -> ReLU -> linear (with bias)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__(nn.Linear(d_in, d_out), nn.ReLU(), nn.Linear(d_out, d_out))


def _projection(config: CLAPConfig, d_in: int) -> nn.Module:
    if config.projection == "mlp":
        return MLPProjection(d_in, config.d_proj)
    return Projection(d_in, config.d_proj, config.projection_dropout)


def _maybe_normalize(embeddings: torch.Tensor, normalize: bool) -> torch.Tensor:
    return F.normalize(embeddings, dim=-1) if normalize else embeddings


class CLAP(nn.Module):
    """Audio and text towers projected into one `d_proj`-wide space.

    `pretrained_text=False` builds the text encoder from its config alone (random weights),
    for callers that load every weight from a checkpoint right after.
    `weight_sources` maps a part ("text_encoder", "audio_encoder") to the `WeightsSource` its
    weights came from: a checkpoint saves an unchanged part as a reference to it.
    """

    def __init__(self, config: CLAPConfig, *, pretrained_text: bool = True):
        super().__init__()
        self.config = config
        self.audio_encoder = config.audio.build_encoder()
        max_frames = getattr(self.audio_encoder, "max_frames", None)  # HTS-AT's fixed input size
        clip_frames = config.audio.clip_samples // config.audio.hop_size + 1
        if max_frames is not None and clip_frames > max_frames:
            raise ClapcurateError(
                f"audio: {config.audio.clip_seconds:g} s clips at hop {config.audio.hop_size} give {clip_frames} frames, "
                f"more than the {max_frames} HTS-AT takes; shorten clip_seconds")
        self.text_encoder = TextEncoder(
            config.text.name_or_path,
            pooling=config.text.pooling,
            max_length=config.text.max_length,
            caption_suffix=config.text.caption_suffix,
            pad_token=config.text.pad_token,
            pretrained=pretrained_text,
        )
        self.weight_sources: dict[str, WeightsSource] = {}
        if pretrained_text:
            self.weight_sources["text_encoder"] = WeightsSource.of(
                self.text_encoder, "pretrained", self.text_encoder.resolved_path, name=config.text.name_or_path)
        self.audio_projection = _projection(config, self.audio_encoder.out_dim)
        self.text_projection = _projection(config, self.text_encoder.out_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.init_temperature)))
        if config.text_logit_scale:
            self.register_buffer("text_logit_scale", torch.tensor(math.log(1.0 / config.init_temperature)))

    @property
    def sample_rate(self) -> int:
        return self.config.audio.sample_rate

    @property
    def clip_samples(self) -> int:
        """Samples in one model input clip (sample_rate * clip_seconds)."""
        return self.config.audio.clip_samples

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def logit_scale_exp(self) -> torch.Tensor:
        """1/tau, clamped at `max_logit_scale` (100)."""
        return self.logit_scale.exp().clamp(max=self.config.max_logit_scale)

    def encode_logmel(self, logmel: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Audio embeddings [B, d_proj] of log-mel spectrograms [B, 1, frames, mel_bins]."""
        features = self.audio_encoder.forward_logmel(logmel)  # [B, audio out_dim]
        return _maybe_normalize(self.audio_projection(features), normalize)

    def audio_logmel(self, waveforms: torch.Tensor) -> torch.Tensor:
        """The audio encoder's input, log-mel spectrograms [B, 1, frames, mel_bins] (float32, on
        the model's device), of mono waveforms [B, T] at `sample_rate`."""
        waveforms = waveforms.to(self.device, torch.float32)
        if self.config.audio.int16_round_trip:
            waveforms = int16_round_trip(waveforms)
        return self.audio_encoder.logmel(waveforms)

    def encode_audio(self, waveforms: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Audio embeddings [B, d_proj] of mono waveforms [B, T] at `sample_rate`."""
        return self.encode_logmel(self.audio_logmel(waveforms), normalize)

    def encode_text_features(self, hidden: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Text embeddings [B, d_proj] of pooled text-encoder outputs [B, hidden] (e.g. cached ones)."""
        return _maybe_normalize(self.text_projection(hidden.to(self.device)), normalize)

    def encode_text(self, captions: Sequence[str], normalize: bool = True) -> torch.Tensor:
        """Text embeddings [B, d_proj] of B captions."""
        return self.encode_text_features(self.text_encoder.encode(captions), normalize)

    def forward(self, waveforms: torch.Tensor, captions: Sequence[str]):
        """(audio_emb [B, d_proj], text_emb [B, d_proj], logit_scale_exp), embeddings L2-normalised."""
        return self.encode_audio(waveforms), self.encode_text(captions), self.logit_scale_exp()

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

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ClapcurateError
from .config import AudioConfig, CLAPConfig, TextConfig  # noqa: F401  (the settings are imported from here too)
from .frontend import int16_round_trip
from .text_encoders import TextEncoder
from .weights import WeightsSource


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

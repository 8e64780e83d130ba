"""PANNs audio encoders Cnn14, Cnn10 and Cnn6 (Kong et al., "PANNs", `pytorch/models.py`).

Layers and parameter names follow PANNs exactly (`spectrogram_extractor.stft.conv_real.weight`,
`logmel_extractor.melW`, `bn0`, `conv_block{i}.{conv1,conv2,bn1,bn2}`, `fc1`), so a PANNs
checkpoint or the audio branch of MS CLAP loads unchanged. The AudioSet head `fc_audioset` is
not built: the encoder's output is PANNs' `embedding`, relu(fc1(pooled)). SpecAugment and mixup
are not part of the encoder; augmentation belongs to training.

`base_channels` scales every width (PANNs: 64, i.e. 64..2048 for Cnn14), so that tests and CPU
demos can build tiny encoders with the same structure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from clapcurate.errors import ClapcurateError
from clapcurate.files import write_atomically
from clapcurate.model.frontend import LogmelFilterBank, Spectrogram, log_mel_spectrogram
from clapcurate.model.weights import load_state_strict, read_torch_state_dict

BLOCK_DROPOUT = 0.2  # after every conv block, as PANNs
HEAD_DROPOUT = 0.5  # before fc1 and on the embedding, as PANNs
IGNORED_CHECKPOINT_PREFIX = "fc_audioset."
FRONTEND_PREFIXES = ("spectrogram_extractor.", "logmel_extractor.")


def init_layer(layer: nn.Module) -> None:
    """PANNs' initialisation of a conv or linear layer: Xavier uniform weights, zero bias."""
    nn.init.xavier_uniform_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def init_bn(bn: nn.BatchNorm2d) -> None:
    """PANNs' initialisation of a batch norm: identity scale, zero shift."""
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)


class ConvBlock(nn.Module):
    """Two 3x3 convolutions, each followed by batch norm and ReLU, then 2-D average pooling."""

    def __init__(self, in_channels: int, out_channels: int, pool_size: tuple[int, int]):
        super().__init__()
        self.pool_size = pool_size
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        for conv in (self.conv1, self.conv2):
            init_layer(conv)
        for bn in (self.bn1, self.bn2):
            init_bn(bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, kernel_size=self.pool_size)  # [B, C, F / pool, M / pool]


class ConvBlock5x5(nn.Module):
    """One 5x5 convolution with batch norm and ReLU, then 2-D average pooling (Cnn6)."""

    def __init__(self, in_channels: int, out_channels: int, pool_size: tuple[int, int]):
        super().__init__()
        self.pool_size = pool_size
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=5, padding=2, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        init_layer(self.conv1)
        init_bn(self.bn1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return F.avg_pool2d(x, kernel_size=self.pool_size)  # [B, C, F / pool, M / pool]


class PannsCnn(nn.Module):
    """Log-mel front-end, bn0 over mel bins, a stack of conv blocks, global pooling and fc1.

    Subclasses fix the architecture with three class attributes: `block_type`, `width_factors`
    (block widths in units of `base_channels`) and `pool_sizes` (one per block).
    """

    block_type: type[nn.Module]
    width_factors: tuple[int, ...]
    pool_sizes: tuple[tuple[int, int], ...]

    def __init__(
        self,
        *,
        sample_rate: int = 32000,
        window_size: int = 1024,
        hop_size: int = 320,
        mel_bins: int = 64,
        fmin: float = 50.0,
        fmax: float = 14000.0,
        base_channels: int = 64,
        block_dropout: float = BLOCK_DROPOUT,
        head_dropout: float = HEAD_DROPOUT,
    ):
        super().__init__()
        self.sample_rate = sample_rate
        self.block_dropout = block_dropout
        self.head_dropout = head_dropout
        self.spectrogram_extractor = Spectrogram(window_size, hop_size)
        self.logmel_extractor = LogmelFilterBank(sample_rate, window_size, mel_bins, fmin, fmax)
        self.bn0 = nn.BatchNorm2d(mel_bins)
        init_bn(self.bn0)
        widths = [base_channels * factor for factor in self.width_factors]
        for index, (in_channels, out_channels, pool_size) in enumerate(
            zip([1] + widths[:-1], widths, self.pool_sizes), start=1
        ):
            self.add_module(
                f"conv_block{index}", self.block_type(in_channels, out_channels, pool_size)
            )
        self.out_dim = widths[-1]
        self.fc1 = nn.Linear(self.out_dim, self.out_dim, bias=True)
        init_layer(self.fc1)

    def conv_blocks(self) -> list[nn.Module]:
        """The conv blocks in order: conv_block1, conv_block2, ..."""
        return [getattr(self, f"conv_block{i}") for i in range(1, len(self.pool_sizes) + 1)]

    def logmel(self, waveform: torch.Tensor) -> torch.Tensor:
        """waveform [B, T] at `sample_rate` -> log-mel [B, 1, frames, mel_bins] (float32)."""
        return log_mel_spectrogram(self.spectrogram_extractor, self.logmel_extractor, waveform)

    def forward_logmel(self, logmel: torch.Tensor) -> torch.Tensor:
        """log-mel [B, 1, frames, mel_bins] -> embedding [B, out_dim] (PANNs' `embedding`)."""
        x = self.bn0(logmel.transpose(1, 3)).transpose(1, 3)  # bn0 over mel bins
        for block in self.conv_blocks():
            x = F.dropout(block(x), p=self.block_dropout, training=self.training)
        # x: [B, C, frames', mel']
        x = x.mean(dim=3)  # [B, C, frames']
        x = x.amax(dim=2) + x.mean(dim=2)  # [B, C]
        x = F.dropout(x, p=self.head_dropout, training=self.training)
        x = F.relu(self.fc1(x))  # [B, out_dim]
        return F.dropout(x, p=self.head_dropout, training=self.training)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """waveform [B, T] -> embedding [B, out_dim]."""
        return self.forward_logmel(self.logmel(waveform))


class Cnn14(PannsCnn):
    """PANNs Cnn14: six ConvBlocks, widths 64..2048, the last without pooling; out_dim 2048."""

    block_type = ConvBlock
    width_factors = (1, 2, 4, 8, 16, 32)
    pool_sizes = ((2, 2), (2, 2), (2, 2), (2, 2), (2, 2), (1, 1))


class Cnn10(PannsCnn):
    """PANNs Cnn10: four ConvBlocks, widths 64..512; out_dim 512."""

    block_type = ConvBlock
    width_factors = (1, 2, 4, 8)
    pool_sizes = ((2, 2),) * 4


class Cnn6(PannsCnn):
    """PANNs Cnn6: four ConvBlock5x5, widths 64..512; out_dim 512."""

    block_type = ConvBlock5x5
    width_factors = (1, 2, 4, 8)
    pool_sizes = ((2, 2),) * 4


AUDIO_ENCODERS: dict[str, type[PannsCnn]] = {"cnn14": Cnn14, "cnn10": Cnn10, "cnn6": Cnn6}


def build_audio_encoder(name: str, **kwargs) -> PannsCnn:
    """The encoder called `name` ("cnn14", "cnn10", "cnn6", any case) built with the
    constructor keywords `sample_rate, window_size, hop_size, mel_bins, fmin, fmax,
    base_channels`."""
    encoder_class = AUDIO_ENCODERS.get(name.lower())
    if encoder_class is None:
        raise ClapcurateError(
            f"unknown audio encoder {name!r}; choose one of {', '.join(AUDIO_ENCODERS)}"
        )
    return encoder_class(**kwargs)


def load_panns_checkpoint(encoder: PannsCnn, path_or_state_dict, keep_frontend: bool = False) -> PannsCnn:
    """Load PANNs weights into `encoder` and return it.

    `path_or_state_dict` is a checkpoint file (`torch.load(f)['model']` or a bare state dict)
    or a state dict. `fc_audioset.*` is ignored; every other key must exist in the encoder
    with the same shape and every encoder key must be present, otherwise `ClapcurateError`
    lists the missing, unexpected and mismatched keys. `keep_frontend` keeps the encoder's own
    STFT and mel weights (e.g. a 32 kHz PANNs CNN starting a 44.1 kHz encoder, as MS CLAP did).
    """
    if isinstance(path_or_state_dict, Mapping):
        source = "state dict"
        state_dict = path_or_state_dict
    else:
        source = str(path_or_state_dict)
        state_dict = read_torch_state_dict(Path(path_or_state_dict))
    weights = {
        key: value
        for key, value in state_dict.items()
        if not key.startswith(IGNORED_CHECKPOINT_PREFIX)
    }
    if keep_frontend:
        expected = encoder.state_dict()
        weights = {key: value for key, value in weights.items() if not key.startswith(FRONTEND_PREFIXES)}
        weights.update({key: value for key, value in expected.items() if key.startswith(FRONTEND_PREFIXES)})
    load_state_strict(encoder, weights, f"{source}: does not fit {type(encoder).__name__}")
    return encoder


class AudioTagger(nn.Module):
    """A PANNs encoder with PANNs' AudioSet head: `fc_audioset` maps the embedding to one logit
    per class. Its state dict is a PANNs checkpoint's `model` (encoder keys + `fc_audioset.*`),
    so `load_panns_checkpoint` starts a CLAP audio encoder from it."""

    def __init__(self, encoder: PannsCnn, n_classes: int):
        super().__init__()
        self.encoder = encoder
        self.fc_audioset = nn.Linear(encoder.out_dim, n_classes, bias=True)
        init_layer(self.fc_audioset)

    def forward_logmel(self, logmel: torch.Tensor) -> torch.Tensor:
        """log-mel [B, 1, frames, mel_bins] -> class logits [B, n_classes] (sigmoid gives PANNs'
        `clipwise_output`)."""
        return self.fc_audioset(self.encoder.forward_logmel(logmel))

    def panns_state_dict(self) -> dict[str, torch.Tensor]:
        """Parameters under PANNs' key names (`conv_block1...`, `fc1...`, `fc_audioset...`)."""
        state = {key: value.detach().cpu() for key, value in self.encoder.state_dict().items()}
        state.update({f"fc_audioset.{key}": value.detach().cpu() for key, value in self.fc_audioset.state_dict().items()})
        return state


def save_panns_checkpoint(tagger: AudioTagger, path: str | Path, labels: list[str]) -> Path:
    """Write `{"model": state dict, "labels": class names}` as PANNs does (`torch.save`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": tagger.panns_state_dict(), "labels": list(labels)}
    return write_atomically(path, lambda handle: torch.save(state, handle), "wb")

"""HTS-AT, the hierarchical token-semantic audio transformer (Chen et al., ICASSP 2022): a Swin
transformer over a log-mel spectrogram folded into a square image. LAION-CLAP and MS CLAP 2023
use it as their audio tower.

Parameter names follow the published HTS-AT code (`spectrogram_extractor`, `logmel_extractor`,
`bn0`, `patch_embed.{proj,norm}`, `layers.{i}.blocks.{j}.{norm1,attn.{qkv,proj,
relative_position_bias_table},norm2,mlp.{fc1,fc2}}`, `layers.{i}.downsample.{norm,reduction}`,
`norm`), so the audio branch of either checkpoint loads unchanged. Not built: the AudioSet head
(`tscam_conv`, `head`, the counterpart of PANNs' `fc_audioset`) and the constant index and mask
buffers, which are recomputed here. The encoder's output is HTS-AT's `embedding` (LAION) or
`latent_output` (MS CLAP), the same thing: the mean over all tokens of the last stage after `norm`.

Input folding ("reshape_wav2img"): log-mel [B, 1, T, M] (bn0 over the M mel bins) is stretched
in time by bicubic interpolation to `spec_size * freq_ratio` frames (freq_ratio = spec_size // M;
1024 for the published 256 x 64), then cut into `freq_ratio` time chunks stacked along the
frequency axis: a [B, 1, spec_size, spec_size] image. Longer inputs are refused; callers cut
long clips into windows first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clapcurate.errors import ClapcurateError
from clapcurate.model.config import HTSATConfig
from clapcurate.model.frontend import LogmelFilterBank, Spectrogram, log_mel_spectrogram

# HTS-AT's shifted-window mask value between tokens of different regions (not -inf, as published)
SHIFTED_WINDOW_MASK = -100.0
TRUNC_NORMAL_STD = 0.02


def _windows(x: torch.Tensor, size: int) -> torch.Tensor:
    """[B, H, W, C] -> [B * H/size * W/size, size * size, C] (non-overlapping windows, row-major)."""
    batch, height, width, channels = x.shape
    x = x.view(batch, height // size, size, width // size, size, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, size * size, channels)


def _unwindow(windows: torch.Tensor, size: int, height: int, width: int) -> torch.Tensor:
    """Inverse of `_windows`: [B * nW, size * size, C] -> [B, H, W, C]."""
    channels = windows.shape[-1]
    x = windows.view(-1, height // size, width // size, size, size, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, channels)


def _relative_position_index(size: int) -> torch.Tensor:
    """[size^2, size^2] index into the (2 size - 1)^2 relative-offset bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")).flatten(1)  # [2, N]
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (size - 1)  # [N, N, 2], >= 0
    return relative[..., 0] * (2 * size - 1) + relative[..., 1]


def _shifted_window_mask(height: int, width: int, size: int, shift: int) -> torch.Tensor:
    """[nW, size^2, size^2] additive mask: 0 within a region of the rolled image, -100 across."""
    regions = torch.zeros(1, height, width, 1)
    bands = (slice(0, -size), slice(-size, -shift), slice(-shift, None))
    for index, (rows, cols) in enumerate((r, c) for r in bands for c in bands):
        regions[:, rows, cols, :] = index
    labels = _windows(regions, size).squeeze(-1)  # [nW, size^2]
    differs = labels[:, None, :] != labels[:, :, None]
    return torch.zeros(differs.shape).masked_fill(differs, SHIFTED_WINDOW_MASK)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside square windows with a learnt relative-position bias."""

    def __init__(self, dim: int, window_size: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=TRUNC_NORMAL_STD)
        self.register_buffer("relative_position_index", _relative_position_index(window_size), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x [B*nW, N, C] (N tokens per window), mask [nW, N, N] or None -> [B*nW, N, C]."""
        batch_windows, tokens, channels = x.shape
        n_windows = mask.shape[0] if mask is not None else 1
        qkv = self.qkv(x).reshape(batch_windows // n_windows, n_windows, tokens, 3, self.num_heads, -1)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5)  # each [B, nW, heads, N, head_dim]
        bias = self.relative_position_bias_table[self.relative_position_index]  # [N, N, heads]
        bias = bias.permute(2, 0, 1)  # [heads, N, N]
        if mask is not None:
            bias = bias[None] + mask[:, None]  # [nW, heads, N, N], broadcast over the batch
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale)
        out = out.permute(0, 1, 3, 2, 4)  # [B, nW, N, heads, head_dim]
        return self.proj(out.reshape(batch_windows, tokens, channels))


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def _drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero the residual branch of whole examples with probability `rate`."""
    if rate == 0.0 or not training:
        return x
    keep = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device) >= rate
    return x * keep / (1.0 - rate)


class SwinBlock(nn.Module):
    """Pre-norm window attention (shifted by half a window in odd blocks) and MLP, both residual."""

    def __init__(self, dim: int, resolution: tuple[int, int], num_heads: int, window_size: int, shift: bool,
                 mlp_ratio: float, drop_path: float):
        super().__init__()
        self.resolution = resolution
        self.window_size = window_size
        self.shift = window_size // 2 if shift else 0
        if min(resolution) <= window_size:  # one window covers the whole map: no shift
            self.window_size, self.shift = min(resolution), 0
        self.drop_path = drop_path
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, self.window_size, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        mask = _shifted_window_mask(*resolution, self.window_size, self.shift) if self.shift else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, H*W, C] -> [B, H*W, C]."""
        height, width = self.resolution
        batch, tokens, channels = x.shape
        image = self.norm1(x).view(batch, height, width, channels)
        if self.shift:
            image = torch.roll(image, shifts=(-self.shift, -self.shift), dims=(1, 2))
        attended = self.attn(_windows(image, self.window_size), self.attn_mask)  # [B*nW, ws^2, C]
        image = _unwindow(attended, self.window_size, height, width)  # [B, H, W, C]
        if self.shift:
            image = torch.roll(image, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + _drop_path(image.reshape(batch, tokens, channels), self.drop_path, self.training)
        return x + _drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class PatchMerging(nn.Module):
    """2 x 2 neighbouring tokens concatenated, normalised and mapped to twice the width."""

    def __init__(self, resolution: tuple[int, int], dim: int):
        super().__init__()
        self.resolution = resolution
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, H*W, C] -> [B, H/2 * W/2, 2C]."""
        height, width = self.resolution
        batch, _, channels = x.shape
        x = x.view(batch, height, width, channels)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(batch, -1, 4 * channels)))


class Stage(nn.Module):
    """`depth` Swin blocks at one resolution, then patch merging (all stages but the last)."""

    def __init__(self, dim: int, resolution: tuple[int, int], depth: int, num_heads: int, window_size: int,
                 mlp_ratio: float, drop_paths: list[float], downsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, resolution, num_heads, window_size, shift=index % 2 == 1, mlp_ratio=mlp_ratio,
                      drop_path=drop_paths[index])
            for index in range(depth)
        )
        self.downsample = PatchMerging(resolution, dim) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class PatchEmbed(nn.Module):
    """Strided convolution into patches, flattened to tokens, LayerNorm: [B, 1, S, S] -> [B, N, C]."""

    def __init__(self, patch_size: int, patch_stride: int, embed_dim: int):
        super().__init__()
        padding = (patch_size - patch_stride) // 2
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=patch_size, stride=patch_stride, padding=padding)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


def _init_weights(module: nn.Module) -> None:
    """HTS-AT's initialisation: truncated-normal linear weights (std 0.02), zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=TRUNC_NORMAL_STD)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class HTSAT(nn.Module):
    """Log-mel front-end, bn0 over mel bins, input folding, patch embedding, Swin stages, pooling.

    Same contract as the PANNs encoders: `logmel(waveform)`, `forward_logmel(logmel)`,
    `forward(waveform)`, `out_dim` (= embed_dim * 2^(stages - 1), 768 for tiny).
    `mel_sample_rate` is the rate the mel filterbank is designed for (MS CLAP 2023 feeds 44.1 kHz
    audio through a filterbank built for 32 kHz); by default `sample_rate`.
    """

    def __init__(self, *, sample_rate: int = 48000, window_size: int = 1024, hop_size: int = 480,
                 mel_bins: int = 64, fmin: float = 50.0, fmax: float = 14000.0, mel_sample_rate: int | None = None,
                 config: HTSATConfig | None = None):
        super().__init__()
        config = config or HTSATConfig()
        if len(config.depths) != len(config.num_heads):
            raise ClapcurateError(f"HTS-AT: {len(config.depths)} stage depths but {len(config.num_heads)} head counts")
        self.freq_ratio = config.spec_size // mel_bins
        if self.freq_ratio < 1 or config.spec_size % mel_bins:
            raise ClapcurateError(f"HTS-AT: spec_size {config.spec_size} must be a multiple of mel_bins {mel_bins}")
        n_stages = len(config.depths)
        grid = config.spec_size // config.patch_stride
        final_grid = grid // 2 ** (n_stages - 1)
        if final_grid < self.freq_ratio or final_grid % self.freq_ratio:
            raise ClapcurateError(
                f"HTS-AT: the last stage's {final_grid} x {final_grid} token grid does not split into "
                f"freq_ratio {self.freq_ratio} frequency groups; use a larger spec_size or fewer stages")
        self.spec_size = config.spec_size
        self.mel_bins = mel_bins
        self.spectrogram_extractor = Spectrogram(window_size, hop_size)
        self.logmel_extractor = LogmelFilterBank(mel_sample_rate or sample_rate, window_size, mel_bins, fmin, fmax)
        self.bn0 = nn.BatchNorm2d(mel_bins)
        self.patch_embed = PatchEmbed(config.patch_size, config.patch_stride, config.embed_dim)
        drop_paths = torch.linspace(0, config.drop_path, sum(config.depths)).tolist()
        self.layers = nn.ModuleList()
        for index, (depth, heads) in enumerate(zip(config.depths, config.num_heads)):
            first = sum(config.depths[:index])
            self.layers.append(Stage(
                config.embed_dim * 2**index, (grid // 2**index,) * 2, depth, heads, config.window_size,
                config.mlp_ratio, drop_paths[first:first + depth], downsample=index < n_stages - 1,
            ))
        self.out_dim = config.embed_dim * 2 ** (n_stages - 1)
        self.norm = nn.LayerNorm(self.out_dim)
        self.apply(_init_weights)

    @property
    def max_frames(self) -> int:
        """The longest log-mel input: spec_size * freq_ratio frames (1024 for the published models)."""
        return self.spec_size * self.freq_ratio

    def logmel(self, waveform: torch.Tensor) -> torch.Tensor:
        """waveform [B, T] -> log-mel [B, 1, frames, mel_bins] (float32)."""
        return log_mel_spectrogram(self.spectrogram_extractor, self.logmel_extractor, waveform)

    def fold(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 1, T, M] -> [B, 1, spec_size, spec_size]: stretched to `max_frames`, time chunks stacked."""
        frames, mels = x.shape[2], x.shape[3]
        if frames > self.max_frames or mels != self.mel_bins:
            raise ClapcurateError(
                f"HTS-AT takes at most {self.max_frames} frames of {self.mel_bins} mel bins, got {frames} x {mels}")
        if frames < self.max_frames:
            x = F.interpolate(x, (self.max_frames, mels), mode="bicubic", align_corners=True)
        batch = x.shape[0]
        x = x.transpose(2, 3).reshape(batch, 1, mels, self.freq_ratio, self.spec_size)  # [B, 1, M, ratio, S]
        return x.transpose(2, 3).reshape(batch, 1, self.spec_size, self.spec_size)

    def forward_logmel(self, logmel: torch.Tensor) -> torch.Tensor:
        """log-mel [B, 1, frames, mel_bins] -> embedding [B, out_dim]."""
        x = self.bn0(logmel.transpose(1, 3)).transpose(1, 3)  # bn0 over mel bins
        x = self.patch_embed(self.fold(x))  # [B, N, embed_dim]
        for stage in self.layers:
            x = stage(x)
        return self.norm(x).mean(dim=1)  # [B, out_dim]: the mean over tokens (HTS-AT's `embedding`)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """waveform [B, T] -> embedding [B, out_dim]."""
        return self.forward_logmel(self.logmel(waveform))

"""The CLAP losses: the contrastive loss (Eq. 1) and the soft-label loss (Eq. 2-5).

Both take L2-normalised audio and text embeddings `a`, `t` of one batch (row i of
each belongs to pair i) and `logit_scale` = 1/tau, the multiplier of the cosine
similarities (the model's exponentiated, clamped scale). The similarity matrix is
C = logit_scale * a t^T; row i of softmax(C) is the audio->text distribution of
clip i, row i of softmax(C^T) the text->audio distribution of caption i.

Losses are computed in float32 whatever the input dtype (bf16 embeddings work,
gradients flow back in their dtype) and outside any autocast region.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from .method import BETA, TARGET_NORM, TARGET_NORMS

TargetNorm = Literal["none", "after_mix", "before_mix", "softmax"]


def _similarity_logits(audio_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale) -> torch.Tensor:
    """C = logit_scale * a t^T in float32: [N, d] x [N, d] -> [N, N]."""
    scale = logit_scale.float() if torch.is_tensor(logit_scale) else float(logit_scale)
    return scale * (audio_emb.float() @ text_emb.float().T)


def _kl_batchmean(target: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """Mean over rows of KL(target_i || p_i) = sum_j t_ij (log t_ij - log p_ij), 0 log 0 = 0.

    Targets need not sum to 1 (`target_norm="none"`): the sum is taken as written.
    """
    cross = torch.where(target > 0, target * log_probs, torch.zeros_like(log_probs))
    return (torch.xlogy(target, target) - cross).sum(dim=-1).mean()


def _nll_of_matches(log_probs: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -log p_ii, reduced as `_kl_batchmean` reduces (a contiguous row vector),
    so that identity targets give bit-identical results."""
    return (-log_probs.diagonal()).contiguous().mean()


def _check_pair(audio_emb: torch.Tensor, text_emb: torch.Tensor) -> None:
    if audio_emb.ndim != 2 or audio_emb.shape != text_emb.shape:
        raise ValueError(
            f"audio and text embeddings must both be [N, d], got {tuple(audio_emb.shape)} and {tuple(text_emb.shape)}"
        )


def contrastive_loss(audio_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale) -> torch.Tensor:
    """Eq. 1: symmetric cross-entropy of the matching pairs under softmax(C/tau).

    -1/2 * mean_i [log softmax_t(C)_ii + log softmax_a(C)_ii], C/tau = logit_scale * a t^T.
    Returns a float32 scalar.
    """
    _check_pair(audio_emb, text_emb)
    with torch.autocast(device_type=audio_emb.device.type, enabled=False):
        logits = _similarity_logits(audio_emb, text_emb, logit_scale)  # [N, N]
        audio_to_text = _nll_of_matches(F.log_softmax(logits, dim=1))
        text_to_audio = _nll_of_matches(F.log_softmax(logits.T, dim=1))
        return (audio_to_text + text_to_audio) / 2


def soft_targets(teacher_emb: torch.Tensor, beta: float, target_norm: TargetNorm = TARGET_NORM,
                 target_scale: float | None = None) -> torch.Tensor:
    """Eq. 3: soft labels (1 - beta) * I + beta * C~ from the teacher's intra-modal cosines.

    C~ = cos(teacher_emb_i, teacher_emb_j), [N, N], float32, no gradient. `target_norm`:
    - "none": negative cosines clamped at 0, rows used as they are (the authors' code; rows sum
      to 1 + beta * off-diagonal mass);
    - "after_mix": negatives clamped, each mixed row divided by its sum;
    - "before_mix": negatives clamped, each row of C~ divided by its sum before mixing (the
      diagonal keeps >= 1 - beta);
    - "softmax": each row of C~ passed through a softmax at `target_scale` (1 / temperature; the
      teacher's logit scale by default in training), as SoftCLIP does: rows sum to 1, and they
      sharpen towards the identity as the temperature falls.
    With beta = 0 every mode gives the identity exactly.
    """
    if target_norm not in TARGET_NORMS:
        raise ValueError(f"target_norm must be one of {TARGET_NORMS}, got {target_norm!r}")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    if target_norm == "softmax" and not (target_scale and target_scale > 0):
        raise ValueError(f"softmax targets need a positive target_scale (1 / temperature), got {target_scale}")
    with torch.no_grad(), torch.autocast(device_type=teacher_emb.device.type, enabled=False):
        unit = F.normalize(teacher_emb.float(), dim=-1)
        cosines = unit @ unit.T  # [N, N]
        if target_norm == "softmax":
            cosines = torch.softmax(float(target_scale) * cosines, dim=1)
        else:
            cosines = cosines.clamp_min(0.0)
        if target_norm == "before_mix":
            cosines = cosines / cosines.sum(dim=1, keepdim=True).clamp_min(torch.finfo(cosines.dtype).tiny)
        identity = torch.eye(cosines.shape[0], device=cosines.device, dtype=cosines.dtype)
        targets = (1.0 - beta) * identity + beta * cosines
        if target_norm == "after_mix":
            targets = targets / targets.sum(dim=1, keepdim=True)
        return targets


def soft_label_loss(
    audio_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale,
    teacher_audio_emb: torch.Tensor,
    teacher_text_emb: torch.Tensor,
    beta: float = BETA,
    target_norm: TargetNorm = TARGET_NORM,
    target_scale: float | None = None,
) -> torch.Tensor:
    """Eq. 2-5: KL divergence between soft targets and the rows of softmax(C/tau).

    Audio->text rows use targets from the teacher's audio-audio cosines, text->audio rows
    targets from the teacher's text-text cosines (`soft_targets`); KL with batch-mean
    reduction in each direction, the loss is the mean of both. Returns a float32 scalar.
    """
    _check_pair(audio_emb, text_emb)
    _check_pair(teacher_audio_emb, teacher_text_emb)
    if teacher_audio_emb.shape[0] != audio_emb.shape[0]:
        raise ValueError(
            f"teacher batch has {teacher_audio_emb.shape[0]} rows, student batch {audio_emb.shape[0]}"
        )
    audio_targets = soft_targets(teacher_audio_emb, beta, target_norm, target_scale).to(audio_emb.device)
    text_targets = soft_targets(teacher_text_emb, beta, target_norm, target_scale).to(audio_emb.device)
    with torch.autocast(device_type=audio_emb.device.type, enabled=False):
        logits = _similarity_logits(audio_emb, text_emb, logit_scale)  # [N, N]
        audio_to_text = _kl_batchmean(audio_targets, F.log_softmax(logits, dim=1))
        text_to_audio = _kl_batchmean(text_targets, F.log_softmax(logits.T, dim=1))
        return (audio_to_text + text_to_audio) / 2

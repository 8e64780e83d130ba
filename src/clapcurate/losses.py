"""The CLAP losses: the contrastive loss (Eq. 1) and the soft-label loss (Eq. 2-5).

Both take L2-normalised audio and text embeddings `a`, `t` of one batch (row i of
each belongs to pair i) and `logit_scale` = 1/tau, the multiplier of the cosine
similarities (the model's exponentiated, clamped scale). The similarity matrix is
C = logit_scale * a t^T; row i of softmax(C) is the audio->text distribution of
clip i, row i of softmax(C^T) the text->audio distribution of caption i.

Losses are computed in float32 whatever the input dtype (bf16 embeddings work,
gradients flow back in their dtype) and outside any autocast region.

`rows` (a slice of the batch, e.g. one process's own pairs): only those rows of C (audio->text)
and of C^T (text->audio) are computed, each against the whole batch, so memory is n x N instead
of N x N; the result is the sum of their terms divided by N, so the parts of disjoint `rows`
covering the batch add up to the full loss (and their gradients to its gradient).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from .method import BETA, TARGET_NORM, TARGET_NORMS

TargetNorm = Literal["none", "after_mix", "before_mix", "softmax"]


def _similarity_logits(audio_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale) -> torch.Tensor:
    """C = logit_scale * a t^T in float32: [n, d] x [N, d] -> [n, N]."""
    scale = logit_scale.float() if torch.is_tensor(logit_scale) else float(logit_scale)
    return scale * (audio_emb.float() @ text_emb.float().T)


def _direction_logits(audio_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale,
                      rows: slice | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(audio->text logits, text->audio logits) of `rows` (all: None) against the whole batch,
    [n, N] each."""
    if rows is None:
        logits = _similarity_logits(audio_emb, text_emb, logit_scale)  # [N, N]
        return logits, logits.T
    return (_similarity_logits(audio_emb[rows], text_emb, logit_scale),
            _similarity_logits(text_emb[rows], audio_emb, logit_scale))


def _row_range(rows: slice | None, total: int) -> range:
    return range(total)[rows] if rows is not None else range(total)


def _reduce_rows(terms: torch.Tensor, total: int) -> torch.Tensor:
    """The loss of per-row `terms` [n] of a batch of `total` rows: their mean when they are all
    the rows (a contiguous row vector, so that identity targets give bit-identical results),
    else their sum divided by `total` (this part's share of the mean)."""
    return terms.contiguous().mean() if len(terms) == total else terms.sum() / total


def _kl_rows(target: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """KL(target_i || p_i) = sum_j t_ij (log t_ij - log p_ij) of each row, 0 log 0 = 0: [n].

    Targets need not sum to 1 (`target_norm="none"`): the sum is taken as written.
    """
    cross = torch.where(target > 0, target * log_probs, torch.zeros_like(log_probs))
    return (torch.xlogy(target, target) - cross).sum(dim=-1)


def _nll_of_matches(log_probs: torch.Tensor, first: int) -> torch.Tensor:
    """-log p of each row's match, row i matching column `first` + i: [n]."""
    return -log_probs.diagonal(offset=first)


def _check_pair(audio_emb: torch.Tensor, text_emb: torch.Tensor) -> None:
    if audio_emb.ndim != 2 or audio_emb.shape != text_emb.shape:
        raise ValueError(
            f"audio and text embeddings must both be [N, d], got {tuple(audio_emb.shape)} and {tuple(text_emb.shape)}"
        )


def contrastive_loss(audio_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale,
                     rows: slice | None = None) -> torch.Tensor:
    """Eq. 1: symmetric cross-entropy of the matching pairs under softmax(C/tau).

    -1/2 * mean_i [log softmax_t(C)_ii + log softmax_a(C)_ii], C/tau = logit_scale * a t^T.
    `rows`: only those pairs' terms (module docstring). Returns a float32 scalar.
    """
    _check_pair(audio_emb, text_emb)
    total, first = audio_emb.shape[0], _row_range(rows, audio_emb.shape[0]).start
    with torch.autocast(device_type=audio_emb.device.type, enabled=False):
        audio_logits, text_logits = _direction_logits(audio_emb, text_emb, logit_scale, rows)  # [n, N]
        audio_to_text = _reduce_rows(_nll_of_matches(F.log_softmax(audio_logits, dim=1), first), total)
        text_to_audio = _reduce_rows(_nll_of_matches(F.log_softmax(text_logits, dim=1), first), total)
        return (audio_to_text + text_to_audio) / 2


def soft_targets(teacher_emb: torch.Tensor, beta: float, target_norm: TargetNorm = TARGET_NORM,
                 target_scale: float | None = None, rows: slice | None = None) -> torch.Tensor:
    """Eq. 3: soft labels (1 - beta) * I + beta * C~ from the teacher's intra-modal cosines.

    C~ = cos(teacher_emb_i, teacher_emb_j), [N, N], float32, no gradient (`rows`: only those
    rows of it, [n, N]; every normalisation is per row). `target_norm`:
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
        cosines = (unit if rows is None else unit[rows]) @ unit.T  # [n, N]
        if target_norm == "softmax":
            cosines = torch.softmax(float(target_scale) * cosines, dim=1)
        else:
            cosines = cosines.clamp_min(0.0)
        if target_norm == "before_mix":
            cosines = cosines / cosines.sum(dim=1, keepdim=True).clamp_min(torch.finfo(cosines.dtype).tiny)
        identity = torch.zeros_like(cosines)  # [n, N]: row i's match is column first + i
        first = _row_range(rows, unit.shape[0]).start
        positions = torch.arange(len(identity), device=identity.device)
        identity[positions, first + positions] = 1.0
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
    rows: slice | None = None,
) -> torch.Tensor:
    """Eq. 2-5: KL divergence between soft targets and the rows of softmax(C/tau).

    Audio->text rows use targets from the teacher's audio-audio cosines, text->audio rows
    targets from the teacher's text-text cosines (`soft_targets`); KL with batch-mean
    reduction in each direction, the loss is the mean of both. `rows`: only those pairs' terms
    (module docstring). Returns a float32 scalar.
    """
    _check_pair(audio_emb, text_emb)
    _check_pair(teacher_audio_emb, teacher_text_emb)
    if teacher_audio_emb.shape[0] != audio_emb.shape[0]:
        raise ValueError(
            f"teacher batch has {teacher_audio_emb.shape[0]} rows, student batch {audio_emb.shape[0]}"
        )
    audio_targets = soft_targets(teacher_audio_emb, beta, target_norm, target_scale, rows).to(audio_emb.device)
    text_targets = soft_targets(teacher_text_emb, beta, target_norm, target_scale, rows).to(audio_emb.device)
    total = audio_emb.shape[0]
    with torch.autocast(device_type=audio_emb.device.type, enabled=False):
        audio_logits, text_logits = _direction_logits(audio_emb, text_emb, logit_scale, rows)  # [n, N]
        audio_to_text = _reduce_rows(_kl_rows(audio_targets, F.log_softmax(audio_logits, dim=1)), total)
        text_to_audio = _reduce_rows(_kl_rows(text_targets, F.log_softmax(text_logits, dim=1)), total)
        return (audio_to_text + text_to_audio) / 2

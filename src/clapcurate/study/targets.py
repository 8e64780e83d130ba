"""How peaked the soft targets are on real training batches (embedded world): for each kind of
target normalisation, the mean target mass a row puts on itself, on the other items of the batch
that share a sound event with it (by the world's ground truth) and on the rest. Soft targets can
only say "these clips are alike" when the middle share stands out from the last."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..losses import soft_targets
from ..method import TARGET_NORMS


def target_mass(teacher_emb: np.ndarray, events: list[frozenset], beta: float, target_scale: float,
                batch_size: int = 128, batches: int = 20, seed: int = 0) -> pd.DataFrame:
    """Mean mass per row of each normalisation's targets on [itself, alike items, other items],
    and the mean share of items alike, over `batches` random batches of `batch_size` rows of
    `teacher_emb` [N, d] (rows aligned with `events`, the sound events of each row's clip)."""
    rng = np.random.default_rng(seed)
    sums = {norm: np.zeros(3) for norm in TARGET_NORMS}
    alike_share = 0.0
    for _ in range(batches):
        rows = rng.choice(len(teacher_emb), size=min(batch_size, len(teacher_emb)), replace=False)
        alike = np.array([[bool(events[i] & events[j]) for j in rows] for i in rows])  # [B, B]
        np.fill_diagonal(alike, False)
        other = ~alike
        np.fill_diagonal(other, False)
        alike_share += alike.sum(axis=1).mean() / max(len(rows) - 1, 1)
        teacher = torch.from_numpy(np.asarray(teacher_emb[rows], dtype=np.float32))
        for norm in TARGET_NORMS:
            targets = soft_targets(teacher, beta, norm, target_scale).numpy()
            sums[norm] += [np.diag(targets).mean(), (targets * alike).sum(axis=1).mean(),
                           (targets * other).sum(axis=1).mean()]
    table = pd.DataFrame([{"target_norm": norm, "self": mass[0] / batches, "alike items": mass[1] / batches,
                           "other items": mass[2] / batches} for norm, mass in sums.items()])
    table.attrs["alike_share"] = alike_share / batches
    return table

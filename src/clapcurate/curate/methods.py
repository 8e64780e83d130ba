"""The paper's curation methods (Sec. 2.2) as functions on embeddings and manifests.

- **DU** (domain-unspecific): every pool clip x every training caption; keep the pairs whose
  cosine similarity is >= sigma, optionally only the `max_captions_per_clip` best captions of
  each clip.
- **DS** (domain-specific): text-text cosine between each training caption and the prompts
  "this is a sound of {label}" of the target benchmark; keep the training pairs whose best label
  similarity is >= sigma.
- **ADS** (augmented DS): the DS captions x every pool clip, pairs >= sigma.

DU and ADS take a `selection` (`clapcurate.search.SELECTIONS`): `cosine`, the paper's, applies
sigma to the raw cosine; `csls` to the CSLS score 2 cos - r_audio - r_text (r: the mean cosine of
a side's `selection_k` nearest neighbours on the other side; 0 means a pair as close as its two
neighbourhoods on average, and the score spans [-4, 4]); `mutual` to the cosine of the pairs whose
clip and caption are each among the other's `selection_k` nearest.

Nothing here reads or writes files: the stage (`curate.stage`) does. The leakage checks (the
teacher's training clips, a target benchmark's audio in the pool) are `curate.leakage`.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd
import torch

from .. import method
from ..errors import ClapcurateError, ConfigError
from ..search import DEFAULT_BLOCK_SIZE, DEFAULT_SELECTION_K, SimilarityHistogram, best_key, search_pass

log = logging.getLogger("clapcurate.curate")

def _absolute_sigma(sigma: float | None, keep_fraction: float | None, kind: str) -> float | None:
    """`sigma`, or without it the default sigma of the `kind` of set (`clapcurate.method.SIGMA`);
    None when `keep_fraction` sets it. Refuses both."""
    if sigma is not None and keep_fraction is not None:
        raise ConfigError("give either sigma or keep_fraction, not both")
    if keep_fraction is not None:
        return None
    return method.SIGMA[kind] if sigma is None else float(sigma)


def threshold_from(sigma: float | None, keep_fraction: float | None,
                   histogram: SimilarityHistogram | None, kind: str) -> float:
    """The absolute threshold: `sigma`, the value keeping `keep_fraction` of the `histogram`'s
    similarities, or without either the default sigma of the `kind` of set
    (`clapcurate.method.SIGMA`). The resolved value is logged."""
    absolute = _absolute_sigma(sigma, keep_fraction, kind)
    if absolute is not None:
        return absolute
    resolved = histogram.value_at_keep_fraction(keep_fraction)
    _log_resolved(keep_fraction, histogram, resolved)
    return resolved


def _log_resolved(keep_fraction: float, histogram: SimilarityHistogram, sigma: float) -> None:
    log.info("keep_fraction %.6g of %d similarities resolved to sigma = %.6f", keep_fraction, histogram.total, sigma)


PLOT_SAMPLE_QUERIES = 4096  # pool rows sampled for the histogram when sigma is absolute


@dataclasses.dataclass
class ImprovementSet:
    """Curated pairs as manifest rows, the threshold sigma that selected them, the histogram
    of the similarities they were selected from (for the plot) and how many pairs of the search
    reached sigma before a per-clip cap (`max_captions_per_clip`) kept some of them. `similarity`
    is the score sigma applies to: the cosine, or the CSLS score under `selection` csls."""

    method: str
    rows: pd.DataFrame  # manifest columns + similarity + method, source_id, best_label
    sigma: float
    histogram: SimilarityHistogram
    pairs_before_cap: int = -1  # -1: as many as rows (no cap)
    histogram_sampled: bool = False  # the histogram counts a sample of the pool's rows
    selection: str = "cosine"  # clapcurate.search.SELECTIONS

    def __post_init__(self):
        if self.pairs_before_cap < 0:
            self.pairs_before_cap = len(self.rows)


def _check_aligned(embeddings, n_rows: int, what: str) -> None:
    if len(embeddings) != n_rows:
        raise ClapcurateError(f"{what}: {len(embeddings)} embeddings for {n_rows} rows")


def _pool_caption_pairs(kind: str, pool_embeddings, pool_clips: pd.DataFrame, caption_embeddings,
                        caption_rows: pd.DataFrame, sigma: float | None, keep_fraction: float | None,
                        max_captions_per_clip: int | None, block_size: int, device, selection: str = "cosine",
                        selection_k: int = DEFAULT_SELECTION_K) -> ImprovementSet:
    """Every (pool clip, distinct caption) pair with cosine >= sigma, at most
    `max_captions_per_clip` per clip. `caption_rows` needs `caption`, `source_id`, `best_label`."""
    _check_aligned(pool_embeddings, len(pool_clips), "pool")
    _check_aligned(caption_embeddings, len(caption_rows), "captions")
    first_of_caption = np.flatnonzero(~caption_rows["caption"].duplicated().to_numpy())
    captions = caption_rows.iloc[first_of_caption].reset_index(drop=True)
    caption_embeddings = caption_embeddings[first_of_caption]  # [C, d]
    threshold = _absolute_sigma(sigma, keep_fraction, kind)
    # one pass: the pairs, the histogram (of a sample of the pool's rows for the plot when sigma is
    # absolute, of all pairs for a keep_fraction) and the pairs >= sigma before the cap
    search = search_pass(pool_embeddings, caption_embeddings, threshold, keep_fraction, max_captions_per_clip,
                         PLOT_SAMPLE_QUERIES if threshold is not None else None, block_size, device,
                         selection=selection, selection_k=selection_k)
    if keep_fraction is not None:
        _log_resolved(keep_fraction, search.histogram, search.sigma)
    found = search.pairs
    histogram = search.histogram if search.histogram is not None else SimilarityHistogram.empty()  # no pool rows
    sampled = search.histogram_queries < len(pool_embeddings)
    clips = pool_clips.iloc[found.query_idx].reset_index(drop=True)
    matched = captions.iloc[found.key_idx].reset_index(drop=True)
    rows = pd.DataFrame({
        "id": [f"{kind}:{clip}:{source}" for clip, source in zip(clips["clip_id"], matched["source_id"])],
        "clip_id": clips["clip_id"],
        "audio_path": clips["audio_path"],
        "caption": matched["caption"],
        "source": clips["source"] if "source" in clips else "",
        "similarity": found.similarity.astype(np.float64),
        "method": kind,
        "source_id": matched["source_id"],
        "best_label": matched["best_label"],
    })
    return ImprovementSet(kind, rows, search.sigma, histogram, search.pairs_at_sigma, sampled, selection)


def curate_du(pool_embeddings, pool_clips: pd.DataFrame, caption_embeddings, caption_rows: pd.DataFrame,
              sigma: float | None = None, keep_fraction: float | None = None,
              max_captions_per_clip: int | None = None, block_size: int = DEFAULT_BLOCK_SIZE,
              device: str | torch.device | None = None, selection: str = "cosine",
              selection_k: int = DEFAULT_SELECTION_K) -> ImprovementSet:
    """DU: every pool clip x every distinct training caption, pairs with cosine >= sigma.

    `pool_embeddings` [P, d] align with `pool_clips` (clip_id, audio_path, source);
    `caption_embeddings` [R, d] with `caption_rows` (training manifest rows: id, caption). A
    caption shared by several rows is matched once, credited to its first row. sigma defaults
    to `method.SIGMA['du']` (the paper's 0.7); `keep_fraction` sets it to the quantile of all pair similarities.
    """
    captions = caption_rows.assign(source_id=caption_rows["id"], best_label="")
    return _pool_caption_pairs("du", pool_embeddings, pool_clips, caption_embeddings, captions,
                               sigma, keep_fraction, max_captions_per_clip, block_size, device, selection,
                               selection_k)


def curate_ads(ds_manifest: pd.DataFrame, caption_embeddings, pool_embeddings, pool_clips: pd.DataFrame,
               sigma: float | None = None, keep_fraction: float | None = None,
               max_captions_per_clip: int | None = None, block_size: int = DEFAULT_BLOCK_SIZE,
               device: str | torch.device | None = None, selection: str = "cosine",
               selection_k: int = DEFAULT_SELECTION_K) -> ImprovementSet:
    """ADS: the DS Improvement-Set's captions x every pool clip, pairs with cosine >= sigma.

    `caption_embeddings` [R, d] align with `ds_manifest`'s rows; each output row keeps the DS
    row's provenance (the training row id in `source_id`, the `best_label`).
    """
    return _pool_caption_pairs("ads", pool_embeddings, pool_clips, caption_embeddings, ds_manifest,
                               sigma, keep_fraction, max_captions_per_clip, block_size, device, selection,
                               selection_k)

def curate_ds(train_manifest: pd.DataFrame, caption_embeddings, prompt_embeddings, labels,
              sigma: float | None = None, keep_fraction: float | None = None,
              block_size: int = DEFAULT_BLOCK_SIZE, device: str | torch.device | None = None) -> ImprovementSet:
    """DS: the training pairs whose caption is close to a prompt of the target benchmark.

    `caption_embeddings` [R, d] align with `train_manifest`'s rows, `prompt_embeddings` [L, d]
    with `labels` (prompts "this is a sound of {label}", `zeroshot.prompts`). A row is kept when
    its best label's text-text cosine is >= sigma; the label is recorded in `best_label`.
    """
    _check_aligned(caption_embeddings, len(train_manifest), "captions")
    _check_aligned(prompt_embeddings, len(labels), "prompts")
    if len(labels) == 0:
        raise ClapcurateError("DS curation needs the benchmark's class labels, got none")
    best_label, best_similarity = best_key(caption_embeddings, prompt_embeddings, block_size, device)
    histogram = SimilarityHistogram.empty()
    histogram.add(torch.from_numpy(best_similarity.copy()))
    threshold = threshold_from(sigma, keep_fraction, histogram, "ds")
    keep = best_similarity >= threshold
    kept = train_manifest[keep].reset_index(drop=True)
    rows = kept.assign(
        id=["ds:" + row_id for row_id in kept["id"]],
        similarity=best_similarity[keep].astype(np.float64),
        method="ds",
        source_id=kept["id"],
        best_label=[str(labels[i]) for i in best_label[keep]],
    )
    return ImprovementSet("ds", rows, threshold, histogram)

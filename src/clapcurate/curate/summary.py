"""What a curated set looks like, and when it is going wrong: the summary `clapcurate curate`
prints and writes into `stats.json`, and its warnings.

The teacher's held-out captioned clips (`data.val_fraction` of its fit; `manifest.split_by_clip`)
give the similarities of matched pairs (a clip and its own caption) and of mismatched ones (a clip
and the other clips' captions): where sigma lies among them is shown (`teacher_reference` in
`stats.json`, `teacher_reference.png`) and warned about.

`estimated_precision` in `stats.json` stays null: no estimate of a set's precision without labels
came within 10 points of the embedded world's ground truth. What was tried,
`false_discovery_precision` (the mismatched pairs as the null distribution of a false-discovery
rate: of the P x C pairs a search compares, about P x C x share(mismatched >= sigma) reaching sigma
are wrong), missed by 8 to 23 points with the full teacher (it said 0%) and by 55 to 91 points with
the 10% teacher (docs/curation-checks.md); the study's report still measures it against the ground
truth, so that a better method can be judged the same way.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from ..search import SimilarityHistogram

TOP_CAPTIONS = 5  # captions (and DS / ADS labels) listed with their shares of the pairs
HUB_SHARE = 0.25  # a hub caption holds at least this share of a pool set's pairs ...
HUB_MIN_PAIRS = 20  # ... of at least this many pairs ...
HUB_MIN_CANDIDATES = 8  # ... chosen from at least this many candidate captions
LOW_SIGMA_QUANTILE = 0.25  # sigma below this quantile of the teacher's matched pairs ...
LOW_SIGMA_MISMATCHED = 0.01  # ... that this share of its mismatched pairs reaches too
SUGGESTED_PAIRS = 100  # a set of 0 pairs names the sigma keeping about this many


@dataclasses.dataclass
class TeacherReference:
    """Similarities of the teacher's held-out pairs: `matched` (each held-out caption with its own
    clip) and `mismatched` (each with the other held-out clips), from `clips` clips."""

    matched: np.ndarray
    mismatched: np.ndarray
    clips: int

    @classmethod
    def of(cls, audio_embeddings, caption_embeddings, clip_of_caption) -> "TeacherReference":
        """From the held-out clips' audio embeddings [A, d], their captions' text embeddings
        [C, d] and each caption's clip (index into the audio rows) [C]."""
        audio = np.asarray(audio_embeddings, dtype=np.float32)
        text = np.asarray(caption_embeddings, dtype=np.float32)
        clip_of_caption = np.asarray(clip_of_caption)
        similarity = text @ audio.T  # [C, A]
        own = np.zeros_like(similarity, dtype=bool)
        own[np.arange(len(text)), clip_of_caption] = True
        return cls(np.sort(similarity[own]), np.sort(similarity[~own]), len(audio))

    def share_at(self, sigma, matched: bool = False) -> np.ndarray:
        """The share of the matched (or mismatched) similarities >= sigma (a number or an array)."""
        values = self.matched if matched else self.mismatched
        return 1.0 - np.searchsorted(values, sigma, side="left") / max(len(values), 1)

    def summary(self, sigma: float) -> dict:
        return {"clips": self.clips, "matched_pairs": len(self.matched), "mismatched_pairs": len(self.mismatched),
                "matched_quartiles": _quartiles(self.matched), "mismatched_quartiles": _quartiles(self.mismatched),
                "matched_share_at_sigma": float(self.share_at(sigma, matched=True)) if len(self.matched) else None,
                "mismatched_share_at_sigma": float(self.share_at(sigma)) if len(self.mismatched) else None}


def _quartiles(values: np.ndarray) -> list[float] | None:
    return [round(float(q), 4) for q in np.quantile(values, [0.25, 0.5, 0.75])] if len(values) else None


def false_discovery_precision(mismatched_share: float, pairs_at_sigma: int, pairs_searched: int) -> float | None:
    """The tried estimate (module docstring): 1 - pairs_searched x mismatched_share / pairs_at_sigma,
    clipped to [0, 1]; None without pairs or a share."""
    if pairs_at_sigma <= 0 or mismatched_share is None or mismatched_share != mismatched_share:
        return None
    return float(np.clip(1.0 - pairs_searched * mismatched_share / pairs_at_sigma, 0.0, 1.0))


def sigma_keeping(histogram: SimilarityHistogram, pairs: int, pairs_searched: int) -> float | None:
    """The sigma keeping about `pairs` of the `pairs_searched` (the histogram's quantile)."""
    if histogram.total == 0 or pairs_searched == 0:
        return None
    return histogram.value_at_keep_fraction(min(1.0, pairs / pairs_searched))


def top_shares(values: pd.Series, key: str) -> list[dict]:
    """The `TOP_CAPTIONS` most frequent non-empty `values` (one per pair), most first and ties in
    the order of the value: [{key, "pairs", "share"}], share of all the pairs. Curation's
    `top_captions` / `top_labels` and the browser's hub captions of a set without them."""
    counts = values[values != ""].astype(str).value_counts()
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TOP_CAPTIONS]
    return [{key: value, "pairs": int(n), "share": round(int(n) / len(values), 4)} for value, n in ranked]


def curation_warnings(stats: dict, reference: TeacherReference | None) -> list[str]:
    """The warnings of a curated set's `stats` (as `clapcurate curate` writes them), each naming
    the number that triggered it and the key to change."""
    warnings = []
    pairs, sigma = stats["pairs"], stats["sigma"]
    threshold_key = "sigma (or keep_fraction)"
    if pairs == 0:
        suggestion = stats.get("sigma_keeping_suggested_pairs")
        hint = (f"; sigma = {suggestion:.4f} would keep about {SUGGESTED_PAIRS} pairs" if suggestion is not None
                else "")
        warnings.append(f"0 pairs reach sigma = {sigma:.4f} (the highest similarity seen is "
                        f"{stats['highest_similarity']:.4f}){hint}: lower {threshold_key}")
    top = stats.get("top_captions") or []
    candidates = stats.get("candidate_captions", 0)
    if (stats["method"] != "ds" and top and pairs >= HUB_MIN_PAIRS and candidates >= HUB_MIN_CANDIDATES
            and top[0]["share"] >= HUB_SHARE):
        warnings.append(f"hub caption: {top[0]['pairs']} of the {pairs} pairs ({top[0]['share']:.0%}) carry one "
                        f"caption of the {candidates} candidates, {top[0]['caption']!r}; a caption matching many "
                        f"clips is a known failure of CLAP retrieval: look at the pairs (clapcurate browse) and "
                        f"raise {threshold_key}")
    if reference is not None and len(reference.matched):
        matched_low = float(np.quantile(reference.matched, LOW_SIGMA_QUANTILE))
        mismatched_share = float(reference.share_at(sigma))
        if sigma < matched_low and mismatched_share >= LOW_SIGMA_MISMATCHED:
            warnings.append(f"sigma = {sigma:.4f} lies below the bulk of the teacher's held-out matched pairs "
                            f"(their lower quartile {matched_low:.4f}, median "
                            f"{float(np.median(reference.matched)):.4f}) and {mismatched_share:.1%} of its "
                            f"mismatched pairs reach it: raise {threshold_key}")
    duplicates = stats.get("duplicate_clips", 0)
    if duplicates:
        example = stats["duplicate_examples"][0]
        warnings.append(f"{duplicates} curated clips hold the same audio as another curated clip (e.g. "
                        f"{' = '.join(example)}): they count more than once in training; remove the copies from "
                        f"pool_manifest (clapcurate inspect lists every group)")
    return warnings


def summary_text(stats: dict) -> str:
    """The summary `clapcurate curate` prints (stats.json holds the same numbers)."""
    method = stats["method"].upper()
    source = {"keep_fraction": f"from keep_fraction {stats.get('keep_fraction')}", "given": "given",
              "default": "the method's default"}[stats["sigma_from"]]
    lines = [f"{method} Improvement-Set: {stats['pairs']:,} pairs, {stats['clips']:,} clips, "
             f"{stats['captions']:,} captions",
             f"  sigma = {stats['sigma']:.4f} ({source}); highest similarity seen {stats['highest_similarity']:.4f}",
             f"  pairs >= sigma: {stats['pairs_at_sigma']['before_cap']:,} before the per-clip cap, "
             f"{stats['pairs_at_sigma']['after_cap']:,} after"]
    reference = stats.get("teacher_reference")
    if reference:
        def median(kind: str) -> str:  # none with a single held-out clip (no mismatched pairs)
            quartiles = reference[f"{kind}_quartiles"]
            return "-" if quartiles is None else f"{quartiles[1]:.4f}"

        def share(kind: str, digits: int) -> str:
            value = reference[f"{kind}_share_at_sigma"]
            return "-" if value is None else f"{value:.{digits}%}"

        lines.append(f"  teacher's held-out pairs ({reference['clips']} clips): matched median {median('matched')}, "
                     f"mismatched median {median('mismatched')}; reaching sigma: {share('matched', 1)} of the "
                     f"matched, {share('mismatched', 2)} of the mismatched (teacher_reference.png)")
    for name, key in (("captions", "top_captions"), ("labels", "top_labels")):
        if stats.get(key):
            shares = ", ".join(f"{entry[key[4:-1]]!r} {entry['share']:.1%}" for entry in stats[key])
            lines.append(f"  top {name}: {shares}")
    return "\n".join(lines)

"""What a curated set looks like, and when it is going wrong: the summary `clapcurate curate`
prints and writes into `stats.json`, its warnings, and an estimate of the set's precision
without labels.

The estimate uses what the teacher already knows: its held-out captioned clips (`data.val_fraction`
of its fit; `manifest.split_by_clip`) give the similarities of matched pairs (a clip and its own
caption) and of mismatched ones (a clip and the other clips' captions). A pool search over P
clips and C captions makes P x C pairs; if the pairs reaching sigma that are wrong behave like
the teacher's mismatched pairs, about `P x C x share(mismatched >= sigma)` of the N pairs >= sigma
are wrong, and

    precision(sigma) ~ 1 - P x C x share(mismatched >= sigma) / N(sigma)

(the complement of a false-discovery rate with the mismatched pairs as the null). N(sigma) for
every sigma comes from the search's histogram, so the same formula suggests the lowest sigma
reaching a precision the user asks for. Mismatched pairs that describe each other (two clips of
barking dogs) count as wrong here although a listener would call them right, so the estimate
leans low where captions repeat.
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
LOW_PRECISION = 0.5  # an estimated precision below this is warned about
SUGGESTED_PAIRS = 100  # a set of 0 pairs names the sigma keeping about this many
SIGMA_STEPS = 1024  # sigma candidates over [-1, 1] for a suggested sigma


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
                "matched_share_at_sigma": float(self.share_at(sigma, matched=True)),
                "mismatched_share_at_sigma": float(self.share_at(sigma))}


def _quartiles(values: np.ndarray) -> list[float] | None:
    return [round(float(q), 4) for q in np.quantile(values, [0.25, 0.5, 0.75])] if len(values) else None


def estimated_precision(reference: TeacherReference | None, sigma: float, pairs_at_sigma: int,
                        pairs_searched: int) -> float | None:
    """1 - pairs_searched x share(mismatched >= sigma) / pairs_at_sigma, clipped to [0, 1] (module
    docstring); None without a reference (or mismatched pairs) or without pairs."""
    if reference is None or len(reference.mismatched) == 0 or pairs_at_sigma <= 0:
        return None
    expected_wrong = pairs_searched * float(reference.share_at(sigma))
    return float(np.clip(1.0 - expected_wrong / pairs_at_sigma, 0.0, 1.0))


def pairs_at(histogram: SimilarityHistogram, sigmas: np.ndarray, pairs_searched: int) -> np.ndarray:
    """Pairs >= each of `sigmas` among the `pairs_searched`, read from the search's histogram
    (scaled when it counts a sample of the pool's rows; bin resolution)."""
    if histogram.total == 0:
        return np.zeros(len(sigmas))
    tail = np.concatenate([np.cumsum(histogram.counts[::-1])[::-1], [0]])  # pairs >= each edge
    index = np.clip(np.searchsorted(histogram.edges, sigmas, side="left"), 0, len(tail) - 1)
    return tail[index] * (pairs_searched / histogram.total)


def sigma_for_precision(reference: TeacherReference | None, histogram: SimilarityHistogram, pairs_searched: int,
                        precision: float) -> float | None:
    """The lowest sigma (on a grid of `SIGMA_STEPS` over [-1, 1]) whose estimated precision reaches
    `precision` with at least one pair; None when none does or nothing is known."""
    if reference is None or len(reference.mismatched) == 0 or histogram.total == 0:
        return None
    sigmas = np.linspace(-1.0, 1.0, SIGMA_STEPS + 1)
    kept = pairs_at(histogram, sigmas, pairs_searched)
    wrong = pairs_searched * reference.share_at(sigmas)
    with np.errstate(divide="ignore", invalid="ignore"):
        estimate = np.where(kept >= 1, 1.0 - wrong / kept, -np.inf)
    reaching = np.flatnonzero(estimate >= precision)
    return float(sigmas[reaching[0]]) if len(reaching) else None


def sigma_keeping(histogram: SimilarityHistogram, pairs: int, pairs_searched: int) -> float | None:
    """The sigma keeping about `pairs` of the `pairs_searched` (the histogram's quantile)."""
    if histogram.total == 0 or pairs_searched == 0:
        return None
    return histogram.value_at_keep_fraction(min(1.0, pairs / pairs_searched))


def top_shares(values: pd.Series, key: str) -> list[dict]:
    """The `TOP_CAPTIONS` most frequent values with their pair counts and shares of the pairs."""
    counts = values[values != ""].value_counts()
    return [{key: str(value), "pairs": int(n), "share": round(int(n) / len(values), 4)}
            for value, n in counts.head(TOP_CAPTIONS).items()]


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
    precision = stats.get("estimated_precision")
    if precision is not None and precision < LOW_PRECISION and pairs > 0:
        wanted = stats.get("suggested_sigma")
        if not wanted:
            hint = "; set target_precision for a suggested sigma"
        elif wanted["sigma"] is None:
            hint = f"; no sigma is estimated to reach {wanted['precision']:.0%}"
        else:
            hint = f"; sigma = {wanted['sigma']:.4f} is estimated to give {wanted['precision']:.0%}"
        warnings.append(f"estimated precision {precision:.0%} (from the teacher's held-out pairs){hint}: "
                        f"raise {threshold_key}")
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
    precision = stats.get("estimated_precision")
    if precision is not None:
        lines.append(f"  estimated precision {precision:.0%} (teacher's held-out pairs, "
                     f"{stats['teacher_reference']['clips']} clips)")
    wanted = stats.get("suggested_sigma")
    if wanted:
        lines.append(f"  for precision {wanted['precision']:.0%}: " + (
            f"sigma = {wanted['sigma']:.4f}" if wanted["sigma"] is not None else "no sigma reaches it"))
    for name, key in (("captions", "top_captions"), ("labels", "top_labels")):
        if stats.get(key):
            shares = ", ".join(f"{entry[key[4:-1]]!r} {entry['share']:.1%}" for entry in stats[key])
            lines.append(f"  top {name}: {shares}")
    return "\n".join(lines)

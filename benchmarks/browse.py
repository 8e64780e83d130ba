"""The Improvement-Set browser at scale: generating the page for a 100k-pair set, and opening it.

Builds a synthetic curated folder (default: 100,000 DU-like pairs, one caption per clip, so
100,000 audio clips of 0.1 s, 20,000 distinct captions, and the 65,536-bin histogram of a
100k x 20k search), then measures

- `write_browser` (reading the manifest, checking and linking 100k clips one file at a time,
  writing the page; the second and third runs also remove the earlier page's links) and the whole
  `clapcurate browse` command (Python start and imports included);
- opening the page in headless Chromium: the load event, and the moment the first page of rows
  is drawn (`window.browser.ready`, ms since navigation start);
- the page's response to a new sigma and to a caption filter over all pairs.

    python benchmarks/browse.py                 # 100k pairs
    python benchmarks/browse.py --pairs 20000   # quick run

Targets: generation < 10 s; the page opens in < 2 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile
import torch

from clapcurate.browse import write_browser
from clapcurate.curate import ImprovementSet, write_improvement_set
from clapcurate.search import SimilarityHistogram

from record import record

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' Chromium driver
from headless import Chromium  # noqa: E402

WORDS = ("dog", "barks", "rain", "falls", "engine", "idles", "bird", "sings", "door", "slams", "people", "talk",
         "wind", "blows", "water", "runs", "a", "the", "loudly", "far", "away", "nearby", "while", "and")


def synthetic_curated_set(root: Path, pairs: int, captions: int, seed: int = 0) -> Path:
    """A curated folder as `write_improvement_set` writes it: `pairs` pairs of distinct clips."""
    rng = np.random.default_rng(seed)
    audio = root / "audio"
    audio.mkdir(parents=True)
    wav = root / "template.wav"
    soundfile.write(wav, (0.1 * np.sin(np.arange(1600) / 3.0)).astype(np.float32), 16000)
    data = wav.read_bytes()
    for index in range(pairs):  # every clip its own file, as in a real pool
        (audio / f"clip{index:06d}.wav").write_bytes(data)
    texts = [" ".join(rng.choice(WORDS, rng.integers(5, 12))) + f" {k}" for k in range(captions)]
    sigma = 0.7
    rows = pd.DataFrame({
        "id": [f"du:yt:clip{index:06d}:corpus/{index % captions}" for index in range(pairs)],
        "clip_id": [f"yt:clip{index:06d}" for index in range(pairs)],
        "audio_path": [str(audio / f"clip{index:06d}.wav") for index in range(pairs)],
        "caption": [texts[k] for k in rng.integers(0, captions, pairs)],
        "source": "audioset",
        "similarity": sigma + rng.exponential(0.03, pairs),
        "method": "du",
        "source_id": [f"corpus/{k}" for k in rng.integers(0, captions, pairs)],
        "best_label": "",
    })
    # the search: pairs x captions similarities, roughly normal below sigma, plus the kept pairs
    histogram = SimilarityHistogram.empty()
    centres = histogram.edges[:-1] + histogram.bin_width / 2
    bulk = np.exp(-0.5 * ((centres - 0.1) / 0.15) ** 2) * (centres < sigma)
    histogram.counts[:] = np.floor(bulk / bulk.sum() * (pairs * captions - pairs))
    histogram.counts[np.argmax(bulk)] += pairs * captions - pairs - histogram.counts.sum()
    histogram.add(torch.from_numpy(rows["similarity"].to_numpy(np.float32)))
    out = root / "du"
    write_improvement_set(ImprovementSet("du", rows, sigma, histogram), out,
                          pool_clips=pairs, unreadable_pool_clips=0, excluded_training_clips=0,
                          candidate_captions=captions, max_captions_per_clip=1)
    return out


def time_page(browser: Chromium, url: str) -> dict:
    load = browser.open(url)
    ready_ms = browser.evaluate("window.browser.ready")
    sigma_ms = browser.evaluate("""(() => { const t = performance.now();
        window.browser.setSigma(window.browser.state.sigma + 0.01); return performance.now() - t; })()""")
    filter_ms = browser.evaluate("""(() => { const t = performance.now(); window.browser.state.text = 'dog barks';
        window.browser.update(true); return performance.now() - t; })()""")
    errors = browser.console_errors()
    browser.events.clear()
    return {"load_s": load, "ready_s": ready_ms / 1000, "sigma_ms": sigma_ms, "filter_ms": filter_ms,
            "rows": browser.evaluate("document.querySelectorAll('#rows tr[data-row]').length"), "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--captions", type=int, default=20_000)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="browse-bench-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        curated = synthetic_curated_set(root, args.pairs, args.captions)
        print(f"synthetic set: {args.pairs:,} pairs, {args.captions:,} captions "
              f"(built in {time.perf_counter() - start:.1f} s, not timed)")
        generation = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            page = write_browser(curated, root / "page", limit=args.limit)
            generation.append(time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "clapcurate.cli", "browse", str(curated), "--out", str(root / "page_cli"),
                        "--limit", str(args.limit)], check=True, stdout=subprocess.DEVNULL)
        command = time.perf_counter() - start
        size_mb = page.stat().st_size / 2**20
        with Chromium() as browser:
            runs = [time_page(browser, page.as_uri()) for _ in range(args.repeats)]
    load = statistics.median(run["load_s"] for run in runs)
    ready = statistics.median(run["ready_s"] for run in runs)
    print(f"write_browser: {statistics.median(generation):.2f} s median of {args.repeats} "
          f"({', '.join(f'{g:.2f}' for g in generation)}); page {size_mb:.1f} MiB   target < 10 s")
    print(f"clapcurate browse (whole command, Python start and imports included): {command:.2f} s   target < 10 s")
    print(f"page open in headless Chromium: load event {load:.2f} s, first rows drawn {ready:.2f} s after "
          f"navigation (median of {args.repeats})   target < 2 s")
    print(f"new sigma: {statistics.median(run['sigma_ms'] for run in runs):.1f} ms; caption filter over all pairs: "
          f"{statistics.median(run['filter_ms'] for run in runs):.1f} ms; rows drawn {runs[0]['rows']}; "
          f"console errors {sum(len(run['errors']) for run in runs)}")
    scale = f"{args.pairs:,} pairs"
    record(f"write_browser, {scale}", statistics.median(generation), "s", target="< 10 s",
           higher_is_better=False, threshold=10)
    record(f"`clapcurate browse` command, {scale}", command, "s", target="< 10 s", higher_is_better=False, threshold=10)
    record(f"page open in Chromium to first rows, {scale}", ready, "s", target="< 2 s", higher_is_better=False,
           threshold=2)


if __name__ == "__main__":
    main()

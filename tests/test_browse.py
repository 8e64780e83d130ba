"""The Improvement-Set browser: counts at a stricter sigma, the audio placed beside the page, and
the generated page itself, opened in headless Chromium (Debian's `chromium`; `.ci/run` installs it)."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
from types import SimpleNamespace
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
import soundfile
import torch

from clapcurate.browse import (AUDIO_DIR, PAGE_FILE, RECORD_FILE, PageFolder, histogram_scale,
                               kept_counts, matched_windows, place_audio, read_curated_set, read_marks, search_pairs_at,
                               write_browser)
from clapcurate.cli import main
from clapcurate.curate import ImprovementSet, write_improvement_set
from clapcurate.curate.summary import top_shares
from clapcurate.errors import ClapcurateError
from clapcurate.intervals import wilson_interval
from headless import Chromium
from clapcurate.search import SimilarityHistogram

SIGMA = 0.3
WORDS = ("dog", "rain", "engine", "bird", "door")
LABELS = ("dog", "rain", "engine")


@pytest.fixture(scope="module")
def curated_dir(tmp_path_factory):
    """An ADS-like curated folder: 150 pairs over 120 clips (some clips with two captions), 12
    captions, similarities in [sigma, 0.8], a full histogram of a 120 x 40 search."""
    root = tmp_path_factory.mktemp("curated")
    rng = np.random.default_rng(0)
    audio = root / "pool"
    audio.mkdir()
    durations = rng.uniform(0.5, 2.0, 120).round(2)
    for index, seconds in enumerate(durations):
        soundfile.write(audio / f"clip{index:03d}.wav", 0.1 * np.sin(np.arange(int(8000 * seconds)) / 3.0), 8000)
    captions = [f"a {WORDS[k % 5]} and a {WORDS[(k * 2 + 1) % 5]} sound {k}" for k in range(12)]
    clip_of_row = np.r_[np.arange(120), rng.choice(120, 30, replace=False)]
    caption_of_row = rng.integers(0, 12, 150)
    similarity = rng.uniform(SIGMA, 0.8, 150)
    similarity[:4] = [0.5, 0.5, 0.5, SIGMA]  # ties and a pair exactly at sigma
    rows = pd.DataFrame({
        "id": [f"ads:c{c}:s{k}:{i}" for i, (c, k) in enumerate(zip(clip_of_row, caption_of_row))],
        "clip_id": [f"yt:clip{c:03d}" for c in clip_of_row],
        "audio_path": [str(audio / f"clip{c:03d}.wav") for c in clip_of_row],
        "caption": [captions[k] for k in caption_of_row],
        "source": "audioset", "similarity": similarity, "method": "ads",
        "source_id": [f"clotho/{k}" for k in caption_of_row],
        "best_label": [LABELS[k % 3] for k in caption_of_row],
    })
    histogram = SimilarityHistogram.empty()
    histogram.add(torch.cat([torch.from_numpy(similarity).float(), torch.empty(120 * 40 - 150).uniform_(-0.4, SIGMA)]))
    out = root / "ads_esc50"
    write_improvement_set(ImprovementSet("ads", rows, SIGMA, histogram), out, benchmark="esc50",
                          pool_clips=130, unreadable_pool_clips=4, excluded_training_clips=6, candidate_captions=40)
    (out / "durations.json").write_text(json.dumps(durations.tolist()))
    return out


@pytest.fixture(scope="module")
def right(curated_dir):
    """A made-up ground truth: every third pair right."""
    return np.arange(len(read_curated_set(curated_dir).rows)) % 3 == 0


@pytest.fixture(scope="module")
def page(curated_dir, right, tmp_path_factory):
    return write_browser(curated_dir, tmp_path_factory.mktemp("browser"), limit=40, right=right)


@pytest.fixture(scope="module")
def browser():
    with Chromium(width=1400, height=1000, timeout=20) as chromium:
        yield chromium


@pytest.fixture(scope="module")
def opened(browser, page):
    """The page opened from file://; the console errors of the load recorded."""
    browser.events.clear()
    browser.open(page.as_uri())
    assert browser.evaluate("document.body.dataset.ready") == "1"
    return browser


def shown_rows(browser) -> list[dict]:
    return browser.evaluate("""[...document.querySelectorAll('#rows tr[data-row]')].map(tr => ({
        row: Number(tr.dataset.row), caption: tr.querySelector('.caption').textContent,
        similarity: Number(tr.cells[1].textContent.slice(0, 6)), src: tr.querySelector('audio')?.getAttribute('src'),
        right: tr.querySelector('.right') !== null, label: tr.querySelector('.tag')?.textContent}))""")


def counts_shown(browser) -> dict:
    return browser.evaluate("""Object.fromEntries(['pairs', 'clips', 'captions', 'search'].map(
        k => [k, Number(document.getElementById('count-' + k).dataset.value)]))""")


def set_sigma(browser, value: float) -> None:
    browser.evaluate(f"""(() => {{ const input = document.getElementById('sigma-input');
        input.value = '{value}'; input.dispatchEvent(new Event('change')); }})()""")


# --------------------------------------------------------------------------- library


def test_kept_counts_and_search_counts_follow_the_rows_and_the_histogram(curated_dir):
    curated = read_curated_set(curated_dir)
    rows = curated.rows
    assert kept_counts(rows, SIGMA) == {"pairs": 150, "clips": 120, "captions": rows["caption"].nunique()}
    strict = rows[rows["similarity"] >= 0.5]
    assert kept_counts(rows, 0.5) == {"pairs": len(strict), "clips": strict["clip_id"].nunique(),
                                      "captions": strict["caption"].nunique()}
    assert kept_counts(rows, 0.9)["pairs"] == 0
    # the histogram counts every pair of the search: at sigma it holds the 150 kept pairs, within a bin
    assert abs(search_pairs_at(curated.histogram, SIGMA) - 150) <= 1
    assert search_pairs_at(curated.histogram, -1.0) == 120 * 40
    assert histogram_scale(curated.histogram, curated.stats) == 1.0  # (130 - 4 - 6) clips x 40 captions


def test_a_sampled_histogram_is_scaled_to_the_whole_search(curated_dir):
    curated = read_curated_set(curated_dir)
    bigger = {**curated.stats, "pool_clips": 1210, "unreadable_pool_clips": 0, "excluded_training_clips": 10}
    assert histogram_scale(curated.histogram, bigger) == pytest.approx(1200 * 40 / (120 * 40))
    assert search_pairs_at(curated.histogram, -1.0, histogram_scale(curated.histogram, bigger)) == 1200 * 40
    assert histogram_scale(curated.histogram, {"method": "ds"}) == 1.0  # no pool: the histogram is complete


def test_audio_is_linked_or_copied_file_by_file_and_only_audio(tmp_path, curated_dir):
    clips = read_curated_set(curated_dir).rows.drop_duplicates("clip_id")["audio_path"].tolist()[:3]
    odd = tmp_path / "other folder" / "a clip #1.wav"  # a second folder; a name to quote in a URL
    odd.parent.mkdir()
    odd.write_bytes(Path(clips[0]).read_bytes())
    (tmp_path / "notes.wav").write_bytes(b"RIFF\x10\0\0\0AVI LIST not audio at all")  # a RIFF file, but no WAVE
    paths = clips + [str(odd), str(tmp_path / "gone.wav"), "/etc/passwd", str(tmp_path / "notes.wav"), str(tmp_path)]
    (tmp_path / "page").mkdir()
    placed = place_audio(paths, PageFolder(tmp_path / "page"), "link")
    assert placed.sources[3].endswith("/a%20clip%20%231.wav")
    assert placed.sources[4:] == ["", "", "", ""]  # a missing file, a non-audio file, a folder: no player
    assert placed.missing == [paths[4], paths[7]] and placed.not_audio == paths[5:7]
    links = [path for path in (tmp_path / "page").rglob("*") if path.is_symlink()]
    assert len(links) == 4  # one relative link per audio file, never one to a folder
    for link in links:
        assert not os.path.isabs(os.readlink(link)) and link.resolve().is_file()
    for source, path in zip(placed.sources, paths[:4]):
        assert (tmp_path / "page" / unquote(source)).resolve() == Path(path).resolve()
    assert sorted(p.name for p in (tmp_path / "page" / AUDIO_DIR).iterdir()) == ["000_pool", "001_other_folder"]
    (tmp_path / "copy").mkdir()
    placed = place_audio(paths, PageFolder(tmp_path / "copy"), "copy")
    for source, path in zip(placed.sources, paths[:4]):
        copy = tmp_path / "copy" / unquote(source)
        assert not copy.is_symlink() and not copy.parent.is_symlink()
        assert copy.read_bytes() == Path(path).read_bytes()
    assert sum(1 for path in (tmp_path / "copy").rglob("*") if path.is_file()) == 4  # nothing else copied


def test_write_browser_refuses_what_it_cannot_show(tmp_path, curated_dir):
    with pytest.raises(ClapcurateError, match="not found"):
        write_browser(tmp_path / "nothing")
    with pytest.raises(ClapcurateError, match="holds no Improvement-Set"):
        write_browser(tmp_path)
    with pytest.raises(ClapcurateError, match="3 values for 150"):
        write_browser(curated_dir, tmp_path / "out", right=[True, False, True])


def test_browse_command_writes_the_page_beside_the_set_by_default(curated_dir, capsys):
    assert main(["browse", str(curated_dir), "--limit", "10"]) == 0
    assert (curated_dir / "browser" / PAGE_FILE).is_file()
    links = list((curated_dir / "browser" / AUDIO_DIR / "000_pool").iterdir())
    assert len(links) == 120 and all(link.resolve().parent == curated_dir.parent / "pool" for link in links)
    assert main(["browse", str(curated_dir / "missing")]) == 2
    assert "curated set not found" in capsys.readouterr().err
    assert main(["browse", str(curated_dir), "--world", str(curated_dir)]) == 2
    assert "--world and --train-manifest go together" in capsys.readouterr().err


# --------------------------------------------------------------------------- the page in Chromium


def test_page_loads_without_errors_and_shows_a_page_of_pairs_best_first(opened, curated_dir, right):
    assert opened.console_errors() == []
    rows = read_curated_set(curated_dir).rows
    shown = shown_rows(opened)
    assert len(shown) == 40  # the limit: 150 pairs in 4 pages
    assert opened.evaluate("Number(document.getElementById('matching').dataset.value)") == 150
    similarities = [row["similarity"] for row in shown]
    assert similarities == sorted(similarities, reverse=True)
    assert similarities[0] == pytest.approx(rows["similarity"].max(), abs=1e-4)
    best = rows.sort_values("similarity", ascending=False, kind="stable")
    assert {row["caption"] for row in shown[:3]} <= set(best["caption"].iloc[:3])
    by_caption_and_similarity = {(c, round(s, 4)): bool(r) for c, s, r in zip(rows["caption"], rows["similarity"], right)}
    for row in shown:
        assert by_caption_and_similarity[(row["caption"], round(row["similarity"], 4))] == row["right"]
    curated = read_curated_set(curated_dir)
    assert counts_shown(opened) == {**{key: curated.stats[key] for key in ("pairs", "clips", "captions")},
                                    "search": search_pairs_at(curated.histogram, SIGMA)}


def test_stricter_sigma_shows_the_counts_computed_from_the_rows_and_histogram(opened, curated_dir):
    curated = read_curated_set(curated_dir)
    for sigma in (0.5, 0.4321, 0.75):
        set_sigma(opened, sigma)
        assert counts_shown(opened) == {**kept_counts(curated.rows, sigma),
                                        "search": search_pairs_at(curated.histogram, sigma)}
        shown = opened.evaluate("Number(document.getElementById('matching').dataset.value)")
        assert shown == kept_counts(curated.rows, sigma)["pairs"]  # the list shows the kept pairs
    opened.evaluate("""(() => { const range = document.getElementById('sigma-range');
        range.value = '0.6'; range.dispatchEvent(new Event('input')); })()""")  # the slider does the same
    assert counts_shown(opened) == {**kept_counts(curated.rows, 0.6), "search": search_pairs_at(curated.histogram, 0.6)}
    set_sigma(opened, SIGMA)
    assert counts_shown(opened)["pairs"] == 150
    assert opened.console_errors() == []


def test_audio_sources_resolve_to_the_clips_and_play(opened, page, curated_dir):
    shown = shown_rows(opened)
    rows = read_curated_set(curated_dir).rows
    paths = {Path(path).resolve() for path in rows["audio_path"]}
    for row in shown:
        assert (page.parent / unquote(row["src"])).resolve() in paths
    durations = json.loads((curated_dir / "durations.json").read_text())
    src, duration = opened.evaluate("""(async () => {
        const audio = document.querySelector('#rows audio');
        audio.preload = 'metadata'; audio.load();
        await new Promise((ok, fail) => { audio.onloadedmetadata = ok; audio.onerror = () => fail(new Error('cannot load ' + audio.src)); });
        return [audio.getAttribute('src'), audio.duration]; })()""", await_promise=True)
    clip = int(Path(unquote(src)).stem[len("clip"):])
    assert duration == pytest.approx(durations[clip], abs=0.01)


def test_filtering_by_caption_word_and_class_leaves_only_matching_rows(opened, curated_dir):
    rows = read_curated_set(curated_dir).rows
    opened.evaluate("""(() => { const input = document.getElementById('filter-text');
        input.value = 'Engine'; input.dispatchEvent(new Event('input')); })()""")
    opened.evaluate("new Promise(ok => setTimeout(ok, 300))", await_promise=True)  # the input is debounced
    expected = rows["caption"].str.lower().str.contains("engine").sum()
    assert opened.evaluate("Number(document.getElementById('matching').dataset.value)") == expected
    shown = shown_rows(opened)
    assert 0 < len(shown) == min(expected, 40)
    assert all("engine" in row["caption"] for row in shown)
    opened.evaluate("""(() => { const select = document.getElementById('filter-label');
        select.value = [...select.options].find(o => o.text === 'rain').value;
        select.dispatchEvent(new Event('change')); })()""")
    both = (rows["caption"].str.contains("engine") & (rows["best_label"] == "rain")).sum()
    assert opened.evaluate("Number(document.getElementById('matching').dataset.value)") == both
    assert all(row["label"] == "rain" and "engine" in row["caption"] for row in shown_rows(opened))


def test_paging_and_orders_cover_every_pair_once(browser, page):
    browser.events.clear()  # this page's errors only (the module's browser served earlier tests' pages)
    browser.open(page.as_uri())
    seen = []
    for _ in range(4):
        seen += [row["row"] for row in shown_rows(browser)]
        browser.evaluate("document.getElementById('next').click()")
    assert sorted(seen) == list(range(150))
    for order in ("borderline", "random"):
        browser.evaluate(f"""(() => {{ const select = document.getElementById('order'); select.value = '{order}';
            select.dispatchEvent(new Event('change')); }})()""")
        shown = shown_rows(browser)
        assert len(shown) == 40
        if order == "borderline":
            assert shown[0]["similarity"] == pytest.approx(SIGMA, abs=1e-4)
        else:
            similarities = [row["similarity"] for row in shown]
            assert similarities != sorted(similarities) and similarities != sorted(similarities, reverse=True)
    assert browser.console_errors() == []


def test_page_works_behind_a_plain_http_server(browser, page):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(page.parent))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        browser.events.clear()
        browser.open(f"http://127.0.0.1:{server.server_address[1]}/{PAGE_FILE}")
        duration = browser.evaluate("""(async () => {
            const audio = document.querySelector('#rows audio'); audio.preload = 'metadata'; audio.load();
            await new Promise((ok, fail) => { audio.onloadedmetadata = ok; audio.onerror = () => fail(new Error('no audio')); });
            return audio.duration; })()""", await_promise=True)
        assert duration > 0
        assert len(shown_rows(browser)) == 40
        assert browser.console_errors() == []
    finally:
        server.shutdown()
        server.server_close()


def test_a_sampled_histogram_is_shown_scaled_to_the_whole_search(tmp_path, curated_dir, browser):
    sampled = tmp_path / "sampled"
    shutil.copytree(curated_dir, sampled, ignore=shutil.ignore_patterns("browser"))
    stats = json.loads((sampled / "stats.json").read_text())
    (sampled / "stats.json").write_text(json.dumps({**stats, "pool_clips": 1210, "excluded_training_clips": 10}))
    curated = read_curated_set(sampled)
    browser.open(write_browser(sampled, tmp_path / "page").as_uri())
    set_sigma(browser, 0.5)
    expected = search_pairs_at(curated.histogram, 0.5, histogram_scale(curated.histogram, curated.stats))
    assert counts_shown(browser)["search"] == expected
    assert browser.evaluate("document.getElementById('count-search').textContent").startswith("≈")


def test_an_empty_set_gives_a_page_that_says_so(tmp_path, browser):
    rows = pd.DataFrame({"id": [], "clip_id": [], "audio_path": [], "caption": [], "similarity": [],
                         "method": [], "source_id": [], "best_label": []})
    histogram = SimilarityHistogram.empty()
    histogram.add(torch.linspace(-0.2, 0.4, 500))
    write_improvement_set(ImprovementSet("du", rows, 0.7, histogram), tmp_path / "set", keep_fraction=float("nan"))
    browser.events.clear()
    browser.open(write_browser(tmp_path / "set", tmp_path / "page").as_uri())
    assert browser.evaluate("document.getElementById('rows').textContent") == "no pair matches"
    assert counts_shown(browser) == {"pairs": 0, "clips": 0, "captions": 0, "search": 0}
    assert browser.console_errors() == []


# --------------------------------------------------------------------------- long clips


class LoudnessModel(torch.nn.Module):
    """A stand-in teacher: a window's embedding is its loudness, [rms, 0.05] normalised; captions
    starting with "loud" embed as [1, 0], the others as [0, 1] (quiet windows match them)."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(audio=SimpleNamespace(sample_rate=8000, short_clip_fill="loop"), d_proj=2)
        self.clip_samples = 8000  # 1 s windows
        self.device = torch.device("cpu")

    def encode_audio(self, waveforms, normalize=True):
        rms = waveforms.pow(2).mean(dim=1).sqrt()
        return torch.nn.functional.normalize(torch.stack([rms, torch.full_like(rms, 0.05)], dim=1), dim=1)

    def encode_text(self, captions, normalize=True):
        return torch.tensor([[1.0, 0.0] if caption.startswith("loud") else [0.0, 1.0] for caption in captions])


def test_long_clips_play_the_window_that_matched_their_caption(tmp_path, browser):
    rng = np.random.default_rng(1)
    level = np.repeat([0.02, 0.005, 0.5, 0.03], 8000)  # 4 s: the third second loud, the second quietest
    soundfile.write(tmp_path / "long.wav", level * rng.standard_normal(32000), 8000)
    soundfile.write(tmp_path / "short.wav", 0.3 * rng.standard_normal(7200), 8000)  # 0.9 s: one window
    rows = pd.DataFrame({"id": ["a", "b", "c"], "clip_id": ["long", "long", "short"],
                         "audio_path": [str(tmp_path / f"{clip}.wav") for clip in ("long", "long", "short")],
                         "caption": ["loud engine", "a quiet room", "loud dog"], "similarity": [0.9, 0.8, 0.7],
                         "method": "du", "source_id": ["x", "y", "z"], "best_label": ""})
    write_improvement_set(ImprovementSet("du", rows, 0.5, SimilarityHistogram.empty()), tmp_path / "set")
    windows = matched_windows(read_curated_set(tmp_path / "set").rows, LoudnessModel())
    assert windows.window_seconds == 1.0
    np.testing.assert_array_equal(windows.start_seconds, [2.0, 1.0, np.nan])
    page = write_browser(tmp_path / "set", tmp_path / "page", windows=windows)
    browser.events.clear()
    browser.open(page.as_uri())
    players = browser.evaluate("""Promise.all([...document.querySelectorAll('#rows audio')].map(audio => {
        audio.preload = 'metadata'; audio.load();
        return new Promise((ok, fail) => { audio.onloadedmetadata = () => ok([audio.getAttribute('src'), audio.currentTime]);
                                           audio.onerror = () => fail(new Error('cannot load ' + audio.src)); }); }))""",
                               await_promise=True)
    assert [src.rpartition("/")[2] for src, _ in players] == ["long.wav#t=2,3", "long.wav#t=1,2", "short.wav"]
    assert [time for _, time in players] == [2.0, 1.0, 0.0]  # Chromium starts at the matched window
    assert browser.console_errors() == []


def test_long_clips_are_windowed_with_the_models_own_short_clip_fill(tmp_path, monkeypatch):
    """A LAION-CLAP or transformers teacher completes short windows with silence
    (`short_clip_fill="repeat_then_silence"`): the browser windows its clips as embedding does."""
    import clapcurate.audio

    windowed = []

    def recording_windows(wave, n_samples, short_clip_fill="loop"):
        windowed.append(short_clip_fill)
        return inference_windows(wave, n_samples, short_clip_fill)

    inference_windows = clapcurate.audio.inference_windows
    monkeypatch.setattr(clapcurate.audio, "inference_windows", recording_windows)
    model = LoudnessModel()
    model.config.audio.short_clip_fill = "repeat_then_silence"
    level = np.repeat([0.005, 0.5], 8000)  # 2 s: the second second loud
    soundfile.write(tmp_path / "long.wav", level * np.random.default_rng(2).standard_normal(16000), 8000)
    rows = pd.DataFrame({"audio_path": [str(tmp_path / "long.wav")], "caption": ["loud engine"]})
    assert matched_windows(rows, model).start_seconds.tolist() == [1.0]
    assert windowed == ["repeat_then_silence"]


def test_browse_command_with_a_teacher_starts_long_clips_at_a_window(tmp_path, tiny_clap):
    from clapcurate.model.checkpoints import save

    rng = np.random.default_rng(2)
    soundfile.write(tmp_path / "long.wav", 0.1 * rng.standard_normal(40000), 16000)  # 2.5 s: 3 windows of 1 s
    soundfile.write(tmp_path / "short.wav", 0.1 * rng.standard_normal(12000), 16000)
    rows = pd.DataFrame({"id": ["a", "b"], "clip_id": ["long", "short"],
                         "audio_path": [str(tmp_path / "long.wav"), str(tmp_path / "short.wav")],
                         "caption": ["a dog barks", "rain falls"], "similarity": [0.9, 0.8], "method": "du",
                         "source_id": ["x", "y"], "best_label": ""})
    write_improvement_set(ImprovementSet("du", rows, 0.5, SimilarityHistogram.empty()), tmp_path / "set")
    assert main(["browse", str(tmp_path / "set"), "--teacher", str(save(tiny_clap, tmp_path / "teacher"))]) == 0
    data = json.loads((tmp_path / "set" / "browser" / PAGE_FILE).read_text().split('id="data">')[1].split("</script>")[0])
    assert data["window_seconds"] == 1.0
    assert data["rows"]["start"][0] in (0.0, 1.0, 2.0) and data["rows"]["start"][1] is None


# --------------------------------------------------------------------------- only its own files, only text


def tree(root: Path) -> dict[str, tuple]:
    """Every entry below `root`: its content (bytes, link target, "folder") and a file's modification time."""
    entries = {}
    for path in sorted(root.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            entries[str(path.relative_to(root))] = ("folder", None)
        else:
            content = os.readlink(path) if path.is_symlink() else path.read_bytes()
            entries[str(path.relative_to(root))] = (content, path.lstat().st_mtime_ns)
    return entries


def test_an_existing_folder_under_out_stays_untouched(tmp_path, curated_dir, capsys):
    dataset = tmp_path / "dataset"
    (dataset / AUDIO_DIR).mkdir(parents=True)
    soundfile.write(dataset / AUDIO_DIR / "a.wav", np.zeros(800), 8000)
    (dataset / PAGE_FILE).write_text("the dataset's own page")
    (dataset / "meta.csv").write_text("filename\na.wav\n")
    before = tree(dataset)
    for options in ([], ["--overwrite"]):
        assert main(["browse", str(curated_dir), "--out", str(dataset), *options]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and "did not write" in error or "was not written" in error
        assert tree(dataset) == before  # refused before anything was written, nothing removed
    (dataset / PAGE_FILE).unlink()
    before = tree(dataset)
    assert main(["browse", str(curated_dir), "--out", str(dataset), "--overwrite"]) == 0  # beside the dataset's files
    after = tree(dataset)
    assert {key: after[key] for key in before} == before
    assert main(["browse", str(curated_dir), "--out", str(dataset), "--overwrite", "--audio", "copy"]) == 0
    assert {key: tree(dataset)[key] for key in before} == before  # the earlier page replaced, the rest kept
    assert not any(path.is_symlink() for path in dataset.rglob("*"))


def test_a_second_browse_replaces_only_the_files_the_first_recorded(tmp_path, curated_dir, capsys):
    page = tmp_path / "page"
    assert main(["browse", str(curated_dir), "--out", str(page), "--audio", "copy"]) == 0
    first = tree(page)
    assert set(json.loads((page / RECORD_FILE).read_text())["files"]) == {
        key for key, (content, _) in first.items() if content != "folder"} - {RECORD_FILE}
    assert main(["browse", str(curated_dir), "--out", str(page)]) == 0  # its own earlier page: no --overwrite needed
    second = tree(page)
    assert all(path.is_symlink() for path in (page / AUDIO_DIR).rglob("*.wav"))  # the copies are gone
    assert len(second) == len(first)
    (page / AUDIO_DIR / "000_pool" / "clip000.wav").unlink()
    (page / AUDIO_DIR / "000_pool" / "clip000.wav").write_bytes(b"the user's file now")  # changed since: not its own
    outside = tmp_path / "victim.txt"
    outside.write_text("keep me")
    record = json.loads((page / RECORD_FILE).read_text())
    record["files"].update({"../victim.txt": {"size": 7, "mtime_ns": outside.stat().st_mtime_ns},
                            "/etc/passwd": {"size": 0}, str(outside): {"size": 7}})
    (page / RECORD_FILE).write_text(json.dumps(record))  # a crafted record naming files outside the page
    assert main(["browse", str(curated_dir), "--out", str(page)]) == 2
    assert "clip000.wav" in capsys.readouterr().err
    assert main(["browse", str(curated_dir), "--out", str(page), "--overwrite"]) == 2
    assert (page / AUDIO_DIR / "000_pool" / "clip000.wav").read_bytes() == b"the user's file now"
    assert outside.read_text() == "keep me"


def test_a_page_written_before_pages_recorded_their_files_is_replaced_and_its_links_only_unlinked(tmp_path, curated_dir):
    legacy = tmp_path / "legacy"
    (legacy / AUDIO_DIR).mkdir(parents=True)
    (legacy / AUDIO_DIR / "000_pool").symlink_to(os.path.relpath(curated_dir.parent / "pool", legacy / AUDIO_DIR))
    (legacy / PAGE_FILE).write_text('<title>ADS Improvement-Set</title><script type="application/json" id="data">{}</script>')
    pool = tree(curated_dir.parent / "pool")
    write_browser(curated_dir, legacy)
    assert not (legacy / AUDIO_DIR / "000_pool").is_symlink() and (legacy / RECORD_FILE).is_file()
    assert tree(curated_dir.parent / "pool") == pool  # the link's target untouched
    (legacy / RECORD_FILE).unlink()  # without the record, a folder of this page's kind is not recognised
    with pytest.raises(ClapcurateError, match="did not write"):
        write_browser(curated_dir, legacy)


HOSTILE = ('<script>window.pwned = (window.pwned || 0) + 1</script>', '<img src=x onerror="window.pwned = 1">',
           '"><svg onload="window.pwned = 1">', "'><iframe srcdoc=\"<script>parent.pwned = 1</script>\">")


def hostile_set(root: Path) -> Path:
    """A curated folder with a script-carrying value in every field of the manifest and of stats.json
    (the numbers the page only shows replaced by strings), and audio files with such names."""
    audio = root / "audio"
    audio.mkdir()
    names = [f"{text.replace('/', '')}.wav" for text in HOSTILE]
    for name in names:
        soundfile.write(audio / name, 0.1 * np.ones(800), 8000)
    n = len(HOSTILE)
    rows = pd.DataFrame({"id": HOSTILE, "clip_id": HOSTILE[::-1], "audio_path": [str(audio / name) for name in names],
                         "caption": HOSTILE, "source": HOSTILE, "similarity": np.linspace(0.9, 0.6, n),
                         "method": HOSTILE[0], "source_id": HOSTILE[::-1], "best_label": HOSTILE})
    histogram = SimilarityHistogram.empty()
    histogram.add(torch.linspace(-0.2, 0.9, 100))
    out = root / "set"
    write_improvement_set(ImprovementSet("ads", rows, 0.5, histogram), out)
    stats = json.loads((out / "stats.json").read_text())
    stats = {key: (value if key == "sigma" else HOSTILE[k % n]) for k, (key, value) in enumerate(stats.items())}
    stats.update(keep_fraction=HOSTILE[1], max_captions_per_clip=HOSTILE[2], estimated_precision=HOSTILE[3],
                 selection=HOSTILE[0], benchmark=HOSTILE[1], pool_clips=HOSTILE[2], candidate_captions=HOSTILE[3],
                 top_captions=[{"caption": text, "pairs": text, "share": text} for text in HOSTILE] + [HOSTILE[0]],
                 **{HOSTILE[0]: HOSTILE[1]})
    (out / "stats.json").write_text(json.dumps(stats))
    return out


def test_hostile_values_in_every_field_reach_the_page_as_text_and_run_no_script(tmp_path, browser, capsys):
    curated = hostile_set(tmp_path)
    assert main(["browse", str(curated), "--out", str(tmp_path / "page"), "--audio", "copy"]) == 0
    page = tmp_path / "page" / PAGE_FILE
    assert "<script>window" not in page.read_text() and "<img src" not in page.read_text()
    browser.events.clear()
    browser.open(page.as_uri())
    browser.evaluate("document.getElementById('marks-start').click()")  # the marks column too
    text = browser.evaluate("document.body.innerText")
    for value in HOSTILE:  # shown as the text it is, in the rows, the summary and the hub captions
        assert text.count(value) >= 3
    assert browser.evaluate("document.title") == f"{HOSTILE[0].upper()} Improvement-Set {HOSTILE[1]}"
    assert browser.evaluate("document.querySelectorAll('#rows img, #rows svg, #rows iframe, #rows script').length") == 0
    assert browser.evaluate("document.querySelectorAll('#rows audio').length") == 4  # the hostile file names play
    assert browser.evaluate("window.pwned") is None
    assert browser.console_errors() == []
    # the policy is a second wall: markup injected into the page anyway runs nothing
    browser.evaluate("""(() => { document.body.insertAdjacentHTML('beforeend', '<img src=x onerror="window.pwned = 2">');
        const s = document.createElement('script'); s.textContent = 'window.pwned = 3'; document.body.append(s); })()""")
    browser.evaluate("new Promise(ok => setTimeout(ok, 200))", await_promise=True)
    assert browser.evaluate("window.pwned") is None
    assert any("Content Security Policy" in error for error in browser.console_errors())


def test_non_numbers_where_the_page_computes_are_refused_in_one_line(tmp_path, capsys):
    curated = hostile_set(tmp_path)
    stats = json.loads((curated / "stats.json").read_text())
    (curated / "stats.json").write_text(json.dumps({**stats, "sigma": HOSTILE[0]}))
    assert main(["browse", str(curated)]) == 2
    assert "stats.json: sigma is" in capsys.readouterr().err
    (curated / "stats.json").write_text("{<script>")
    assert main(["browse", str(curated)]) == 2
    assert "stats.json: not JSON" in capsys.readouterr().err
    (curated / "stats.json").write_text(json.dumps(stats))
    rows = pd.read_csv(curated / "improvement_set.csv", dtype=str)
    for value, message in ((HOSTILE[1], "column 'similarity' must hold numbers"), ("inf", "the similarity of row 3 is inf")):
        rows.loc[2, "similarity"] = value
        rows.to_csv(curated / "improvement_set.csv", index=False)
        assert main(["browse", str(curated)]) == 2
        error = capsys.readouterr().err
        assert message in error and len(error.strip().splitlines()) == 1
    assert not (curated / "browser").exists()


# --------------------------------------------------------------------------- hub captions, estimate, marks


def test_hub_captions_are_counted_from_the_pairs_or_taken_from_stats(tmp_path, curated_dir, browser):
    rows = read_curated_set(curated_dir).rows
    stats = json.loads((curated_dir / "stats.json").read_text())
    shares = top_shares(rows["caption"], "caption")
    counts = rows["caption"].value_counts()
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))  # most first, ties by caption
    assert [(entry["caption"], entry["pairs"]) for entry in shares] == ranked[:len(shares)]
    assert ranked[len(shares)][1] == shares[-1]["pairs"]  # the fixture ties across the cut: the order decides
    assert shares[0]["share"] == pytest.approx(counts.max() / len(rows), abs=1e-4)
    assert stats["top_captions"] == shares  # curation lists the hub captions the page would count
    # a set curated before curation listed its hub captions: the page counts them from the pairs
    hubs = "[...document.querySelectorAll('#hub-rows tr')].map(tr => [...tr.cells].map(td => td.textContent))"
    counted = tmp_path / "counted"
    shutil.copytree(curated_dir, counted, ignore=shutil.ignore_patterns("browser"))
    (counted / "stats.json").write_text(json.dumps({key: value for key, value in stats.items() if key != "top_captions"}))
    browser.open(write_browser(counted, tmp_path / "counted_page").as_uri())
    assert browser.evaluate(hubs) == [[e["caption"], str(e["pairs"]), f"{100 * e['share']:.1f}%"] for e in shares]
    assert "Counted from the set's pairs" in browser.evaluate("document.getElementById('hub-note').textContent")
    with_stats = tmp_path / "with_stats"
    shutil.copytree(curated_dir, with_stats, ignore=shutil.ignore_patterns("browser"))
    top = [{"caption": "a pair of open scissors", "pairs": 120, "share": 0.8}, {"caption": "rain", "pairs": 30, "share": 0.2}]
    (with_stats / "stats.json").write_text(json.dumps({**stats, "top_captions": top, "estimated_precision": 0.4321}))
    browser.events.clear()
    browser.open(write_browser(with_stats, tmp_path / "from_stats").as_uri())
    assert browser.evaluate(hubs) == [["a pair of open scissors", "120", "80.0%"], ["rain", "30", "20.0%"]]
    assert "One caption holds 80.0% of the pairs" in browser.evaluate("document.getElementById('hub-note').textContent")
    assert "estimated precision 43.2%" in browser.evaluate("document.getElementById('summary').textContent")
    (with_stats / "stats.json").write_text(json.dumps({**stats, "estimated_precision": None}))
    browser.open(write_browser(with_stats, tmp_path / "from_stats").as_uri())
    assert "estimated precision none" in browser.evaluate("document.getElementById('summary').textContent")
    assert browser.console_errors() == []


def test_wilson_interval_matches_published_values():
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)  # Newcombe (1998), table I
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(8, 10, 0.99)[0] < wilson_interval(8, 10, 0.95)[0]


def test_marking_a_random_sample_shows_its_precision_and_saves_the_marks(tmp_path, page, curated_dir, browser):
    browser.events.clear()  # this page's errors only (the module's browser served earlier tests' pages)
    browser.open(page.as_uri())
    browser.call("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)}, session=None)
    browser.evaluate("document.getElementById('marks-start').click()")
    assert browser.evaluate("document.getElementById('order').value") == "random"
    marked = ["right", "right", "wrong", "unsure", "right", "wrong", "right", "right"]
    shown = shown_rows(browser)
    for position, mark in enumerate(marked):
        browser.evaluate(f"document.querySelectorAll('#rows tr')[{position}].querySelector('button[data-mark={mark}]').click()")
    browser.evaluate("document.querySelectorAll('#rows tr')[7].querySelector('button[data-mark=right]').click()")  # unmark
    browser.evaluate("document.querySelectorAll('#rows tr')[1].querySelector('button[data-mark=wrong]').click()")  # change
    marked[7:], marked[1] = [], "wrong"
    result = browser.evaluate("({...document.getElementById('marks-result').dataset})")
    low, high = wilson_interval(3, 6)
    assert {key: float(value) for key, value in result.items()} == pytest.approx(
        {"right": 3, "wrong": 3, "unsure": 1, "precision": 0.5, "low": low, "high": high}, rel=1e-12)
    assert f"50.0% [{100 * low:.1f}%, {100 * high:.1f}%]" in browser.evaluate("document.getElementById('marks-result').textContent")
    browser.evaluate("document.getElementById('marks-save').click()")
    for _ in range(100):
        saved = list(tmp_path.glob("*.csv"))
        if saved:
            break
        browser.evaluate("new Promise(ok => setTimeout(ok, 50))", await_promise=True)
    assert [path.name for path in saved] == ["ADS_Improvement-Set_esc50_marks.csv"]
    rows = read_curated_set(curated_dir).rows
    sample = read_marks(saved[0], rows["id"])
    assert (sample.right, sample.wrong, sample.unsure) == (3, 3, 1)
    assert sample.interval() == pytest.approx((low, high), rel=1e-12)
    table = pd.read_csv(saved[0], dtype=str)
    assert list(table.columns) == ["id", "clip_id", "caption", "similarity", "mark", "sample_rank"]
    by_id = rows.set_index("id")
    sorted_rows = rows.iloc[np.lexsort((rows["id"].to_numpy(), -rows["similarity"].to_numpy()))]
    expected = [(sorted_rows["id"].iloc[row["row"]], mark) for row, mark in zip(shown[:7], marked)]
    assert list(zip(table["id"], table["mark"])) == expected  # in the order of the random sample
    assert table["sample_rank"].astype(int).tolist() == list(range(1, 8))
    assert table["caption"].tolist() == [by_id.loc[i, "caption"] for i, _ in expected]
    with pytest.raises(ClapcurateError, match="not in the curated set"):
        read_marks(saved[0], rows["id"].iloc[:3])
    assert browser.console_errors() == []


def test_the_study_reads_marks_back_into_its_report(tmp_path, curated_dir):
    from clapcurate.errors import ConfigError
    from clapcurate.study.config import StudyConfig, check_study_inputs
    from clapcurate.study.curation import curated_counts
    from clapcurate.study.tables import marked_precision_table

    out = tmp_path / "study"
    shutil.copytree(curated_dir, out / "curated" / "full_s0" / "ads_esc50", ignore=shutil.ignore_patterns("browser"))
    manifest = out / "curated" / "full_s0" / "ads_esc50" / "improvement_set.csv"
    ids = read_curated_set(manifest).rows["id"]
    marks = pd.DataFrame({"id": ids[:9], "mark": ["right"] * 5 + ["wrong"] * 3 + ["unsure"]})
    marks.to_csv(tmp_path / "marks.csv", index=False)
    config = StudyConfig(seeds=[0], low_resource_fraction=None, marks={"full_s0/ads_esc50": str(tmp_path / "marks.csv")})
    study = SimpleNamespace(out=out, config=config, truth=lambda: None)
    [row] = curated_counts(study, "full", 0, {"ADS/esc50": str(manifest)}, {})
    low, high = wilson_interval(5, 8)
    assert row["folder"] == "full_s0/ads_esc50"
    assert (row["marked_right"], row["marked_wrong"], row["marked_unsure"]) == (5, 3, 1)
    assert (row["marked_precision"], row["marked_low"], row["marked_high"]) == pytest.approx((5 / 8, low, high))
    table = marked_precision_table(pd.DataFrame([row]))
    assert table.to_dict("records") == [{"set": "full_s0/ads_esc50", "pairs": "150", "marked": "5 right, 3 wrong, 1 unsure",
                                         "sample precision % [95% Wilson]": f"62.5 [{100 * low:.1f}, {100 * high:.1f}]",
                                         "ground truth %": ""}]
    with pytest.raises(ValueError, match="marks: 'ads_esc50' is not a curated set's folder"):
        StudyConfig(seeds=[0], marks={"ads_esc50": "marks.csv"})
    with pytest.raises(ConfigError, match="marks.full_s0/du: .* is not a file"):
        check_study_inputs(StudyConfig(seeds=[0], device="cpu", marks={"full_s0/du": str(tmp_path / "none.csv")}))
    marks.assign(id=[f"another set's pair {k}" for k in range(9)]).to_csv(tmp_path / "marks.csv", index=False)
    with pytest.raises(ClapcurateError, match="not in the curated set"):
        curated_counts(study, "full", 0, {"ADS/esc50": str(manifest)}, {})

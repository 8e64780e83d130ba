"""The whole study on a tiny embedded world: every table cell present, resuming recomputes
nothing, the same seed gives the same results."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clapcurate.method import TARGET_NORMS
from clapcurate.data.manifest import read_manifest

from clapcurate.cli import main
from clapcurate.errors import ConfigError
from clapcurate.study import load_study_config, run_study
from clapcurate.study.pipeline import Study
from clapcurate.study.paper import BENCHMARK_TITLES, TABLE2_ROWS, TABLE3_ROWS

TINY_STUDY = """
name: tiny
out_root: {out}
world: {{dir: {world}, seed: 3, scale: 0.01}}
seeds: [0]
variants: true
brackets: [DU, ADS+SL]
lengths: {{benchmark: esc50, steps: [4], models: [SL, ADS, ADS+SL, ADS oracle]}}
eval_batch_size: 128
model:
  audio: {{encoder: cnn6, sample_rate: 16000, window_size: 512, hop_size: 160, mel_bins: 32,
          fmin: 50, fmax: 8000, base_channels: 4, clip_seconds: 1.5, block_dropout: 0.0, head_dropout: 0.0}}
  text: {{name_or_path: {text_encoder}, pooling: cls, max_length: 24}}
  d_proj: 16
  projection_dropout: 0.0
pretrain_audio:
  data: {{batch_size: 16}}
  trainer: {{max_steps: 3, max_epochs: null, val_check_interval: 3, progress_bar: false}}
teacher:
  data: {{batch_size: 16}}
  trainer: {{max_steps: 4, max_epochs: null, val_check_interval: 4, progress_bar: false}}
  text: {{freeze_text_encoder: true, cache_text_features: true}}
student:
  data: {{batch_size: 16}}
  trainer: {{max_steps: 2, max_epochs: null, val_check_interval: 2, progress_bar: false}}
  text: {{freeze_text_encoder: true, cache_text_features: true}}
curation: {{du_sigma: null, du_keep_fraction: 0.05, ds_sigma: 0.2, ads_sigma: null, ads_keep_fraction: 0.1,
           selections: [cosine, csls], selection_k: 3, selection_keep_fraction: 0.2}}
"""


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, tiny_text_encoder_dir, tiny_world):
    root = tmp_path_factory.mktemp("study")
    config_path = root / "tiny.yaml"
    config_path.write_text(TINY_STUDY.format(out=root / "runs", world=tiny_world,
                                             text_encoder=tiny_text_encoder_dir))
    config = load_study_config(config_path)
    out = run_study(config)
    return config_path, config, out


def test_every_table_cell_is_present(tiny_study):
    _, config, out = tiny_study
    results = pd.read_csv(f"{out}/results.csv")
    for teacher, rows in (("full", TABLE2_ROWS), ("10%", TABLE3_ROWS)):
        for model in rows:
            for bench in BENCHMARK_TITLES:
                cell = results[(results.teacher == teacher) & (results.model == model) & (results.benchmark == bench)]
                assert len(cell) == len(config.seeds), (teacher, model, bench)
                assert cell["accuracy"].between(0, 1).all()
                assert (cell["student"] == model).all() and (cell["table"] == "main").all()
                assert (cell["accuracy"] == cell["correct"] / cell["clips"]).all()
    # every evaluated model's per-clip outcomes: results.csv is their sum
    predictions = pd.read_csv(f"{out}/predictions.csv", keep_default_na=False)
    assert list(predictions.columns) == ["teacher", "model", "seed", "benchmark", "clip_id", "recording_id", "label",
                                         "predicted", "correct"]
    summed = predictions.groupby(["teacher", "model", "seed", "benchmark"])["correct"].agg(["sum", "size"])
    keyed = results.set_index(["teacher", "model", "seed", "benchmark"])
    assert len(summed) == len(results)
    assert (summed["sum"] == keyed.loc[summed.index, "correct"]).all()
    assert (summed["size"] == keyed.loc[summed.index, "clips"]).all()
    soft = results[results["soft_labels"].astype(bool)]
    assert set(soft["target_norm"]) == set(TARGET_NORMS) and results[~results["soft_labels"]]["target_norm"].isna().all()
    report = open(f"{out}/report.md").read()
    for title in ("Table 1", "Table 2", "Table 3", "ADS+SL variants", "Rare versus frequent",
                  "Precision of the curated sets", "Wall time per stage", "labelled clips", "| pretrain_audio |"):
        assert title in report
    variants = [f"ADS+SL norm={norm}" for norm in TARGET_NORMS if norm != config.student.loss.target_norm]
    assert len(variants) == 3
    for variant in (*variants, "ADS+SL targets=cached"):
        assert variant in report
    claims = report.split("## The paper's claims")[1].split("##")[0]
    assert "[" in claims and "not training randomness" in claims  # intervals; one seed: what they cover
    sources = {line.split("|")[1].strip(): line for line in claims.splitlines() if line.startswith("| ")}
    assert "the manifest's `recording_id` column" in sources["tut2017"]  # the world's TUT17 names its recordings
    assert all(("the manifest's" in sources[b]) != ("its own recording" in sources[b]) for b in BENCHMARK_TITLES)
    rows = [line for line in claims.splitlines() if line.startswith("| ") and ("beat" in line or "improved" in line)]
    # four claims of the full teacher under the configured (softmax) and the paper's targets, one of the 10% teacher
    assert len(rows) == 4 * 2 + 1
    assert all(cell.split(": ")[-1].strip() in ("replicated", "not replicated", "within noise")
               for line in rows for cell in line.split("|")[3:-1])
    table = pd.read_csv(f"{out}/claims.csv", keep_default_na=False)
    assert set(table["target_norm"]) == {"softmax", "none"}
    assert set(table["verdict"]) <= {"replicated", "not replicated", "within noise"}
    assert (table["low"] <= table["difference"]).all() and (table["difference"] <= table["high"]).all()
    table2 = report.split("## Table 2")[1].split("##")[0]
    assert "| - |" not in table2.split("Gain over")[0].replace("| paper", "")  # our cells are filled


def test_each_curated_set_has_a_browser_linked_from_the_report_and_report_html(tiny_study):
    from pathlib import Path

    _, _, out = tiny_study
    report = open(f"{out}/report.md").read()
    manifests = sorted(Path(out, "curated").glob("*/*/improvement_set.csv"))
    assert len(manifests) == 14  # DU + 3 x (DS, ADS), for both teachers
    for manifest in manifests:
        page = manifest.parent / "browser" / "index.html"
        assert page.is_file()
        assert f"({page.relative_to(out)})" in report
        assert '"right":[' in page.read_text()  # pairs marked from the world's ground truth
    html = open(f"{out}/report.html").read()
    # the plots inline: selection precision curves, gains with intervals, accuracy, validation curves
    assert html.count("data:image/png;base64,") == 4 and "<table>" in html
    assert f'href="{manifests[0].parent.relative_to(out)}/browser/index.html"' in html
    assert "](" not in html  # every markdown link converted


def test_resuming_recomputes_nothing(tiny_study):
    _, config, out = tiny_study
    study = Study(config)
    before = pd.read_csv(f"{out}/results.csv")
    study.run()
    assert study.stages.computed == []
    pd.testing.assert_frame_equal(before, pd.read_csv(f"{out}/results.csv"))


def test_same_seed_gives_identical_results(tiny_study):
    _, config, out = tiny_study
    first = pd.read_csv(f"{out}/results.csv")
    # forget the students, their evaluations and the report (teachers and curation stay)
    stages = Study(config).stages.root
    for marker in stages.glob("*.json"):
        if marker.name.startswith(("student__", "eval__")) and "teacher" not in marker.name:
            marker.unlink()
    shutil.rmtree(f"{out}/students")
    study = Study(config)
    study.run()
    assert any(name.startswith("student/") for name in study.stages.computed)
    pd.testing.assert_frame_equal(first, pd.read_csv(f"{out}/results.csv"))


def test_a_student_fitted_by_two_processes_gives_the_same_results_and_each_stage_runs_once(tiny_study, capfd):
    """The student's fit runs as `clapcurate fit-student` in a child process whose Lightning starts
    the second rank: the study's own process runs every other stage, once. The model has no
    dropout (each rank draws its own masks), the student's BatchNorm is frozen: two processes
    train as one does on the same global batch, up to float rounding, which leaves every
    zero-shot prediction as it was."""
    import copy
    import dataclasses
    import io

    from rich.console import Console

    _, config, out = tiny_study
    before = pd.read_csv(f"{out}/results.csv")
    redo = ["student/full_s0/SL", *(f"eval/full_s0/SL/{bench}" for bench in BENCHMARK_TITLES)]
    for name in redo:
        Path(out, "stages", name.replace("/", "__") + ".json").unlink()
    two = copy.deepcopy(config)  # the processes a fit uses are no setting of its results: resumed
    two.student.trainer = dataclasses.replace(two.student.trainer, accelerator="cpu", devices=2, strategy="ddp")
    log = io.StringIO()
    study = Study(two, console=Console(file=log, width=200))
    capfd.readouterr()
    study.run()
    children = capfd.readouterr()
    assert sorted(study.stages.computed) == sorted(redo)
    assert all(log.getvalue().count(f"{name} ...") == 1 for name in redo)  # "[stage] " is rich markup
    assert not any(f"{name} ..." in children.out + children.err for name in redo)  # the ranks ran the fit alone
    assert json.loads(Path(out, "students", "full_s0", "SL", "summary.json").read_text())["processes"] == 2
    pd.testing.assert_frame_equal(before, pd.read_csv(f"{out}/results.csv"))


def test_a_stage_whose_outputs_are_gone_runs_again_and_says_why(tiny_study):
    """A deleted embedding shard and a deleted curated set: their stages' markers prove nothing,
    those two stages run again (to the same bytes), the others are kept."""
    import io

    from rich.console import Console

    _, config, out = tiny_study
    shard = Path(out, "embeddings", "full_s0", "pool_audio", "part-00000.npy")
    curated = Path(out, "curated", "full_s0", "du")
    embeddings, pairs = shard.read_bytes(), (curated / "improvement_set.csv").read_bytes()
    shard.unlink()
    shutil.rmtree(curated)
    log = io.StringIO()
    study = Study(config, console=Console(file=log, width=400))
    study.run()
    assert sorted(study.stages.computed) == ["curate/full_s0/du", "embed/full_s0"]
    assert f"embed/full_s0: {shard} is missing; running it again" in log.getvalue()
    assert f"curate/full_s0/du: its output {curated / 'improvement_set.csv'} is missing" in log.getvalue()
    assert shard.read_bytes() == embeddings
    assert (curated / "improvement_set.csv").read_bytes() == pairs


def test_a_deleted_teacher_is_fitted_again_to_the_same_weights_and_its_embeddings_stay_valid(tiny_study):
    """A deleted teacher best/: its marker proves nothing, the teacher is fitted again to the same
    weights (and the same checkpoint hash, which its embedding folders recorded, whatever the
    process tokenized before), and nothing downstream is recomputed."""
    import io

    from rich.console import Console
    from safetensors.torch import load_file

    _, config, out = tiny_study
    best = Path(out, "teachers", "full_s0", "best")
    weights = load_file(best / "model.safetensors")
    shutil.rmtree(best)
    log = io.StringIO()
    study = Study(config, console=Console(file=log, width=400))
    study.run()
    assert study.stages.computed == ["teacher/full_s0"]
    assert f"teacher/full_s0: its output {best} is missing; running it again" in log.getvalue()
    again = load_file(best / "model.safetensors")
    assert weights.keys() == again.keys() and all((weights[key] == again[key]).all() for key in weights)


def test_a_stage_finished_meanwhile_by_another_process_keeps_its_marker(tmp_path):
    from clapcurate.study.stages import StageRunner

    first, second = StageRunner(tmp_path), StageRunner(tmp_path)

    def racing():  # while this process computes, another one finishes the same stage
        assert second.run("teacher/full_s0", lambda: "theirs") == "theirs"
        return "ours"

    assert first.run("teacher/full_s0", racing) == "theirs"
    assert json.loads((tmp_path / "stages" / "teacher__full_s0.json").read_text())["result"] == "theirs"
    assert first.computed == [] and second.computed == ["teacher/full_s0"]
    assert [p.name for p in (tmp_path / "stages").iterdir()] == ["teacher__full_s0.json"]  # no partial file left


def test_a_study_under_a_launcher_of_several_processes_is_refused(tiny_study, monkeypatch):
    _, config, _ = tiny_study
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="a study runs as one process"):
        run_study(config)


def test_study_config_errors_name_the_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nseedz: [1]\n")
    with pytest.raises(ConfigError, match="seedz"):
        load_study_config(bad)
    bad.write_text("name: x\ndata: {captioned: [a], pool: b, benchmarks: {birds: {data: c, templat: x}}}\n")
    with pytest.raises(ConfigError, match="data.benchmarks.birds.templat: did you mean data.benchmarks.birds.template"):
        load_study_config(bad)
    (tmp_path / "pairs.csv").write_text("audio_path,caption\na.wav,a dog barks\n")
    bad.write_text(f"name: x\nout_root: {tmp_path / 'runs'}\ndata: {{captioned: [{tmp_path / 'pairs.csv'}], "
                   f"pool: folder:{tmp_path}, benchmarks: {{birds: classes:nowhere}}}}\n")
    assert main(["study", str(bad)]) == 2  # any name is a task; its data must exist
    assert "data.benchmarks.birds: nowhere does not exist" in capsys.readouterr().err


def test_a_world_of_another_seed_is_refused(tiny_study, tmp_path):
    config_path, _, out = tiny_study
    text = config_path.read_text().replace("seed: 3, scale: 0.01", "seed: 4, scale: 0.01")
    text = text.replace(str(out).rsplit("/", 1)[0], str(tmp_path / "runs2"))
    other = tmp_path / "other.yaml"
    other.write_text(text)
    with pytest.raises(ConfigError, match="seed 3"):
        run_study(load_study_config(other))


def test_resuming_with_other_settings_is_refused_but_more_seeds_are_not(tiny_study):
    import copy

    _, config, out = tiny_study
    changed = copy.deepcopy(config)
    changed.teacher.trainer.max_steps = 5
    changed.curation.du_keep_fraction = 0.5
    with pytest.raises(ConfigError, match=r"curation\.du_keep_fraction, teacher\.trainer\.max_steps changed"):
        Study(changed)
    more = copy.deepcopy(config)
    more.seeds = [0, 1]
    more.variants = False
    more.curation.selections = ["cosine", "csls"]
    Study(more)  # adding seeds or selection criteria (or dropping variants) resumes the same stages
    more.curation.selection_k = config.curation.selection_k + 1  # the criteria's stages hold their k
    with pytest.raises(ConfigError, match=r"curation\.selection_k changed"):
        Study(more)


def test_a_run_folder_without_recorded_settings_is_refused(tiny_study, tmp_path):
    import copy

    _, config, _ = tiny_study
    other = copy.deepcopy(config)
    other.out_root = str(tmp_path)
    (tmp_path / other.name / "stages").mkdir(parents=True)
    (tmp_path / other.name / "stages" / "teacher__full_s0.json").write_text('{"result": "x", "seconds": 1}')
    with pytest.raises(ConfigError, match="not recorded"):
        Study(other)


# What each student of the study trains on and replays, written out from the paper (Sec. 2.3 and
# Tables 2-3), not from the code's own method table: (Improvement-Set, replay set, soft labels).
EXPECTED_STUDENTS = {
    "SL": ("train", "train", True),
    "DU": ("du", "train", False),
    "DU_SL": ("du", "train", True),
    "DS": ("ds", "train", False),
    "DS_SL": ("ds", "train", True),
    "ADS": ("ads", "ds", False),
    "ADS_SL": ("ads", "ds", True),
}


def test_each_student_trains_on_its_set_and_replays_what_the_paper_says(tiny_study):
    _, config, out = tiny_study
    students = sorted(Path(out, "students").glob("*/*/config.json"))
    seen = set()
    for path in students:
        teacher_dir, name = path.parent.parent.name, path.parent.name
        student = json.loads(path.read_text())
        for suffix in ("_esc50", "_urbansound8k", "_tut2017"):
            if name.endswith(suffix):
                model, bench = name[: -len(suffix)], suffix[1:]
                break
        else:
            model, bench = name, None
        length = re.fullmatch(r"(.+)_(\d+)", model)  # a training-length student: `{model}_{steps}`
        if length:
            model = length.group(1)
            assert student["trainer"]["max_steps"] == int(length.group(2))
        arm = next((arm for arm in ("oracle", "shuffled") if model.endswith(f"_{arm}")), None)
        model = model.removesuffix(f"_{arm}") if arm else model
        selection = re.fullmatch(r"(.+)_selection-(\w+)", model)  # a selection criterion's student
        model = selection.group(1) if selection else model
        if model not in EXPECTED_STUDENTS:  # the variants: ADS+SL, and SL and DS+SL under the paper's targets
            base = next(m for m in ("ADS_SL", "DS_SL", "SL") if model.startswith(f"{m}_"))
            assert teacher_dir.startswith("full") and (base == "ADS_SL" or model == f"{base}_norm-none"), model
            if base != "ADS_SL":
                assert student["loss"]["target_norm"] == "none"
            model = base
        curated_set, replayed, soft = EXPECTED_STUDENTS[model]
        low = not teacher_dir.startswith("full")
        train = Path(out, "manifests", "train_low10_s0.csv" if low else "train.csv")

        def set_path(kind):
            if kind == "train":
                return train
            return Path(out, "curated", teacher_dir, kind if kind == "du" else f"{kind}_{bench}", "improvement_set.csv")

        expected_set = set_path(curated_set)
        if arm:  # a bracket: its own set beside the curated one, the same replay and loss
            expected_set = Path(out, "brackets", teacher_dir, expected_set.parent.name, f"{arm}.csv")
        if selection:  # the criterion's best pairs at the curated set's size, the same replay and loss
            expected_set = Path(out, "selections", teacher_dir, f"{expected_set.parent.name}_{selection.group(2)}",
                                "matched", "improvement_set.csv")
        assert Path(student["improvement_set"]) == expected_set, name
        assert Path(student["replay_manifest"]) == set_path(replayed), name
        assert (student["loss"]["kind"] == "soft_label") == soft, name
        assert student["teacher"] == str(Path(out, "teachers", teacher_dir, "best"))
        seen.add((low, model))
    assert {m for low, m in seen if not low} == set(EXPECTED_STUDENTS)
    assert {m for low, m in seen if low} == {"DU", "ADS", "ADS_SL"}


def test_the_low_resource_teacher_curates_ds_from_its_own_pairs(tiny_study):
    _, config, out = tiny_study
    own = pd.read_csv(Path(out, "manifests", "train_low10_s0.csv"), dtype=str, keep_default_na=False)
    everything = pd.read_csv(Path(out, "manifests", "train.csv"), dtype=str, keep_default_na=False)
    assert len(own) == round(0.1 * len(everything))
    trained_on = pd.read_csv(Path(out, "teachers", "low10_s0", "train_pairs.csv"), dtype=str, keep_default_na=False)
    assert set(trained_on["id"]) <= set(own["id"])
    for bench in ("esc50", "urbansound8k", "tut2017"):
        ds = pd.read_csv(Path(out, "curated", "low10_s0", f"ds_{bench}", "improvement_set.csv"), dtype=str,
                         keep_default_na=False)
        assert set(ds["source_id"]) <= set(own["id"]), bench
    full_ds = pd.read_csv(Path(out, "curated", "full_s0", "ds_esc50", "improvement_set.csv"), dtype=str,
                          keep_default_na=False)
    assert not set(full_ds["source_id"]) <= set(own["id"])  # the full teacher draws from every pair


@pytest.mark.parametrize("text, key", [
    ("teacher: {optim: {lrr: 0.1}}", "teacher.optim.lrr"),
    ("student: {loss: {betta: 0.3}}", "student.loss.betta"),
    ("low_resource_teacher: {trainer: {max_stepz: 3}}", "low_resource_teacher.trainer.max_stepz"),
    ("pretrain_audio: {data: {batchsize: 3}}", "pretrain_audio.data.batchsize"),
    ("model: {audio: {encoder: cnn99}}", "model.audio"),
    ("teacher: {seed: 4}", "teacher.seed is set by the study"),
    ("student: {improvement_set: x.csv}", "student.improvement_set is set by the study"),
    ("teacher: {trainer: {device: cpu}}", "teacher.trainer.device is set by the study"),
    ("device: gpu", "device must be auto, cpu, cuda or cuda:N"),
    ("student: {data: {num_workers: many}}", "student.data: num_workers must be auto or a number"),
    ("curation: {selections: [cosine, hubless]}", "curation: selections: 'hubless' is not a selection"),
])
def test_a_study_config_is_validated_completely_when_loaded(tmp_path, text, key):
    path = tmp_path / "study.yaml"
    path.write_text(f"name: x\nworld: {{dir: w}}\n{text}\n")
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_study_config(path)


def test_report_html_converts_the_reports_markdown_and_inlines_its_plots(tmp_path):
    from clapcurate.study.rendering import markdown_to_html

    (tmp_path / "plot.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    page = markdown_to_html("# Study `x`\n\nSeeds: [0]; a < b, **bold** [DU all (full)](curated/du/browser/index.html)"
                            "\n\n| model | acc |\n|---|---|\n| DU | 1.0 |\n\n- one\n- `two`\n\n![acc](plot.png)",
                            tmp_path).replace("\n", "")
    assert "<h1>Study <code>x</code></h1>" in page
    assert "<p>Seeds: [0]; a &lt; b, <strong>bold</strong> <a href=\"curated/du/browser/index.html\">DU all (full)</a></p>" in page
    assert "<table><thead><tr><th>model</th><th>acc</th></tr></thead><tbody><tr><td>DU</td><td>1.0</td></tr>" in page
    assert "<ul><li>one</li><li><code>two</code></li></ul>" in page
    assert '<img src="data:image/png;base64,iVBORw0KGgo=" alt="acc"' in page


def test_brackets_hold_right_pairs_and_the_curated_clips_and_captions_shuffled(tiny_study):
    from clapcurate.study.groundtruth import WorldTruth

    _, config, out = tiny_study
    truth = WorldTruth(config.world.dir)
    folders = sorted(Path(out, "brackets").glob("*/*"))
    assert {f.name for f in folders} >= {"du", "ads_esc50", "ads_urbansound8k", "ads_tut2017"}
    for folder in folders:
        curated = read_manifest(Path(out, "curated", folder.parent.name, folder.name, "improvement_set.csv"))
        oracle, shuffled = read_manifest(folder / "oracle.csv"), read_manifest(folder / "shuffled.csv")
        assert len(oracle) <= len(curated) and truth.pair_is_right(oracle, Path(out, "manifests", "train.csv"), None).all()
        assert sorted(shuffled["clip_id"]) == sorted(curated["clip_id"])
        assert sorted(shuffled["caption"]) == sorted(curated["caption"])
        if curated["caption"].nunique() > 3:
            assert (shuffled["caption"].to_numpy() != curated["caption"].to_numpy()).any()
    results = pd.read_csv(Path(out, "results.csv"), keep_default_na=False)
    brackets = results[results["table"] == "bracket"]
    assert {"DU oracle", "DU shuffled", "ADS+SL oracle", "ADS+SL shuffled"} <= set(brackets["model"])
    assert set(brackets["bracket"]) == {"oracle", "shuffled"}
    report = open(f"{out}/report.md").read()
    section = report.split("## Brackets")[1].split("\n## ")[0]
    assert section.count("| full |") == 3 + 3 and "position" in section  # DU on each benchmark, ADS+SL on its own


def test_accuracy_plot_has_one_panel_per_evaluated_benchmark(tmp_path):
    import matplotlib.image

    from clapcurate.study.figures import plot_accuracy

    results = pd.DataFrame({"teacher": "full", "model": ["teacher", "DU", "teacher", "DU"], "seed": 0,
                            "benchmark": ["urbansound8k", "urbansound8k", "esc50", "esc50"],
                            "accuracy": [0.5, 0.55, 0.4, 0.42]})
    assert plot_accuracy(results, tmp_path / "two.png") == ["esc50", "urbansound8k"]
    assert plot_accuracy(results[results.benchmark == "esc50"], tmp_path / "one.png") == ["esc50"]
    width = {name: matplotlib.image.imread(tmp_path / f"{name}.png").shape[1] for name in ("one", "two")}
    assert width == {"one": 500, "two": 1000}  # 5 inches per panel at 100 dpi


def test_table1_shows_the_pairs_before_the_per_clip_cap_when_it_bit():
    from clapcurate.study.paper import ReportedTask
    from clapcurate.study.tables import counts_table

    tasks = [ReportedTask("esc50", "ESC-50", "esc50", 50)]
    counts = pd.DataFrame([dict(teacher="full", seed=0, method="DU", benchmark="all", pairs=8, pairs_at_sigma=367),
                           dict(teacher="full", seed=0, method="DS", benchmark="esc50", pairs=45, pairs_at_sigma=45)])
    table = counts_table(counts, "full", tasks).set_index("")
    assert table.loc["ours", "DU"] == "8" and table.loc["ours, >= sigma before the per-clip cap", "DU"] == "367"
    uncapped = counts_table(counts.assign(pairs_at_sigma=counts["pairs"]), "full", tasks)
    assert list(uncapped[""]) == ["ours", "paper"]


def test_training_length_is_measured_for_one_benchmark(tiny_study):
    _, config, out = tiny_study
    for name in ("SL_4", "ADS_4_esc50", "ADS_SL_4_esc50", "ADS_oracle_4_esc50"):
        metrics = pd.read_csv(Path(out, "students", "full_s0", name, "metrics.csv"))
        assert metrics["step"].max() == 3  # 4 steps instead of the main students' 2
        assert json.loads(Path(out, "students", "full_s0", name, "config.json").read_text())["trainer"]["max_steps"] == 4
    report = open(f"{out}/report.md").read()
    section = report.split("## Training length")[1].split("\n## ")[0]
    assert "| model | 2 steps | 4 steps |" in section
    assert all(f"| {name} |" in section for name in ("SL", "ADS", "ADS+SL", "ADS oracle"))


def test_a_setting_added_by_a_later_version_at_its_default_is_no_change():
    from clapcurate.study.resume import changed_keys

    old = {"student": {"data": {"batch_size": 16}}, "seed": 1}
    defaults = {"student": {"data": {"batch_size": 128, "min_pairs_warning": 64}}, "seed": 0}
    new_default = {"student": {"data": {"batch_size": 16, "min_pairs_warning": 64}}, "seed": 1}
    assert changed_keys(old, new_default, defaults) == []
    new_other = {"student": {"data": {"batch_size": 16, "min_pairs_warning": 8}}, "seed": 2}
    assert changed_keys(old, new_other, defaults) == ["seed", "student.data.min_pairs_warning"]
    assert changed_keys({**old, "gone": 1}, new_default, defaults) == ["gone"]


def test_the_report_measures_how_peaked_each_kind_of_soft_target_is(tiny_study):
    _, _, out = tiny_study
    section = open(f"{out}/report.md").read().split("## How peaked the soft targets are")[1].split("\n## ")[0]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| ") and "target_norm" not in line]
    assert {cells[0].strip() for cells in rows} == {"none", "after_mix", "before_mix", "softmax"}
    for cells in rows:
        mass = [float(c) for c in cells[1:]]
        assert all(m >= 0 for m in mass)
        if cells[0].strip() != "none":  # normalised targets: a row's mass is 1
            assert abs(sum(mass) - 1) < 0.01


def test_target_mass_counts_alike_items_by_their_events():
    import numpy as np

    from clapcurate.study.targets import target_mass

    emb = np.eye(4, dtype=np.float32)[[0, 0, 1, 1, 2, 2, 3, 3]]  # pairs of identical clips
    events = [frozenset({k}) for k in (0, 0, 1, 1, 2, 2, 3, 3)]
    table = target_mass(emb, events, beta=0.5, target_scale=10.0, batch_size=8, batches=2).set_index("target_norm")
    # before_mix: a row's cosine mass is split between itself and its identical twin
    assert abs(table.loc["before_mix", "self"] - 0.75) < 1e-6 and abs(table.loc["before_mix", "alike items"] - 0.25) < 1e-6
    assert table.loc["before_mix", "other items"] < 1e-6 and abs(table.attrs["alike_share"] - 1 / 7) < 1e-6


def test_on_the_tiny_world_an_oracle_student_beats_a_shuffled_one_and_the_claim_is_replicated(tiny_study):
    """The positive control: on the world's benchmarks, a student predicting every true label
    against one predicting shuffled labels is a replicated claim on each benchmark and their mean,
    with intervals over the benchmark's recordings."""
    import numpy as np

    from clapcurate.data.manifest import recording_ids
    from clapcurate.study.statistics import POOLED
    from clapcurate.study.tables import claim_rows

    _, _, out = tiny_study
    rng = np.random.default_rng(0)
    rows = []
    for bench in BENCHMARK_TITLES:
        manifest = read_manifest(Path(out, "manifests", f"bench_{bench}.csv"))
        labels = manifest["label"].to_numpy()
        recordings = recording_ids(manifest).to_numpy()
        for student, predicted in (("teacher", rng.permutation(labels)), ("ADS+SL", labels)):
            correct = predicted == labels
            rows.append({"teacher": "full", "model": student, "student": student, "seed": 0, "benchmark": bench,
                         "bracket": "", "table": "main", "soft_labels": student != "teacher",
                         "target_norm": "softmax" if student != "teacher" else "", "teacher_targets": "online",
                         "accuracy": correct.mean(), "outcomes": correct, "clip_ids": manifest["id"].to_numpy(),
                         "recordings": recordings})
    claims = claim_rows(pd.DataFrame(rows), "10%", list(BENCHMARK_TITLES))
    assert dict(zip(claims["benchmark"], claims["verdict"])) == {b: "replicated" for b in (*BENCHMARK_TITLES, POOLED)}
    assert (claims["low"] > 0).all()


def test_selection_criteria_are_compared_at_matched_sizes(tiny_study):
    """curation.selections: each criterion's DU and ADS sets, ranked by its score, give a precision
    curve per set and teacher from the ground truth; the criteria other than cosine train DU and
    ADS+SL students on their best pairs at the cosine sets' sizes, reported with gains and
    bracket positions."""
    from clapcurate.study.groundtruth import WorldTruth

    _, config, out = tiny_study
    truth = WorldTruth(config.world.dir)
    train = Path(out, "manifests", "train.csv")
    curves = pd.read_csv(Path(out, "selection_curves.csv"))
    sets = {"DU", "ADS/esc50", "ADS/urbansound8k", "ADS/tut2017"}
    assert set(curves.groupby(["teacher", "set", "selection"]).groups) == {
        (teacher, s, selection) for teacher in ("full", "10%") for s in sets for selection in ("cosine", "csls")}
    for selection in ("cosine", "csls"):
        folder = Path(out, "selections", "full_s0", f"ads_esc50_{selection}")
        ranked = read_manifest(folder / "improvement_set.csv").sort_values(["similarity", "id"], ascending=[False, True])
        curve = curves[(curves.teacher == "full") & (curves.set == "ADS/esc50") & (curves.selection == selection)]
        right = truth.pair_is_right(ranked, train, None)
        assert len(curve) == len(ranked) > 0
        assert curve["precision"].to_numpy() == pytest.approx(right.cumsum() / (1 + np.arange(len(right))))
        matched = read_manifest(folder / "matched" / "improvement_set.csv")
        own = read_manifest(Path(out, "curated", "full_s0", "ads_esc50", "improvement_set.csv"))
        assert len(matched) == min(len(own), len(ranked)) and list(matched["id"]) == list(ranked["id"][:len(matched)])
    # the cosine ranking's best pairs at the study's size are the study's own set
    cosine = read_manifest(Path(out, "selections", "full_s0", "du_cosine", "matched", "improvement_set.csv"))
    assert set(cosine["id"]) == set(read_manifest(Path(out, "curated", "full_s0", "du", "improvement_set.csv"))["id"])
    results = pd.read_csv(Path(out, "results.csv"), keep_default_na=False)
    evaluations = results[results.table == "selection"]
    assert set(evaluations["selection"]) == {"csls"}
    for teacher in ("full", "10%"):
        for selection in ("csls",):
            assert len(evaluations[(evaluations.teacher == teacher) & (evaluations.model == f"DU selection={selection}")]) == 3
            assert set(evaluations[(evaluations.teacher == teacher)
                                   & (evaluations.model == f"ADS+SL selection={selection}")]["benchmark"]) == set(BENCHMARK_TITLES)
    section = open(f"{out}/report.md").read().split("## Selection criteria")[1].split("\n## ")[0]
    assert "selection_precision.png" in section and "position" in section and "minus cosine" in section
    students = [line.split(" | ")[:4] for line in section.splitlines()
                if line.startswith(("| full | DU | ", "| full | ADS+SL | ")) and line.count(" | ") == 6]
    assert len(students) == 2 * 3 * 2  # DU and ADS+SL, each benchmark, each criterion
    assert {tuple(cells[1:]) for cells in students} == {
        (model, BENCHMARK_TITLES[bench], selection) for model in ("DU", "ADS+SL") for bench in BENCHMARK_TITLES
        for selection in ("cosine", "csls")}


def test_a_students_model_card_gives_its_gains_over_its_teacher_as_the_report_does(tiny_study, tmp_path):
    """A study's student exported: its card's gains over the teacher of its seed, per benchmark it
    was evaluated on, are the report's gain table cells (one seed), read from the study's CSVs."""
    import shutil

    from clapcurate.export import model_card

    _, _, out = tiny_study
    results = pd.read_csv(Path(out, "results.csv"), keep_default_na=False)
    gains = open(f"{out}/report.md").read().split("## Table 2")[1].split("Gain over")[1].split("\n## ")[0]
    report = {line.split(" | ")[0][2:]: [cell.strip() for cell in line.split("|")[2:-1]]
              for line in gains.splitlines() if line.startswith("| ") and not line.startswith("| model")}
    titles = list(BENCHMARK_TITLES)  # the gain table's columns
    for folder, model, benchmarks in (("DU", "DU", titles), ("ADS_SL_esc50", "ADS+SL", ["esc50"])):
        checkpoint = Path(out, "students", "full_s0", folder, "last")
        card = model_card(str(checkpoint), "hf", "exported", [])
        assert f"this model is `{model}`, a student of the `full` teacher of seed 0" in card
        rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in card.split("## Evaluation")[1].splitlines()
                if line.startswith("| ") and not line.startswith("| benchmark")}
        assert sorted(rows) == sorted(benchmarks)
        for bench in benchmarks:
            evaluated = results[(results.teacher == "full") & (results.seed == 0) & (results.benchmark == bench)]
            student, teacher = (evaluated[evaluated.model == name].iloc[0] for name in (model, "teacher"))
            clips, recordings, teacher_accuracy, accuracy, gain = rows[bench][1:6]
            assert int(clips) == student["clips"] and 0 < int(recordings) <= int(clips)
            assert float(teacher_accuracy) == round(100 * teacher["accuracy"], 1)
            assert float(accuracy) == round(100 * student["accuracy"], 1)
            assert gain.rstrip(" |") == report[model][titles.index(bench)]
    # moved with its study, the student still finds it; copied out of it, or a teacher, it has no gains
    moved = tmp_path / "moved"
    shutil.copytree(out, moved, ignore=shutil.ignore_patterns("features", "benchmark_features", "curated", "selections"))
    assert "a student of the `full` teacher" in model_card(str(moved / "students/full_s0/DU/last"), "hf", "x", [])
    alone = shutil.copytree(Path(out, "students", "full_s0", "DU"), tmp_path / "alone")
    assert "No evaluation of this model was recorded." in model_card(str(alone / "last"), "hf", "x", [])
    teacher_card = model_card(str(Path(out, "teachers", "full_s0", "best")), "hf", "x", [])
    assert "lists no student evaluation of this checkpoint" in teacher_card


def test_a_study_folder_whose_results_name_no_model_gives_no_gains_and_says_why(tmp_path):
    """A results.csv without the `model` column (or the `checkpoint` one): the card says what is
    missing and that running the study again writes it, instead of failing."""
    from clapcurate.export import study_evaluation

    checkpoint = tmp_path / "students" / "full_s0" / "DU" / "last"
    checkpoint.mkdir(parents=True)
    pd.DataFrame({"teacher": ["full"], "method": ["DU"], "seed": [0], "benchmark": ["esc50"],
                  "checkpoint": ["students/full_s0/DU/last"]}).to_csv(tmp_path / "results.csv", index=False)
    pd.DataFrame(columns=["teacher", "method", "seed", "benchmark"]).to_csv(tmp_path / "predictions.csv", index=False)
    evaluation = study_evaluation(checkpoint)
    assert evaluation.study == tmp_path and not evaluation.gains
    assert "no `model` column" in evaluation.missing and "running the study again" in evaluation.missing
    pd.read_csv(tmp_path / "results.csv").drop(columns="checkpoint").to_csv(tmp_path / "results.csv", index=False)
    assert "names no checkpoint per evaluation" in study_evaluation(checkpoint).missing

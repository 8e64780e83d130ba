"""`clapcurate evaluate` on the user's own tasks: accuracy with its interval, per-class counts,
paired differences identical to the study's, and the task specs (`csv:`, `classes:`, names,
templates, label words, multi-label rows refused)."""

import io
import json

import numpy as np
import pandas as pd
import pytest
import torch

from clapcurate.cli import main
from clapcurate.intervals import accuracy_bootstrap
from clapcurate.model import checkpoints
from clapcurate.data.manifest import recording_ids
from clapcurate.study.statistics import paired_interval
from clapcurate.tasks import TaskSpec, parse_task, read_task
from clapcurate.zeroshot import evaluate


@pytest.fixture()
def two_models(tiny_clap, tmp_path):
    """A tiny model and a perturbed copy (its audio projection moved), saved as checkpoints."""
    a = checkpoints.save(tiny_clap, tmp_path / "teacher")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in tiny_clap.audio_projection.parameters():
            parameter.add_(0.5 * torch.randn(parameter.shape, generator=generator))
    b = checkpoints.save(tiny_clap, tmp_path / "student")
    return a, b


def test_two_models_give_the_studys_paired_interval_and_per_class_counts_sum_up(two_models, user_tasks, capsys):
    a, b = two_models
    argv = ["evaluate", "--model", f"teacher={a}", "--model", f"student={b}", "--dataset",
            f"machines={user_tasks['machines']}", "--dataset", user_tasks["birds"], "--per-class", "--top-k", "2"]
    assert main([*argv, "--format", "json"]) == 0
    tasks = {t["task"]: t for t in json.loads(capsys.readouterr().out)["tasks"]}
    assert set(tasks) == {"machines", "birds"}
    assert tasks["machines"]["chance_percent"] == 50.0 and tasks["birds"]["chance_percent"] == pytest.approx(100 / 3)
    assert tasks["birds"]["paper_benchmark"] is None
    for name, task in tasks.items():
        spec = TaskSpec(user_tasks[name], name=name)
        loaded = read_task(spec)
        teacher, student = task["models"]
        for entry in (teacher, student):
            per_class = pd.DataFrame(entry["per_class"])
            assert per_class["label"].tolist() == loaded.labels
            assert per_class["clips"].sum() == entry["clips"] == len(loaded.manifest)
            assert per_class["correct"].sum() == entry["correct"]
            assert entry["accuracy_percent"] == pytest.approx(100 * entry["correct"] / entry["clips"])
            low, high = entry["interval_percent"]
            assert low <= entry["accuracy_percent"] <= high
        # the study's interval: results rows with their per-clip outcomes, as `outputs.load_results`
        # reads them back (clips of one recording resampled together)
        rows = []
        for model, path in (("teacher", a), ("student", b)):
            clips = evaluate(checkpoints.load(path), loaded.manifest, labels=loaded.labels).predictions
            rows.append({"teacher": "full", "model": model, "seed": 0, "benchmark": name,
                         "outcomes": (clips["label"] == clips["predicted"]).to_numpy(),
                         "clip_ids": clips["id"].astype(str).to_numpy(),
                         "recordings": recording_ids(loaded.manifest).loc[clips["id"].astype(str)].to_numpy()})
        assert (len(set(rows[0]["recordings"])) < len(loaded.manifest)) == loaded.has_recordings
        study = paired_interval(pd.DataFrame(rows), "full", "student", "teacher", name)
        versus = student["versus_first"]
        assert versus["baseline"] == "teacher" and versus["clips"] == len(loaded.manifest)
        assert versus["difference_points"] == study.difference
        assert versus["interval_points"] == [study.low, study.high]
    assert main([*argv, "--format", "csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out), keep_default_na=False)
    overall = table[table["class"] == ""]
    assert overall[["task", "model"]].values.tolist() == [["machines", "teacher"], ["machines", "student"],
                                                          ["birds", "teacher"], ["birds", "student"]]
    for (task, model), group in table[table["class"] != ""].groupby(["task", "model"]):
        row = overall[(overall["task"] == task) & (overall["model"] == model)].iloc[0]
        assert group["clips"].sum() == row["clips"] and group["correct"].sum() == row["correct"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "on machines: 2 classes, chance 50.0%" in out and "on birds: 3 classes, chance 33.3%" in out
    assert "student - teacher =" in out and "wood_pigeon" in out


def test_accuracy_interval_resamples_recordings():
    correct = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 0], dtype=float)
    clips = accuracy_bootstrap(correct)
    assert clips.accuracy == 50.0 and clips.low < 50.0 < clips.high
    assert accuracy_bootstrap(correct, recordings=np.arange(10)) == clips  # one clip per recording: the same draws
    clustered = accuracy_bootstrap(correct, recordings=np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 3]))
    assert clustered.high - clustered.low > clips.high - clips.low


def test_task_specs_name_classes_prompts_and_recordings(user_tasks, tmp_path):
    birds = read_task(parse_task(user_tasks["birds"]))
    assert birds.name == "birds" and birds.labels == ["blackbird", "crow", "wood_pigeon"]
    assert birds.prompts[2] == "this is a sound of wood pigeon" and birds.chance == pytest.approx(1 / 3)
    assert not birds.has_recordings and birds.paper_benchmark is None
    words = tmp_path / "words.yaml"
    words.write_text("wood_pigeon: a cooing pigeon\n")
    own = read_task(parse_task(f"garden={user_tasks['birds']}", template="a recording of {label}",
                               label_words=str(words)))
    assert own.name == "garden" and own.prompts == ["a recording of blackbird", "a recording of crow",
                                                   "a recording of a cooing pigeon"]
    machines = read_task(parse_task(user_tasks["machines"]))
    assert machines.name == "machines" and machines.has_recordings
    recordings = machines.recordings(machines.manifest["clip_id"])
    assert len(set(recordings)) == len(machines.manifest) // 2
    # a recording column with gaps: each clip without a recording is its own (named by its clip id, as
    # the study names it), never one shared "nan" or "" recording
    gaps = machines.manifest.assign(recording_id=machines.manifest["recording_id"].astype(object))
    gaps.loc[gaps.index[:2], "recording_id"] = [np.nan, ""]
    partial = read_task(parse_task(user_tasks["machines"]), gaps)
    first_two = partial.recordings(gaps["clip_id"])[:2]
    assert list(first_two) == [str(c) for c in gaps["clip_id"][:2]]
    assert list(partial.recordings(gaps["clip_id"])) == list(recording_ids(gaps).loc[gaps["id"].astype(str)])
    assert parse_task("esc50:/data/ESC-50").name == "esc50"
    assert parse_task("mine=esc50:/data/ESC-50").paper_layout == "ESC-50"  # known by its layout, not its name
    assert parse_task("esc50=csv:/data/esc.csv").paper_layout is None


def test_task_errors_are_one_line(user_tasks, tmp_path, capsys):
    multi = tmp_path / "multi.csv"
    multi.write_text("file,label\na.wav,\"dog, rain\"\nb.wav,dog\n")
    words = tmp_path / "words.yaml"
    words.write_text("woodpigeon: a pigeon\n")
    cases = [
        (["--dataset", f"csv:{multi}"], "has several labels ('dog, rain'); a task takes one label per clip"),
        (["--dataset", user_tasks["birds"], "--label-words", str(words)], "'woodpigeon', which is not a class"),
        (["--dataset", f"classes:{tmp_path / 'nothing'}"], "one subfolder per class"),
        (["--dataset", user_tasks["birds"], "--template", "a sound of {lable}"], "template"),
        (["--dataset", user_tasks["birds"], "--dataset", f"birds={user_tasks['machines']}"], "two tasks named 'birds'"),
    ]
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    for argv, message in cases:
        assert main(["evaluate", "--model", str(model), *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err

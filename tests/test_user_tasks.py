"""A study aimed at the user's own tasks (one `csv:`, one folder per class): the report names them,
gives their chance levels, and shows neither the paper's figures beside them nor a column of a
benchmark that was not configured."""

import numpy as np
import pandas as pd
import soundfile

from clapcurate.cli import main
from clapcurate.model import checkpoints

STUDY = """
name: own_tasks
out_root: {out}
teacher_checkpoint: {teacher}
low_resource_fraction: null
seeds: [0]
variants: false
eval_batch_size: 32
data:
  captioned: [{captioned}]
  pool: folder:{pool}
  benchmarks:
    machines: {machines}
    garden: {{data: "{birds}", template: "a recording of {{label}}"}}
student:
  data: {{batch_size: 8}}
  trainer: {{max_steps: 2, max_epochs: null, val_check_interval: 2, progress_bar: false}}
  text: {{freeze_text_encoder: true, cache_text_features: true}}
curation: {{du_sigma: null, du_keep_fraction: 0.2, ds_sigma: null, ds_keep_fraction: 0.3,
            ads_sigma: null, ads_keep_fraction: 0.3}}
"""


def write_tones(folder, frequencies, seed):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    time = np.arange(16000) / 16000.0
    paths = []
    for k, frequency in enumerate(frequencies):
        path = folder / f"clip{k:02d}.wav"
        soundfile.write(path, (0.4 * np.sin(2 * np.pi * frequency * time)
                               + 0.02 * rng.standard_normal(len(time))).astype(np.float32), 16000)
        paths.append(path)
    return paths


def test_a_study_of_the_users_own_tasks_reports_them_by_name_with_chance_and_no_paper_column(
        tiny_clap, user_tasks, tmp_path, capsys):
    teacher = checkpoints.save(tiny_clap, tmp_path / "teacher")
    sounds = {"a drill whirs loudly": 1200.0, "a hair dryer blows": 3000.0, "a crow caws": 450.0,
              "a blackbird sings": 2200.0, "a wood pigeon coos": 900.0, "rain falls on a roof": 150.0}
    captions = [caption for caption in sounds for _ in range(4)]
    paths = write_tones(tmp_path / "captioned", [sounds[c] for c in captions], seed=1)
    pd.DataFrame({"audio_path": paths, "caption": captions}).to_csv(tmp_path / "pairs.csv", index=False)
    write_tones(tmp_path / "pool", [f for f in sounds.values() for _ in range(3)], seed=2)
    config = tmp_path / "study.yaml"
    config.write_text(STUDY.format(out=tmp_path / "runs", teacher=teacher, captioned=f"csv:{tmp_path / 'pairs.csv'}",
                                   pool=tmp_path / "pool", machines=user_tasks["machines"],
                                   birds=user_tasks["birds"]))
    assert main(["study", str(config), "--device", "cpu"]) == 0
    console = capsys.readouterr().out
    report = (tmp_path / "runs" / "own_tasks" / "report.md").read_text()
    assert str(tmp_path / "runs" / "own_tasks" / "report.md") in console
    assert "## Table 2" not in console  # a summary on the console, the report in its file
    assert "machines: teacher" in console and "(chance 50.0%)" in console
    assert ("Target tasks: machines (2 classes, chance 50.0%, not one of the paper's benchmarks); "
            "garden (3 classes, chance 33.3%, not one of the paper's benchmarks).") in report
    table2 = report.split("## Table 2")[1].split("\n\n")[2]
    header = table2.splitlines()[0]
    assert header == "| model | machines | garden |"  # no paper column, no unconfigured benchmark
    assert "| chance (1 / classes) | 50.0 | 33.3 |" in table2
    for unconfigured in ("ESC-50", "UrbanSound8K", "TUT17", "paper "):
        assert unconfigured not in table2
    table1 = report.split("## Table 1")[1].split("\n\n")[1]
    assert "machines DS" in table1 and "garden ADS" in table1 and "ESC-50" not in table1 and "paper" not in table1
    results = pd.read_csv(tmp_path / "runs" / "own_tasks" / "results.csv")
    assert set(results["benchmark"]) == {"machines", "garden"}
    curated = pd.read_csv(next((tmp_path / "runs" / "own_tasks" / "curated").glob("*/ds_garden/improvement_set.csv")))
    assert set(curated["best_label"]) <= {"blackbird", "crow", "wood_pigeon"}

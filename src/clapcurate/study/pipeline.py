"""The paper's study as one resumable pipeline.

data -> (audio-encoder pretraining on labelled clips) -> teachers (all pairs; 10% of them) -> per teacher: embeddings, DU once, DS and ADS per
benchmark -> students of Tables 2 and 3 (+ ADS+SL variants) -> zero-shot evaluation -> report.
Every stage is kept on disk (`runs/<name>/stages/`): a second run recomputes nothing that is done.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..errors import ConfigError
from ..files import check_output_folder
from ..locks import one_writer
from . import browsers
from .analysis import target_peakedness
from .config import StudyConfig, check_study_inputs
from .curation import bracket_students, curate, curated_counts, embed, refuse_empty_sets, selection_students
from .datasets import low_resource_manifest, prepare_data
from .evaluation import evaluate
from .outputs import write_outputs
from .plan import identity, length_students, planned_students, slug, student_name
from .resume import check_settings
from .stages import StageRunner
from .training import fit_student, fit_teacher, pretrain_audio


class Study:
    """One study run in `out_root/name`: every stage is kept on disk and skipped when done. It holds
    what the stages share: the config, the study folder, the stage runner, the data (the world's
    once prepared), the report's notes and the world's ground truth."""

    def __init__(self, config: StudyConfig, console=None):
        from rich.console import Console

        self.config = config
        self.console = console or Console()
        self.out = check_output_folder((Path(config.out_root) / config.name).resolve(), "study folder")
        check_settings(self.out, config)
        self.stages = StageRunner(self.out, log=self.console.print)
        self.data = config.data
        self.notes: list[str] = []
        self.peakedness: dict | None = None

    def truth(self):
        """The embedded world's ground truth (None for real data)."""
        from .groundtruth import WorldTruth

        if self.config.world is None:
            return None
        if not hasattr(self, "_truth"):
            self._truth = WorldTruth(self.config.world.dir)
        return self._truth

    def run(self) -> str:
        t0 = time.perf_counter()
        manifests = prepare_data(self)
        pretrained = pretrain_audio(self)
        rows, counts, curves = [], [], []
        low = self.config.low_resource
        kinds = ["full"] + ([low.label] if low else [])
        if low:
            self.notes.append(
                f"The {low.label} teacher trains on a random {low.label} of the pairs "
                "(per seed); its DS pairs come only from those pairs, while the captions of the other pairs "
                "serve as unpaired text for its DU and ADS matching, and its students replay its own pairs.")
        if self.truth() is not None:
            self.notes.append("Curated-set precision and rare/frequent classes use the embedded world's "
                              "ground truth (`ground_truth/`), which curation never reads.")
        for seed in self.config.seeds:
            for kind in kinds:
                train_manifest = (manifests["train"] if kind == "full"
                                  else low_resource_manifest(self, manifests["train"], seed))
                ckpt = fit_teacher(self, kind, train_manifest, seed, pretrained)
                for bench in self.data.benchmarks:
                    rows.append(evaluate(self, kind, "teacher", identity(self.config, None), seed, ckpt, bench,
                                         manifests, f"{slug(self.config, kind)}_s{seed}/teacher"))
                embeddings = embed(self, kind, seed, ckpt, manifests, train_manifest)
                sets = curate(self, kind, seed, ckpt, manifests, train_manifest, embeddings)
                counts += curated_counts(self, kind, seed, sets, manifests)
                browsers.write_browsers(sets, manifests["train"], self.truth())
                if kind == "full" and seed == self.config.seeds[0] and self.truth() is not None:
                    self.peakedness = target_peakedness(self, seed, ckpt, train_manifest, embeddings)
                specs = planned_students(self.config, self.data.benchmarks, kind, train_manifest, sets)
                refuse_empty_sets(specs, sets, kind, seed)

                def brackets(spec, kind=kind, seed=seed, train_manifest=train_manifest, embeddings=embeddings):
                    return bracket_students(self, kind, seed, spec, train_manifest, manifests, embeddings)

                specs += [arm for spec in specs if spec.table == "main" and spec.model in self.config.brackets
                          for arm in brackets(spec)]
                if kind == "full" and seed == self.config.seeds[0] and self.config.lengths:
                    specs += length_students(self.config, specs, brackets)
                if self.config.curation.selections:
                    set_curves, selection_specs = selection_students(self, kind, seed, ckpt, manifests, train_manifest,
                                                                     embeddings, sets, specs)
                    curves += set_curves
                    specs += selection_specs
                for spec in specs:
                    student = fit_student(self, kind, ckpt, spec, seed, embeddings)
                    for bench in ([spec.benchmark] if spec.benchmark else self.data.benchmarks):
                        rows.append(evaluate(self, kind, spec.model, identity(self.config, spec), seed, student,
                                             bench, manifests, student_name(self.config, kind, spec, seed)))
        unmatched = sorted(set(self.config.marks) - {row["folder"] for row in counts})
        if unmatched:
            self.notes.append(f"marks: {', '.join(unmatched)} named no curated set of this study; those marks are "
                              "not in the report.")
        return write_outputs(self, rows, counts, manifests, time.perf_counter() - t0, curves)


def quiet_banners() -> None:
    """Many short in-process fits: keep Lightning's per-fit banners (devices, "max_steps
    reached") and transformers' loading bars off the screen. Lightning's irrelevant warnings
    are filtered by every fit itself (`train.console.quiet_lightning`); its real warnings pass."""
    import logging

    import lightning.pytorch  # noqa: F401  (it sets its loggers' levels on import)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_study(config: StudyConfig) -> str:
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise ConfigError("a study runs as one process (not under torchrun or another launcher): the `trainer` "
                          "settings devices and num_nodes of its sections start the processes of each fit")
    quiet_banners()
    check_study_inputs(config)  # before the study folder is made: nothing is written on bad input
    with one_writer(config.out_root, "study folder"):
        return Study(config).run()

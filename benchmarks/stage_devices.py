"""Which device each stage of a study placed its work on, and the tiny study to ask it of.

Inside `with StageDevices() as log:` a study run records, for every stage it computes, the device
of each model it loads (`checkpoints.load`: embedding, curation, evaluation), of each pool search
(`curate_du`, `curate_ads` as the curation stage calls them) and of each fit
(`train.config.training_device`: what Lightning's accelerator and devices are set from). Used by
`benchmarks/gpu.py` (a study on the GPU) and `tests/test_device.py` (a study with a sentinel
device).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from pathlib import Path

from clapcurate.curate import stage as curate_stage
from clapcurate.model import checkpoints
from clapcurate.study import StudyConfig, load_study_config
from clapcurate.study.stages import StageRunner
from clapcurate.train import config as train_config

# Every stage once: the pretrained CNN, the full teacher, its embeddings, DU and DS / ADS for the
# three benchmarks, one student of each method, the evaluations; a few steps each.
TINY_STUDY = """
name: {name}
out_root: {out}
world: {{dir: {world}, seed: 3, scale: 0.01}}
seeds: [0]
device: {device}
low_resource_fraction: null
variants: false
eval_batch_size: 128
model:
  audio: {{encoder: cnn6, sample_rate: 16000, window_size: 512, hop_size: 160, mel_bins: 32,
          fmin: 50, fmax: 8000, base_channels: 4, clip_seconds: 1.5, block_dropout: 0.0, head_dropout: 0.0}}
  text: {{name_or_path: {text_encoder}, pooling: {pooling}, max_length: 24}}
  d_proj: 16
pretrain_audio:
  data: {{batch_size: 16}}
  trainer: {{max_steps: 1, max_epochs: null, val_check_interval: 1, progress_bar: false}}
teacher:
  data: {{batch_size: 16}}
  trainer: {{max_steps: 2, max_epochs: null, val_check_interval: 2, progress_bar: false}}
  text: {{freeze_text_encoder: true, cache_text_features: true}}
student:
  data: {{batch_size: 16}}
  trainer: {{max_steps: 1, max_epochs: null, val_check_interval: 1, progress_bar: false}}
  text: {{freeze_text_encoder: true, cache_text_features: true}}
curation: {{du_sigma: null, du_keep_fraction: 0.05, ds_sigma: 0.2, ads_sigma: null, ads_keep_fraction: 0.1}}
"""


def tiny_study(root: Path, device: str, text_encoder: str = "minilm", pooling: str = "mean",
               name: str = "devices", world: Path | None = None) -> StudyConfig:
    """The tiny study on `device` in `root/runs/name` (its world in `world`, default `root/world`)."""
    path = Path(root) / f"{name}.yaml"
    path.write_text(TINY_STUDY.format(name=name, out=Path(root) / "runs", world=world or Path(root) / "world",
                                      device=device, text_encoder=text_encoder, pooling=pooling))
    return load_study_config(path)


# stage kinds (the stage name up to its first "/") whose models run on the study's device,
# with what is recorded for them: a fit's device, or every model and search of the stage
FIT_STAGES = ("pretrain_audio", "teacher", "student")
MODEL_STAGES = ("embed", "curate", "eval")


class StageDevices:
    """Records (stage, what, device) while active; `stages` lists the stages computed."""

    def __init__(self):
        self.records: list[tuple[str, str, str]] = []
        self.stages: list[str] = []
        self._current: list[str] = []
        self._undo: list[tuple[object, str, object]] = []

    def _patch(self, owner, name: str, wrapper) -> None:
        original = getattr(owner, name)
        self._undo.append((owner, name, original))
        setattr(owner, name, functools.wraps(original)(wrapper(original)))

    def _record(self, what: str, device) -> None:
        if self._current:
            self.records.append((self._current[-1], what, str(device)))

    def __enter__(self) -> "StageDevices":
        log = self

        def run(original):
            def wrapped(runner, name, fn):
                def traced():
                    log.stages.append(name)
                    log._current.append(name)
                    try:
                        return fn()
                    finally:
                        log._current.pop()

                return original(runner, name, traced)
            return wrapped

        def load(original):
            def wrapped(directory, device="cpu"):
                log._record("load", device)
                return original(directory, device)
            return wrapped

        def search(original):
            def wrapped(*args, **kwargs):
                log._record("search", kwargs.get("device"))
                return original(*args, **kwargs)
            return wrapped

        def fit(original):
            def wrapped(trainer):
                device = original(trainer)
                log._record("fit", device)
                return device
            return wrapped

        self._patch(StageRunner, "run", run)
        self._patch(checkpoints, "load", load)
        self._patch(curate_stage, "curate_du", search)
        self._patch(curate_stage, "curate_ads", search)
        self._patch(train_config, "training_device", fit)
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()

    def devices_by_stage(self) -> dict[str, set[str]]:
        """The devices each computed stage of `FIT_STAGES` and `MODEL_STAGES` ran on (a fit's
        own device; in the other stages every model and search); other stages are left out."""
        out: dict[str, set[str]] = defaultdict(set)
        for stage, what, device in self.records:
            kind = stage.split("/")[0]
            if kind in MODEL_STAGES or (kind in FIT_STAGES and what == "fit"):
                out[stage].add(device)
        return {stage: out[stage] for stage in self.stages
                if stage.split("/")[0] in FIT_STAGES + MODEL_STAGES}

"""Export: a model written back in the form a CLAP family's own code loads.

- `hf`: a transformers `ClapModel` folder with its `ClapProcessor` (`ClapModel.from_pretrained`),
- `msclap`: an MS CLAP `.pth` (`{"model": state dict}`), 2022 (PANNs CNN14 + BERT) or 2023
  (HTS-AT + GPT-2), by the model's towers,
- `laion`: a LAION-CLAP `.pt` (`{"state_dict": DDP state dict}`, `CLAP_Module.load_ckpt`).

By default a model goes back to the form its teacher came from, which its architecture and
preprocessing tell: MS CLAP's projection head -> msclap; MLP heads with LAION-CLAP's 16-bit round
trip -> laion; without it (a transformers folder's teacher) -> hf. A combination that cannot be
represented (a CNN14 student as a `ClapModel`) is refused before any work with one line naming
why. Where the target family's preprocessing differs from the model's (LAION-CLAP's 16-bit round
trip, which transformers' feature extractor lacks, or audio settings a LAION-CLAP `.pt` cannot
record), the export warns with the difference measured on probe clips. The weights LAION-CLAP's
loader requires but its embeddings never use (the AudioSet classifier head, the MLP-loss
transforms) are written as zeros.

Every export writes `README.md` beside the weights: a model card with the teacher, the curated
set and its size, the replay set, and the training steps, read from the student's run folder
when the model is a student's checkpoint. When a study evaluated that checkpoint (a folder above
it holds the study's results.csv naming it in its `checkpoint` column, and predictions.csv), the
card gives its gain over its own teacher of the same seed on each benchmark it was evaluated on:
both accuracies and the paired difference with its 95% interval over the benchmark's recordings
(`intervals.paired_bootstrap` on the per-clip outcomes of predictions.csv, as the study's report
computes it for one seed). The study's files are read as CSV; the study is not imported.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .errors import ClapcurateError
from .intervals import Interval, paired_bootstrap
from .model.clap import CLAP, CLAPConfig
from .model.frontend import int16_round_trip

FORMATS = {"hf": "a transformers ClapModel folder", "msclap": "an MS CLAP .pth", "laion": "a LAION-CLAP .pt"}
MSCLAP_FILES = {2022: "CLAP_weights_2022.pth", 2023: "CLAP_weights_2023.pth"}
LAION_FILE = "laion_clap.pt"
AUDIOSET_CLASSES = 527  # LAION-CLAP's classifier head, unused by its embeddings
MODEL_CARD = "README.md"
PROBE_LEVELS = (0.3, 0.003)  # a loud and a quiet probe clip: quantisation shows in the quiet one
STUDY_RESULTS, STUDY_PREDICTIONS = "results.csv", "predictions.csv"  # a study's files (`clapcurate.study.outputs`)
TEACHER = "teacher"  # the model name of a study's teacher in its results


@dataclasses.dataclass
class Exported:
    """What `export` wrote: the folder, the weights file or folder, the format and its warnings."""

    folder: Path
    weights: Path
    format: str
    warnings: list[str]


def _text_type(model: CLAP) -> str:
    return getattr(model.text_encoder.model.config, "model_type", "")


def msclap_year(config: CLAPConfig, text_type: str) -> int | None:
    """2022 (CNN14 + BERT) or 2023 (HTS-AT + GPT-2) for a model with MS CLAP's heads, else None."""
    audio, text = config.audio, config.text
    if config.projection != "msclap":
        return None
    if audio.encoder == "cnn14" and text_type == "bert" and text.pooling == "cls":
        return 2022
    if audio.encoder == "htsat" and text_type == "gpt2" and text.pooling == "last":
        return 2023
    return None


def teacher_format(config: CLAPConfig) -> str:
    """The form the model's teacher came from (see the module docstring)."""
    if config.projection == "msclap":
        return "msclap"
    return "laion" if config.audio.int16_round_trip else "hf"


def refusal(config: CLAPConfig, text_type: str, fmt: str) -> str | None:
    """Why a model of `config` (text tower of Hugging Face `text_type`) cannot be written as
    `fmt`, or None when it can."""
    audio, text = config.audio, config.text
    if fmt == "msclap":
        if msclap_year(config, text_type) is None:
            return ("MS CLAP holds CNN14 + BERT (2022) or HTS-AT + GPT-2 (2023) with its projection heads; this model "
                    f"has {audio.encoder.upper()} + {text_type or 'unknown'} with {config.projection} heads")
        return None
    towers = ("htsat", "cnn14") if fmt == "laion" else ("htsat",)
    if audio.encoder not in towers:
        return (f"its {audio.encoder.upper()} audio tower has no counterpart in {FORMATS[fmt]} "
                f"({' or '.join(tower.upper() for tower in towers)} only)")
    if config.projection != "mlp":
        return f"its MS CLAP projection heads have no counterpart in {FORMATS[fmt]} (linear, ReLU, linear)"
    if text_type != "roberta" or text.pooling != "pooler" or text.caption_suffix:
        return f"its text tower ({text_type or 'unknown'}, {text.pooling} pooling) is not RoBERTa's pooler output"
    if fmt == "laion":
        return None
    if audio.mel_sample_rate not in (0, audio.sample_rate):
        return "its mel filterbank is designed for another rate than its audio's; ClapFeatureExtractor cannot express it"
    if not float(audio.clip_seconds).is_integer():
        return f"its {audio.clip_seconds:g} s clips: ClapFeatureExtractor takes whole seconds"
    return None


def probe_clips(model: CLAP) -> torch.Tensor:
    """Probe clips [2, clip_samples]: a tone in noise, loud and quiet."""
    rng = np.random.default_rng(0)
    time = np.arange(model.clip_samples) / model.sample_rate
    clips = [level * (np.sin(2 * np.pi * 440 * time) + rng.standard_normal(time.shape)) for level in PROBE_LEVELS]
    return torch.from_numpy(np.stack(clips).astype(np.float32))


def _round_trip_difference(model: CLAP) -> float:
    """The largest difference the 16-bit round trip makes to `model`'s normalised audio embeddings
    of the probe clips (switched on where the model has it off, and off where on)."""
    probe = probe_clips(model)
    with torch.no_grad():
        with_round_trip = model.encode_logmel(model.audio_encoder.logmel(int16_round_trip(probe)))
        without = model.encode_logmel(model.audio_encoder.logmel(probe))
    return float((with_round_trip - without).abs().max())


def _laion_setting_differences(config: CLAPConfig) -> list[str]:
    from .model.imports import LAION_CLAP_AUDIO

    return [f"{key}={getattr(config.audio, key)}" for key, published in LAION_CLAP_AUDIO.items()
            if key not in ("int16_round_trip", "short_clip_fill") and getattr(config.audio, key) != published]


def _ours_to_theirs(state: dict[str, torch.Tensor], prefixes: dict[str, str]) -> dict[str, torch.Tensor]:
    """Keys renamed by their prefix (`prefixes`: ours -> theirs, the first that matches)."""
    renamed = {}
    for key, tensor in state.items():
        prefix = next(p for p in prefixes if key == p or key.startswith(p))
        renamed[prefixes[prefix] + key[len(prefix):]] = tensor
    return renamed


def _state(model: CLAP) -> dict[str, torch.Tensor]:
    return {key: tensor.detach().cpu().clone() for key, tensor in model.state_dict().items()}


def _htsat_buffers(model: CLAP, prefix: str) -> dict[str, torch.Tensor]:
    """HTS-AT's shifted-window masks and relative-position indices, which the published code stores."""
    persistent = set(model.audio_encoder.state_dict())
    return {prefix + name: buffer.detach().cpu().clone() for name, buffer in model.audio_encoder.named_buffers()
            if name not in persistent and name.endswith(("attn_mask", "relative_position_index"))}


def write_msclap(model: CLAP, path: Path) -> Path:
    """MS CLAP's `.pth` (msclap loads it with `strict=False`: its unused AudioSet head stays its own)."""
    year = msclap_year(model.config, _text_type(model))
    audio_prefix = "audio_encoder.base.htsat." if year == 2023 else "audio_encoder.base."
    state = _ours_to_theirs(_state(model), {
        "audio_encoder.": audio_prefix, "audio_projection.": "audio_encoder.projection.",
        "text_encoder.model.": "caption_encoder.base.", "text_projection.": "caption_encoder.projection.",
        "logit_scale": "logit_scale"})
    if year == 2023:
        state.update(_htsat_buffers(model, audio_prefix))
    torch.save({"model": state}, path)
    return path


def write_laion(model: CLAP, path: Path) -> Path:
    """LAION-CLAP's `.pt`, with every key its strict loader asks for."""
    state = _ours_to_theirs(_state(model), {
        "audio_encoder.": "audio_branch.", "audio_projection.": "audio_projection.",
        "text_encoder.model.": "text_branch.", "text_projection.": "text_projection.",
        "logit_scale": "logit_scale_a", "text_logit_scale": "logit_scale_t"})
    if "logit_scale_t" not in state:  # a model with one scale: LAION-CLAP's text side gets the same
        state["logit_scale_t"] = state["logit_scale_a"].clone()
    d_proj, audio = model.config.d_proj, model.audio_encoder
    for side in ("audio", "text"):  # the MLP-loss transforms (MLPLayers([d, d, d]): sequential.0 and .3)
        for index in (0, 3):
            state[f"{side}_transform.sequential.{index}.weight"] = torch.zeros(d_proj, d_proj)
            state[f"{side}_transform.sequential.{index}.bias"] = torch.zeros(d_proj)
    if model.config.audio.encoder == "htsat":
        state.update(_htsat_buffers(model, "audio_branch."))
        frequency_groups = audio.spec_size // audio.patch_embed.proj.stride[0] // 2 ** (len(audio.layers) - 1)
        state["audio_branch.tscam_conv.weight"] = torch.zeros(
            AUDIOSET_CLASSES, audio.out_dim, frequency_groups // audio.freq_ratio, 3)
        state["audio_branch.tscam_conv.bias"] = torch.zeros(AUDIOSET_CLASSES)
        state["audio_branch.head.weight"] = torch.zeros(AUDIOSET_CLASSES, AUDIOSET_CLASSES)
        state["audio_branch.head.bias"] = torch.zeros(AUDIOSET_CLASSES)
    else:
        state["audio_branch.fc_audioset.weight"] = torch.zeros(AUDIOSET_CLASSES, audio.out_dim)
        state["audio_branch.fc_audioset.bias"] = torch.zeros(AUDIOSET_CLASSES)
    positions = model.text_encoder.model.config.max_position_embeddings
    state["text_branch.embeddings.position_ids"] = torch.arange(positions)[None]  # laion_clap deletes it on load
    torch.save({"state_dict": {f"module.{key}": tensor for key, tensor in state.items()}}, path)
    return path


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


@dataclasses.dataclass
class Gain:
    """A student's gain over its teacher of the same seed on one benchmark of a study: both
    accuracies (percent) and the paired difference (points) with its interval; None where the
    teacher was not evaluated on the same clips."""

    benchmark: str
    clips: int
    recordings: int
    teacher_accuracy: float | None
    accuracy: float
    difference: Interval | None


@dataclasses.dataclass
class StudyEvaluation:
    """Where a study evaluated a checkpoint: the study folder, the checkpoint's teacher kind,
    model name and seed there, and its gains; `missing`: why no gains could be read from a study
    folder found above the checkpoint (empty when they were)."""

    study: Path
    teacher: str = ""
    model: str = ""
    seed: int = 0
    gains: list[Gain] = dataclasses.field(default_factory=list)
    missing: str = ""


def study_evaluation(checkpoint: str | Path) -> StudyEvaluation | None:
    """The gains of the student `checkpoint` (a checkpoint folder) in the study that evaluated it:
    the nearest folder above it holding the study's results.csv and predictions.csv, the rows of
    results.csv whose `checkpoint` is this folder, and each one's per-clip outcomes beside its
    teacher's (same teacher kind and seed) in predictions.csv. None when no study folder lies above."""
    folder = Path(checkpoint).resolve()
    study = next((parent for parent in folder.parents
                  if (parent / STUDY_RESULTS).is_file() and (parent / STUDY_PREDICTIONS).is_file()), None)
    if study is None:
        return None
    results = pd.read_csv(study / STUDY_RESULTS, keep_default_na=False)
    if "checkpoint" not in results:
        return StudyEvaluation(study, missing=f"its {STUDY_RESULTS} names no checkpoint per evaluation; running "
                                              "the study again (it resumes from disk) records them")
    if "model" not in results:
        return StudyEvaluation(study, missing=f"its {STUDY_RESULTS} names no evaluated model per row (no `model` "
                                              "column); running the study again (it resumes from disk) writes it")
    rows = results[[(study / entry).resolve() == folder for entry in results["checkpoint"]]]
    rows = rows[rows["model"] != TEACHER]
    if rows.empty:
        return StudyEvaluation(study, missing=f"its {STUDY_RESULTS} lists no student evaluation of this checkpoint")
    predictions = pd.read_csv(study / STUDY_PREDICTIONS, keep_default_na=False,
                              dtype={"clip_id": str, "recording_id": str})
    by_model = dict(list(predictions.groupby(["teacher", "model", "seed", "benchmark"], sort=False)))
    first = rows.iloc[0]
    gains = []
    for row in rows.itertuples(index=False):
        student = by_model[(row.teacher, row.model, row.seed, row.benchmark)]
        teacher = by_model.get((row.teacher, TEACHER, row.seed, row.benchmark))
        paired = teacher is not None and np.array_equal(teacher["clip_id"], student["clip_id"])
        recordings = student["recording_id"].to_numpy()
        gains.append(Gain(row.benchmark, len(student), len(set(recordings)),
                          100 * teacher["correct"].mean() if paired else None, 100 * student["correct"].mean(),
                          paired_bootstrap(student["correct"].to_numpy(), teacher["correct"].to_numpy(),
                                           recordings=recordings) if paired else None))
    return StudyEvaluation(study, str(first["teacher"]), str(first["model"]), int(first["seed"]), gains)


def evaluation_section(evaluation: StudyEvaluation | None) -> list[str]:
    """The model card's lines on how the model was evaluated (`study_evaluation`)."""
    lines = ["", "## Evaluation", ""]
    if evaluation is None or evaluation.missing:
        where = f": the study folder `{evaluation.study}` lies above it, but {evaluation.missing}" if evaluation else ""
        return lines + [f"No evaluation of this model was recorded{where}."]
    lines += [f"Zero-shot accuracy in the study `{evaluation.study}`, where this model is `{evaluation.model}`, a "
              f"student of the `{evaluation.teacher}` teacher of seed {evaluation.seed}, beside that teacher on the "
              "same clips. Gain: this model minus its teacher in points, with the 95% paired-bootstrap interval "
              "over the benchmark's recordings (the clips of one recording drawn together; \"within noise\" when "
              "it holds 0). It covers the choice of test clips, not training randomness (one seed).", "",
              "| benchmark | clips | recordings | teacher (%) | this model (%) | gain (points) [95% interval] |",
              "|---|---|---|---|---|---|"]
    for gain in evaluation.gains:
        teacher = f"{gain.teacher_accuracy:.1f}" if gain.teacher_accuracy is not None else "-"
        lines.append(f"| {gain.benchmark} | {gain.clips} | {gain.recordings} | {teacher} | {gain.accuracy:.1f} | "
                     f"{gain.difference if gain.difference is not None else '- (no teacher evaluation on the same clips)'} |")
    return lines


def model_card(source: str | None, fmt: str, weights: str, warnings: list[str]) -> str:
    """README.md for an exported model: what it is, how to load it, and, for a student's checkpoint
    (`source` inside a run folder of `fit-student`), its teacher, curated and replay sets and steps,
    and its gains over its teacher where a study evaluated it (`study_evaluation`)."""
    run = Path(source).parent if source else None
    config = _read_json(run / "config.json") if run else {}
    summary = _read_json(run / "summary.json") if run else {}
    lines = [f"# CLAP exported by clapcurate ({FORMATS[fmt]})", "",
             f"Exported from `{source}`." if source else "Exported from a model in memory."]
    if config.get("improvement_set"):
        curated = Path(config["improvement_set"])
        stats = _read_json(curated.parent / "stats.json")
        method = stats.get("method")
        steps = (config.get("trainer") or {}).get("max_steps")
        lines += ["", "## Training", "",
                  f"- teacher: `{config.get('teacher', '')}`",
                  f"- curated set{f' ({method})' if method else ''}: `{curated}`, "
                  f"{summary.get('curated_pairs', '?')} pairs",
                  f"- replay set: `{config.get('replay_manifest', '')}`, {summary.get('replay_pairs', '?')} pairs",
                  f"- training steps: {steps if steps not in (None, -1) else 'by epochs'}"]
    lines += evaluation_section(study_evaluation(source) if source and Path(source).is_dir() else None)
    loaders = {
        "hf": "```python\nfrom transformers import ClapModel, ClapProcessor\n"
              f"model = ClapModel.from_pretrained(\"{weights}\")\nprocessor = ClapProcessor.from_pretrained(\"{weights}\")\n```",
        "msclap": f"Load `{Path(weights).name}` with msclap (`CLAP(model_fp=...)`, its year's version).",
        "laion": f"Load `{Path(weights).name}` with laion_clap: `CLAP_Module(...).load_ckpt(\"{Path(weights).name}\")`.",
    }
    lines += ["", "## Loading", "", loaders[fmt]]
    if warnings:
        lines += ["", "## Differences from the family's own preprocessing", ""] + [f"- {w}" for w in warnings]
    return "\n".join(lines) + "\n"


def export(source: str | Path | None, out: str | Path, fmt: str | None = None, text_encoder: str | None = None,
           model: CLAP | None = None) -> Exported:
    """Write the model at `source` (anything `load_model` takes; or `model`, loaded from it or
    from nowhere: `source` None) to the folder `out` as `fmt` (default: its teacher's form), with
    a model card."""
    if fmt is not None and fmt not in FORMATS:
        raise ClapcurateError(f"export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    from .model import checkpoints

    if model is None and _is_checkpoint_folder(source):  # its architecture is read without its weights
        config = checkpoints.read_config(Path(source))
        text_type = _read_json(Path(source) / checkpoints.TEXT_ENCODER_DIR / "config.json").get("model_type", "")
    else:
        model = model if model is not None else checkpoints.load_model(source, text_encoder)
        config, text_type = model.config, _text_type(model)
    fmt = fmt or teacher_format(config)
    reason = refusal(config, text_type, fmt)
    if reason:
        raise ClapcurateError(f"cannot export {source or 'the model'} as {FORMATS[fmt]}: {reason}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ClapcurateError(f"{out} exists and is not empty: choose another folder")
    model = (model if model is not None else checkpoints.load_model(source, text_encoder)).cpu().eval()
    warnings = []
    if fmt == "hf" and model.config.audio.int16_round_trip:
        warnings.append("transformers' ClapFeatureExtractor has no 16-bit round trip, which this model's preprocessing "
                        f"has: embeddings differ by up to {_round_trip_difference(model):.2g} on probe clips")
    if fmt == "laion":
        if not model.config.audio.int16_round_trip:
            warnings.append("LAION-CLAP's code quantises waveforms to 16 bits, which this model's preprocessing does "
                            f"not: embeddings differ by up to {_round_trip_difference(model):.2g} on probe clips")
        differences = _laion_setting_differences(model.config)
        if differences:
            warnings.append("a LAION-CLAP .pt records no audio settings; give laion_clap's audio_cfg these: "
                            + ", ".join(differences))
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "hf":
        from .model.transformers_clap import export_transformers_clap

        weights = export_transformers_clap(model, out)
    elif fmt == "msclap":
        weights = write_msclap(model, out / MSCLAP_FILES[msclap_year(model.config, _text_type(model))])
    else:
        weights = write_laion(model, out / LAION_FILE)
    (out / MODEL_CARD).write_text(model_card(str(source) if source else None, fmt, str(weights), warnings))
    return Exported(folder=out, weights=weights, format=fmt, warnings=warnings)


def _is_checkpoint_folder(source) -> bool:
    from .model import checkpoints
    from .model.text_encoders import is_transformers_clap

    path = checkpoints.require_model_path(source)
    return path.is_dir() and not is_transformers_clap(path)

"""What `clapcurate curate du|ds|ads --config CFG` reads: `CurationConfig`, validated without
loading torch, so that a config or path error is reported at once."""

from __future__ import annotations

import dataclasses

from ..config import load_config
from ..device import AUTO, check_auto, check_device
from ..errors import ConfigError
from ..method import DEFAULT_SELECTION_K, SELECTIONS
from ..prompts import PROMPT_TEMPLATE
from ..tasks import TaskSpec


@dataclasses.dataclass
class CurationConfig:
    """What `clapcurate curate du|ds|ads --config CFG` reads.

    Embedding folders default to `{out_dir}/embeddings/...` and are computed (or finished) with
    `embed_manifest` when needed; an existing folder must have been made with this teacher and
    these manifests.
    """

    teacher: str  # the teacher CLAP: a checkpoint folder or a published weights file (`load_model`)
    train_manifest: str  # captioned pairs: the captions of DU, the pairs DS selects from
    out_dir: str
    teacher_train_manifest: str = ""  # pool clips in it are left out (default: train_manifest)
    pool_manifest: str = ""  # unlabelled in-the-wild audio (DU, ADS)
    benchmark: str = ""  # the target task's name (DS, ADS; default: from its data, `tasks.default_task_name`)
    benchmark_manifest: str = ""  # the target task's labelled data (`clapcurate.tasks`): its labels make the
    # prompts; its audio must not be in the pool
    labels: list[str] = dataclasses.field(default_factory=list)  # default: the benchmark's labels
    template: str = PROMPT_TEMPLATE  # the target task's class prompt ({label}: the class's words)
    label_words: str = ""  # a YAML file mapping the task's labels to their words (`crying_baby: a crying baby`)
    ds_manifest: str = ""  # ADS: the DS Improvement-Set whose captions are matched to the pool
    text_encoder: str | None = None  # a weights-file teacher's text encoder (name or folder; default: its family's)
    pool_embeddings: str = ""  # default {out_dir}/embeddings/pool_audio
    caption_embeddings: str = ""  # default {out_dir}/embeddings/caption_text
    sigma: float | None = None  # default: clapcurate.method.SIGMA of the method (DU 0.7, DS 0.6, ADS 0.7)
    selection: str = "cosine"  # DU, ADS: what sigma applies to: cosine (the paper's), csls or mutual
    selection_k: int = DEFAULT_SELECTION_K  # csls's neighbourhood size, mutual's nearest neighbours
    keep_fraction: float | None = None  # instead of sigma: keep this fraction of all similarities
    max_captions_per_clip: int | None = None  # DU, ADS: only the best k captions of each clip
    # DU, ADS: the teacher's held-out clips of train_manifest (its fit's data.val_fraction and
    # data.split_seed), at most reference_clips of them (0: none), show where sigma lies among its
    # matched and mismatched pairs
    held_out_fraction: float = 0.17
    held_out_seed: int = 0
    reference_clips: int = 256
    reference_embeddings: str = ""  # default {out_dir}/embeddings/reference_audio
    block_size: int | None = None  # rows of a search block (default: clapcurate.search.DEFAULT_BLOCK_SIZE)
    batch_size: int = 64
    shard_size: int = 10_000
    num_workers: int | str = AUTO  # audio-decoding DataLoader workers; auto: several on a GPU, none on the CPU
    device: str = AUTO  # where the teacher and the search run: auto (a GPU when there is one), cpu, cuda, cuda:N
    manifest_name: str = "improvement_set.csv"  # .csv or .parquet
    progress: bool = True
    overwrite: bool = False  # replace a finished Improvement-Set in out_dir

    def __post_init__(self):
        if self.sigma is not None and self.keep_fraction is not None:
            raise ValueError("give either sigma or keep_fraction, not both")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        if self.selection_k < 1:
            raise ValueError(f"selection_k must be at least 1, got {self.selection_k}")
        if self.selection == "csls" and self.sigma is not None and not -4.0 <= self.sigma <= 4.0:
            raise ValueError(f"sigma is a CSLS score under selection csls and must lie in [-4, 4], got {self.sigma}")
        if self.selection != "csls" and self.sigma is not None and not -1.0 <= self.sigma <= 1.0:
            raise ValueError(f"sigma is a cosine similarity and must lie in [-1, 1], got {self.sigma}")
        if self.keep_fraction is not None and not 0.0 < self.keep_fraction <= 1.0:
            raise ValueError(f"keep_fraction must lie in (0, 1], got {self.keep_fraction}")
        for key in ("block_size", "batch_size", "shard_size"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ValueError(f"{key} must be at least 1, got {getattr(self, key)}")
        if not 0.0 <= self.held_out_fraction < 1.0:
            raise ValueError(f"held_out_fraction must lie in [0, 1), got {self.held_out_fraction}")
        if self.reference_clips < 0:
            raise ValueError(f"reference_clips must be >= 0, got {self.reference_clips}")
        if self.max_captions_per_clip is not None and self.max_captions_per_clip < 1:
            raise ValueError(f"max_captions_per_clip must be at least 1, got {self.max_captions_per_clip}")
        check_auto("num_workers", self.num_workers, int)
        check_device(self.device)
        if self.benchmark_manifest:
            self.target_task()  # the template is checked

    def check_inputs(self, method: str) -> None:
        """Every key `method` needs is given and every data path exists (reads nothing, loads no
        model); `ConfigError` naming the key otherwise."""
        from ..data.readers import check_data
        from ..tasks import check_task

        if method not in REQUIRED_KEYS:
            raise ConfigError(f"curation method must be du, ds or ads, got {method!r}")
        if self.selection == "csls" and self.sigma is None and self.keep_fraction is None and method != "ds":
            raise ConfigError("selection csls: sigma applies to the CSLS score, not a cosine, so the paper's "
                              "default does not carry over: give sigma or keep_fraction")
        missing = [key for key in REQUIRED_KEYS[method] if not getattr(self, key)]
        if missing:
            raise ConfigError(f"curate {method}: missing config key(s) {', '.join(missing)}")
        for key in data_keys(method):
            if getattr(self, key):
                check_data(getattr(self, key), key)
        if self.label_words:
            check_task(self.target_task(), "benchmark_manifest")

    def target_task(self) -> TaskSpec:
        """The target task of DS and ADS (`benchmark_manifest` under the name `benchmark`)."""
        return TaskSpec(self.benchmark_manifest, name=self.benchmark, template=self.template,
                        label_words=self.label_words)


def load_curation_config(path=None, overrides: list[str] | None = None, data: dict | None = None) -> CurationConfig:
    """A `CurationConfig` from YAML `path` (or a mapping `data`) with `key=value` overrides,
    validated as `clapcurate.config.load_config` does."""
    return load_config(CurationConfig, path, overrides, data)


REQUIRED_KEYS = {"du": ["pool_manifest"], "ds": ["benchmark_manifest"],
                 "ads": ["pool_manifest", "benchmark_manifest", "ds_manifest"]}


def data_keys(method: str) -> list[str]:
    """The data keys `method` reads when given: each a manifest file or a dataset spec (`read_data`).
    A benchmark given to DU still keeps its audio out of the pool."""
    keys = ["train_manifest", *REQUIRED_KEYS[method], "teacher_train_manifest", "benchmark_manifest"]
    return list(dict.fromkeys(keys))

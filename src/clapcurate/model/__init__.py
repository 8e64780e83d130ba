"""Models: log-mel front-end, PANNs and HTS-AT audio encoders, Hugging Face text encoders, CLAP,
checkpoints and imports of published ones (MS CLAP 2022/2023, LAION-CLAP).

The names below are imported on first use, so that `import clapcurate.model.frontend`
does not pay for importing `transformers`.
"""

from ..lazy import lazy_exports

_EXPORTS = {
    "AudioConfig": "config",
    "TextConfig": "config",
    "CLAPConfig": "config",
    "Projection": "clap",
    "CLAP": "clap",
    "TextEncoder": "text_encoders",
    "default_text_encoder_path": "text_encoders",
    "save": "checkpoints",
    "load": "checkpoints",
    "checkpoint_hash": "checkpoints",
    "import_msclap": "imports",
    "load_model": "checkpoints",
    "model_hash": "checkpoints",
    "require_model_path": "checkpoints",
    "import_checkpoint": "imports",
    "import_msclap_2023": "imports",
    "import_laion_clap": "imports",
    "HTSAT": "htsat",
    "HTSATConfig": "config",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)

"""Models: log-mel front-end, PANNs audio encoders, Hugging Face text encoders, CLAP, checkpoints.

The names below are imported on first use, so that `import clapcurate.model.frontend`
does not pay for importing `transformers`.
"""

import importlib

_EXPORTS = {
    "AudioConfig": "clap",
    "TextConfig": "clap",
    "CLAPConfig": "clap",
    "Projection": "clap",
    "CLAP": "clap",
    "TextEncoder": "text_encoders",
    "default_text_encoder_path": "text_encoders",
    "save": "checkpoints",
    "load": "checkpoints",
    "checkpoint_hash": "checkpoints",
    "import_msclap": "checkpoints",
    "load_model": "checkpoints",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)

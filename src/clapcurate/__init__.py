"""clapcurate: unsupervised improvement of audio-text (CLAP) representations.

The Python API is `clapcurate.api` (docs/python-api.md): `load`, `embed_audio`, `embed_text`,
`curate`, `student`, `fit_student`, `evaluate`, `export`. The names that no subpackage holds are
re-exported here (`clapcurate.load(path)` loads any model `--model` takes; `clapcurate.curate` and
`clapcurate.export` are the modules); they are imported on first use, so that `import clapcurate`
stays light.
"""

__version__ = "0.1.0"

API = ("api", "load", "manifest", "embed_audio", "embed_text", "student", "fit_student", "evaluate")

__all__ = [*API, "__version__"]


def __getattr__(name):
    if name in API:
        import importlib

        api = importlib.import_module(".api", __name__)
        return api if name == "api" else getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

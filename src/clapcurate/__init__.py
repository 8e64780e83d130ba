"""clapcurate: unsupervised improvement of audio-text (CLAP) representations.

`clapcurate.load(path)` rebuilds a saved CLAP model; it is imported on first use so
that `import clapcurate` stays light.
"""

__version__ = "0.1.0"

__all__ = ["load", "__version__"]


def __getattr__(name):
    if name == "load":
        from .model.checkpoints import load

        return load
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""clapcurate: unsupervised improvement of audio-text (CLAP) representations."""

__version__ = "0.1.0"

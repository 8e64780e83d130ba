"""Typed errors. Every error a user can cause derives from `ClapcurateError`;
the command line prints its message and exits with status 2 (no traceback)."""


class ClapcurateError(Exception):
    """An error caused by the user's input (files, configs, arguments)."""


class ConfigError(ClapcurateError):
    """A configuration key is unknown, missing or of the wrong type."""


class ManifestError(ClapcurateError):
    """A dataset metadata file or manifest is missing or malformed."""


class AudioError(ClapcurateError):
    """An audio file is unreadable, empty or holds non-finite samples.

    `path` names the file and `reason` says what is wrong; callers decide
    whether to skip the file (training, embedding) or stop.
    """

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # picklable, so DataLoader workers can hand it back
        return type(self), (self.path, self.reason)

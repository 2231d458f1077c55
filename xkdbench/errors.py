"""Errors a user can cause and fix."""


class ConfigError(ValueError):
    """A user-fixable mistake in a configuration; the message names the field and the allowed values."""


class NonFiniteLossError(RuntimeError):
    """A loss term or the gradient became NaN or infinite: the cell stops before the update is applied.
    The message names the step and the loss term."""


class IntegrityError(ConfigError):
    """A file an earlier job wrote is missing, truncated or corrupted (its size or sha256 differs from the
    manifest recorded with it, or it does not parse); the message names the file and how to rebuild it."""


class WriteError(ConfigError):
    """A result could not be written (disk full, read-only or unwritable folder). Nothing was written in
    its place and its previous version, if any, is unchanged; the message names the path."""

    def __init__(self, message: str, *, path: str = "", errno: int | None = None):
        super().__init__(message)
        self.path, self.errno = path, errno

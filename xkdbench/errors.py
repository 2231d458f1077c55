"""Errors a user can cause and fix."""


class ConfigError(ValueError):
    """A user-fixable mistake in a configuration; the message names the field and the allowed values."""

"""Errors a user can fix. The CLI turns each into one line on stderr and exit code 2."""


class UserError(Exception):
    """A problem with the user's input, data or files; the message names it and the fix."""


class DataError(UserError):
    """A dataset is missing, malformed, or too small for the requested episodes."""


class ConfigError(UserError):
    """A config file or flag has an unknown key or an invalid value."""


class CheckpointError(UserError):
    """A checkpoint is missing, truncated, corrupt, or belongs to a different model."""

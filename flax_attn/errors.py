"""Errors that mean "the user asked for something invalid".

The command-line tools print these as one line and exit non-zero; anything
else is a bug and keeps its traceback.
"""


class UserError(ValueError):
  """Base class: a bad config value, name, file or checkpoint."""


class ConfigError(UserError):
  """A config value is invalid; the message names it and what is valid."""


class CheckpointError(UserError):
  """A checkpoint cannot be read or does not fit the model."""


class CheckpointMismatchError(CheckpointError):
  """A readable checkpoint of another architecture (never overwritten)."""


class WorkdirWriteError(UserError):
  """The workdir cannot be written: full disk, read-only, no permission."""


class DivergenceError(UserError):
  """Training diverged: a non-finite or exploding loss (exit status 3)."""


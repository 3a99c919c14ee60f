"""Errors that mean "the user asked for something invalid".

Every user mistake (a bad config value, an unknown name, a missing dataset,
an unreadable checkpoint) is one of these: the command-line tools print it
as one line and exit 2 (3 for a divergence). Any other exception is a bug
and keeps its traceback (flax_attn.cli.run_main).

UserError derives from ValueError, so code that catches ValueError from
the library's checks keeps working.
"""


class UserError(ValueError):
  """Base class: a bad config value, name, file or checkpoint."""

  def __str__(self) -> str:  # one line, never the quoted repr KeyError gives
    return str(self.args[0]) if self.args else ''


class ConfigError(UserError):
  """A config value is invalid; the message names it and what is valid."""


class UnknownNameError(UserError, KeyError):
  """A model, attention or dataset name that is not registered; the message
  names the closest valid choices. A KeyError too (a failed lookup)."""


class DatasetNotFoundError(UserError, FileNotFoundError):
  """A dataset's files are missing; the message says how to get them."""


class CheckpointError(UserError):
  """A checkpoint cannot be read or does not fit the model."""


class CheckpointMismatchError(CheckpointError):
  """A readable checkpoint of another architecture (never overwritten)."""


class WorkdirWriteError(UserError):
  """The workdir cannot be written: full disk, read-only, no permission."""


class DivergenceError(UserError):
  """Training diverged: a non-finite or exploding loss (exit status 3)."""

"""What train.py and eval.py share: flags, start-up and one-line failures."""
from __future__ import annotations

import os
import sys
from typing import Callable

from absl import flags
from ml_collections import config_flags

from flax_attn.registry import UnknownNameError

FLAGS = flags.FLAGS


def define_flags() -> None:
  config_flags.DEFINE_config_file(
      'config', None, 'Experiment config file (configs/*.py).',
      lock_config=True)
  flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics '
                      'and the resolved config.')
  flags.DEFINE_bool('multihost', False, 'Call jax.distributed.initialize() '
                    'first (multi-host TPU/GPU launches).')
  flags.mark_flags_as_required(['config', 'workdir'])


def parse_flags(argv):
  """absl's flag parsing, with config errors as one line and exit code 2.

  A mistyped `--config.field` is caught here: the config is locked, and
  ml_collections raises while applying the override.
  """
  try:
    remaining = FLAGS(argv)
    FLAGS.config.get('model')  # a config file that failed to load raises here
    return remaining
  except OSError as e:
    message = 'cannot load the --config file: ' + str(e).split(
        'Attempted', 1)[-1]
  except flags.Error as e:
    message = str(e)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    message = str(e.args[0]) if e.args else str(e)
    message = message.replace("\\'", "'").replace('\\n', '\n').strip('\'"')
    if 'Did you mean' in message:
      field, _, hint = message.partition('\n')
      message = f'unknown config field {field.strip(chr(39) + chr(34) + " ")}; {hint.strip()}'
  print(f'error: {" ".join(message.split())}', file=sys.stderr)
  sys.exit(2)


def enable_compilation_cache(config) -> None:
  """JAX's persistent compilation cache (config.compilation_cache_dir;
  'none' disables it)."""
  import jax  # pylint: disable=g-import-not-at-top
  path = config.get('compilation_cache_dir', '') or os.path.join(
      os.path.expanduser('~'), '.cache', 'flax_attn', 'jax')
  if path == 'none':
    return
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


def run_main(body: Callable[[], int]) -> int:
  """Runs `body`, turning user errors into one line on stderr and exit 2."""
  from flax_attn.data import DatasetNotFoundError  # pylint: disable=g-import-not-at-top
  from flax_attn.errors import UserError  # pylint: disable=g-import-not-at-top
  from flax_attn.train import Preempted  # pylint: disable=g-import-not-at-top
  try:
    return body()
  except Preempted as e:
    print(str(e), file=sys.stderr)
    return 143
  except (UserError, UnknownNameError, DatasetNotFoundError) as e:
    print(f'error: {str(e).splitlines()[0]}', file=sys.stderr)
    return 2
  except ValueError as e:
    # Model / attention option checks raise ValueError with one line.
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    print(f'error: {msg}', file=sys.stderr)
    return 2

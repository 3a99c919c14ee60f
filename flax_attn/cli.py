"""What the command-line tools share: flags, start-up and one-line failures.

User mistakes (flax_attn.errors.UserError: a bad config value, an unknown
name, a missing dataset, an unreadable checkpoint) print one line and exit
2; any other exception is a bug and keeps its traceback. Process set-up
(CPU devices, compilation cache, log filters) is flax_attn.runtime's.
"""
from __future__ import annotations

import ast
import json
import os
import sys
from typing import Callable, List, Tuple

from absl import flags
from ml_collections import config_flags

from flax_attn import runtime
from flax_attn.errors import ConfigError, UserError
# Process set-up lives in flax_attn.runtime; these names stay importable
# from here (benchmarks/speed.py, the notebooks).
from flax_attn.runtime import (configure_cpu_devices, cpu_device_count,  # noqa: F401
                               enable_compilation_cache, with_cpu_devices)

# Option dicts of the chosen model and attention: their command-line
# overrides are applied after the rest of the config (so in any order) and
# checked against what that model / attention takes.
KWARGS_FIELDS = ('attn_kwargs', 'model_kwargs')

FLAGS = flags.FLAGS


def define_flags(workdir_required: bool = True) -> None:
  config_flags.DEFINE_config_file(
      'config', None, 'Experiment config file (configs/*.py).',
      lock_config=True)
  flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics '
                      'and the resolved config.')
  flags.DEFINE_bool('multihost', False, 'Several processes (one per host) '
                    'train together: jax.distributed.initialize() first. '
                    'README.md, "Several hosts".')
  define_multihost_flags()
  if workdir_required:
    flags.mark_flags_as_required(['workdir'])


def define_compile_flags() -> None:
  """train.py's --compile_for TOPOLOGY [--max_batch] (flax_attn.tpu_fit),
  which need no --workdir; without them --workdir is required."""
  flags.DEFINE_string('compile_for', None, 'Compile the train step for this '
                      'TPU slice (v5e-8, v4-32, v5e:2x4, ...) with libtpu on '
                      'this machine, print its memory per chip and whether '
                      'it fits; trains nothing, needs no --workdir.')
  flags.DEFINE_bool('max_batch', False, 'With --compile_for: also find the '
                    'largest per-chip batch that fits.')
  flags.register_multi_flags_validator(
      ['workdir', 'compile_for'],
      lambda values: bool(values['workdir'] or values['compile_for']),
      message='--workdir is required (or --compile_for TOPOLOGY, which '
      'compiles without training)')


def define_multihost_flags() -> None:
  """--coordinator_address, --num_processes, --process_id (each optional
  where JAX detects the cluster) and --coordinator_timeout."""
  from flax_attn import distributed  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('coordinator_address', None, 'With --multihost: '
                      'HOST:PORT of process 0 (it listens there).')
  flags.DEFINE_integer('num_processes', None, 'With --multihost: how many '
                       'processes train together.')
  flags.DEFINE_integer('process_id', None, 'With --multihost: this '
                       'process\'s id, 0 to num_processes - 1.')
  flags.DEFINE_integer('coordinator_timeout', distributed.DEFAULT_TIMEOUT_S,
                       'With --multihost: seconds to wait for every process '
                       'to connect to the coordinator.')


def _unknown_override(argv) -> str:
  """For `--config.augment.foo=1` (a field the config does not have): a
  line naming it and the fields that part of the config has."""
  config = FLAGS['config'].value or _config_from_argv(argv)
  if config is None:
    return ''
  for arg in argv:
    if not arg.startswith('--config.'):
      continue
    path = arg[len('--config.'):].split('=', 1)[0]
    parts = path.split('.')
    node, parent = config, []
    for part in parts:
      try:
        if part not in node:
          break
      except TypeError:
        break
      node, parent = node[part], parent + [part]
    else:
      continue
    missing = parts[len(parent)]
    where = '.'.join(parent)
    hint = ''
    if where:
      hint = f'; config.{where} has: {", ".join(sorted(node)) or "no fields"}'
    return (f'unknown config field {path!r}: config.{where or missing} has no '
            f'field {missing!r}{hint}')
  return ''


def _config_from_argv(argv):
  """The --config file's config, loaded again (absl stops at the first bad
  override, before it stores the config)."""
  path = None
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      path = arg.split('=', 1)[1]
    elif arg == '--config' and i + 1 < len(argv):
      path = argv[i + 1]
  if not path:
    return None
  try:
    from ml_collections.config_flags import config_flags  # pylint: disable=g-import-not-at-top
    return config_flags._ConfigFileParser('config', lock_config=False).parse(  # pylint: disable=protected-access
        path)
  except Exception:  # pylint: disable=broad-except
    return None


def split_kwargs_overrides(argv) -> Tuple[List[str], List[Tuple[str, str]]]:
  """argv without its `--config.attn_kwargs.*` / `--config.model_kwargs.*`
  overrides, and those as (path below config, text of the value)."""
  rest, overrides = [], []
  args = iter(argv)
  for arg in args:
    if arg == '--':
      rest.append(arg)
      rest.extend(args)
      break
    name = arg[len('--config.'):] if arg.startswith('--config.') else ''
    if name.split('.', 1)[0] in KWARGS_FIELDS and '.' in name.split('=')[0]:
      path, sep, text = name.partition('=')
      if not sep:  # --config.attn_kwargs.reduction 8
        text = next(args, None)
        if text is None:
          raise ConfigError(f'--config.{path} needs a value')
      overrides.append((path, text))
    else:
      rest.append(arg)
  return rest, overrides


def parse_override_value(text: str, current=None):
  """A command-line value: a string where the config holds a string, else a
  Python literal (8, 0.5, True, (1, 2), 'x'), else the text itself."""
  if isinstance(current, str):
    return text
  if text.lower() in ('true', 'false'):
    return text.lower() == 'true'
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text
  if (isinstance(current, float) and isinstance(value, int)
      and not isinstance(value, bool)):
    value = float(value)
  return value


def apply_kwargs_overrides(config, overrides) -> None:
  """Sets each (path, text) of split_kwargs_overrides in `config` (locked
  or not), then checks the model and attention the config now names take
  those options: one ConfigError naming the option and what is valid."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  if not overrides:
    return
  with config.unlocked():
    for path, text in overrides:
      *parents, leaf = path.split('.')
      node = config
      for part in parents:
        if part not in node or node[part] is None:
          node[part] = ml_collections.ConfigDict()
        node = node[part]
        if not isinstance(node, ml_collections.ConfigDict):
          raise ConfigError(f'--config.{path}: config.{part} is not a dict of '
                            'options')
      with node.ignore_type():
        node[leaf] = parse_override_value(text, node.get(leaf))
  check_model_options(config)


def check_model_options(config) -> None:
  """Builds (does not trace) the model the config describes: an option the
  model or its attention does not take fails here, in one line, before
  JAX starts."""
  from flax_attn.models import model_from_config  # pylint: disable=g-import-not-at-top
  model_from_config(config, num_classes=10)


def parse_flags(argv, config_optional: bool = False):
  """absl's flag parsing, with config errors as one line and exit code 2.

  A mistyped `--config.field` is caught here: the config is locked, and
  ml_collections raises while applying the override. Options of the model
  and attention (`--config.attn_kwargs.X`, `--config.model_kwargs.X`) may
  be new fields: they are applied last, whatever their place on the
  command line, and checked against the model and attention chosen.
  """
  try:
    argv, kwargs_overrides = split_kwargs_overrides(argv)
    # ml_collections reads the overrides from sys.argv, not from `argv`.
    saved_argv, sys.argv = sys.argv, list(argv)
    try:
      remaining = FLAGS(argv)
    finally:
      sys.argv = saved_argv
    if FLAGS['config'].value is None and not config_optional:
      raise flags.Error('flag --config must have a value other than None.')
    if FLAGS['config'].value is not None:
      FLAGS.config.get('model')  # a config file that failed to load raises
      apply_kwargs_overrides(FLAGS.config, kwargs_overrides)
    elif kwargs_overrides:
      raise ConfigError(f'--config.{kwargs_overrides[0][0]} needs --config')
    return remaining
  except UserError as e:
    message = str(e)
  except SyntaxError as e:
    message = (f'the config file {e.filename}:{e.lineno} does not parse: '
               f'{e.msg}')
  except OSError as e:
    message = 'cannot load the --config file: ' + str(e).split(
        'Attempted', 1)[-1]
  except flags.Error as e:
    message = str(e)
    if 'Error whilst parsing config file' in message:
      # ml_collections wraps get_config()'s error in its traceback; the
      # last line is the config's own one-line message.
      lines = [l.strip() for l in message.splitlines() if l.strip()]
      message = 'in the config file: ' + lines[-1].split(': ', 1)[-1]
    unknown = _unknown_override(argv)
    if unknown and 'Unknown command line flag' in message:
      message = unknown
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # ml_collections' own errors for a bad override (a field the locked
    # config lacks, a value of the wrong type).
    message = str(e.args[0]) if e.args else str(e)
    message = message.replace("\\'", "'").replace('\\n', '\n').strip('\'"')
    unknown = _unknown_override(argv)
    if unknown and 'Did you mean' not in message:
      message = unknown
    if 'Did you mean' in message:
      field, _, hint = message.partition('\n')
      message = f'unknown config field {field.strip(chr(39) + chr(34) + " ")}; {hint.strip()}'
  print(f'error: {" ".join(message.split())}', file=sys.stderr)
  sys.exit(2)


def config_from_workdir(workdir: str):
  """The config a workdir was trained with (WORKDIR/config.json, written by
  train.py), for eval.py without --config."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from flax_attn import storage  # pylint: disable=g-import-not-at-top
  path = storage.join(workdir or '', 'config.json')
  try:
    values = json.loads(storage.read_text(path))
  except OSError:
    raise ConfigError(f'no --config given and no {path} to read it from; '
                      'pass --config configs/<experiment>.py') from None
  except ValueError as e:
    raise ConfigError(f'{path} is not valid JSON ({e}); pass --config '
                      'configs/<experiment>.py') from None
  return ml_collections.ConfigDict(values)


def start_jax(config, multihost: bool) -> None:
  """flax_attn.runtime.start with this tool's --multihost flags: what
  train.py, eval.py and visualize do before building anything."""
  if not multihost:
    for name in ('coordinator_address', 'num_processes', 'process_id'):
      if FLAGS[name].present:
        raise ConfigError(f'--{name}={FLAGS[name].value} needs --multihost')
    runtime.start(config)
  else:
    runtime.start(config, multihost=True,
                  coordinator_address=FLAGS.coordinator_address,
                  num_processes=FLAGS.num_processes,
                  process_id=FLAGS.process_id,
                  coordinator_timeout=FLAGS.coordinator_timeout)


def run_main(body: Callable[[], int]) -> int:
  """Runs `body`: a user mistake (flax_attn.errors.UserError) is one line on
  stderr and exit 2 (3: training diverged); anything else propagates with
  its traceback."""
  from flax_attn.errors import DivergenceError  # pylint: disable=g-import-not-at-top
  from flax_attn.training import Preempted  # pylint: disable=g-import-not-at-top
  try:
    return body()
  except Preempted as e:
    print(str(e), file=sys.stderr)
    return e.exit_code
  except KeyboardInterrupt:
    print('interrupted (Ctrl-C); the checkpoints written so far are intact',
          file=sys.stderr)
    return 130
  except DivergenceError as e:
    print(f'error: {str(e).splitlines()[0]}', file=sys.stderr)
    return 3
  except UserError as e:
    print(f'error: {str(e).splitlines()[0] if str(e) else type(e).__name__}',
          file=sys.stderr)
    return 2

"""What train.py and eval.py share: flags, start-up and one-line failures."""
from __future__ import annotations

import json
import logging
import os
import sys
from typing import Callable

from absl import flags
from ml_collections import config_flags

from flax_attn.errors import ConfigError
from flax_attn.registry import UnknownNameError

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


def start_multihost() -> None:
  """jax.distributed.initialize from the --multihost flags."""
  from flax_attn import distributed  # pylint: disable=g-import-not-at-top
  distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                         FLAGS.process_id, FLAGS.coordinator_timeout)


def _unknown_override(argv) -> str:
  """For `--config.attn_kwargs.foo=1` (a field the config does not have): a
  line naming it and what config.attn_kwargs / model_kwargs accept."""
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
    if where == 'attn_kwargs':
      hint = _attention_options(config)
    elif where:
      hint = f'; config.{where} has: {", ".join(sorted(node)) or "no fields"}'
    if where in ('attn_kwargs', 'model_kwargs'):
      hint += ('; options a config file does not set cannot be added from '
               'the command line: set it in the config file')
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


def _attention_options(config) -> str:
  try:
    from flax_attn.attention import ATTENTION, attention_fields  # pylint: disable=g-import-not-at-top
    name = config.get('attn', 'default')
    if name in ('default', 'none', '', None):
      return (f' (config.attn={name!r}: set config.attn to name the '
              'attention whose options these are)')
    return (f'; attention {name!r} takes: '
            f'{", ".join(attention_fields(ATTENTION.get(name)))}')
  except Exception:  # pylint: disable=broad-except
    return ''


def parse_flags(argv, config_optional: bool = False):
  """absl's flag parsing, with config errors as one line and exit code 2.

  A mistyped `--config.field` is caught here: the config is locked, and
  ml_collections raises while applying the override.
  """
  try:
    remaining = FLAGS(argv)
    if FLAGS['config'].value is None and not config_optional:
      raise flags.Error('flag --config must have a value other than None.')
    if FLAGS['config'].value is not None:
      FLAGS.config.get('model')  # a config file that failed to load raises
    return remaining
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


def cpu_device_count(requested: int, cores: int, batch_sizes) -> int:
  """XLA:CPU devices to split the host into (0: leave XLA's one device).

  requested: config.cpu_devices. -1 = one device per core, or the largest
  count up to that which divides every batch size; 0 = XLA's default; N = N
  (validate_config names a batch size N does not divide).
  """
  if not isinstance(requested, int) or requested < -1:
    raise ConfigError(f'config.cpu_devices={requested!r} is not valid; valid: '
                      '-1 (one per core), 0 (XLA\'s single CPU device) or a '
                      'positive count')
  if requested >= 0:
    return requested
  count = max(d for d in range(1, max(cores, 1) + 1)
              if all(b % d == 0 for b in batch_sizes))
  return count if count > 1 else 0


def with_cpu_devices(xla_flags: str, requested: int, cores: int,
                     batch_sizes, max_devices: int = 0) -> str:
  """`xla_flags` plus what splits the host into cpu_device_count(...)
  XLA:CPU devices (at most max_devices, 0 = no limit), each single-threaded
  when they fill the cores. Flags that already set a device count (or
  Eigen's threading) are kept as they are."""
  if 'xla_force_host_platform_device_count' in xla_flags:
    return xla_flags
  usable = min(cores, max_devices or cores)
  count = cpu_device_count(requested, usable, batch_sizes)
  if not count:
    return xla_flags
  extra = f'--xla_force_host_platform_device_count={count}'
  if count >= cores and 'xla_cpu_multi_thread_eigen' not in xla_flags:
    extra += ' --xla_cpu_multi_thread_eigen=false'
  return f'{xla_flags} {extra}'.strip()


def configure_cpu_devices(config) -> None:
  """Splits a CPU host into config.cpu_devices XLA:CPU devices (default: one
  per core, each single-threaded), before JAX starts its backends.

  The batch is then sharded over them as over GPUs. XLA:CPU on its own uses
  a second core poorly for CNN steps: a CIFAR ResNet-20 step ran 35% faster
  on 2 cores this way (benchmarks/README.md, change 26). Only the CPU
  backend is affected; XLA_FLAGS that already set a device count are left
  as they are.
  """
  cores = len(os.sched_getaffinity(0)) if hasattr(
      os, 'sched_getaffinity') else (os.cpu_count() or 1)
  eval_batch = config.get('eval_batch_size', 0) or config.batch_size
  flags_env = os.environ.get('XLA_FLAGS', '')
  # A mesh of config.num_devices devices uses no more of them.
  new_flags = with_cpu_devices(flags_env, config.get('cpu_devices', -1),
                               cores, (config.batch_size, eval_batch),
                               config.get('num_devices', 0))
  if new_flags != flags_env:
    os.environ['XLA_FLAGS'] = new_flags


def config_from_workdir(workdir: str):
  """The config a workdir was trained with (WORKDIR/config.json, written by
  train.py), for eval.py without --config."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir or '', 'config.json')
  try:
    with open(path) as f:
      values = json.load(f)
  except OSError:
    raise ConfigError(f'no --config given and no {path} to read it from; '
                      'pass --config configs/<experiment>.py') from None
  except ValueError as e:
    raise ConfigError(f'{path} is not valid JSON ({e}); pass --config '
                      'configs/<experiment>.py') from None
  return ml_collections.ConfigDict(values)


def start_jax(config, multihost: bool) -> None:
  """What train.py and eval.py do before building anything: CPU devices,
  multi-host initialisation, the compilation cache."""
  if not multihost:
    for name in ('coordinator_address', 'num_processes', 'process_id'):
      if FLAGS[name].present:
        raise ConfigError(f'--{name}={FLAGS[name].value} needs --multihost')
    configure_cpu_devices(config)
  else:
    start_multihost()
  cache_dir = enable_compilation_cache(config)
  if multihost and cache_dir:
    from flax_attn import distributed  # pylint: disable=g-import-not-at-top
    distributed.share_compilation_cache(cache_dir)


def enable_compilation_cache(config):
  """JAX's persistent compilation cache (config.compilation_cache_dir;
  'none' disables it). Returns its directory, or None."""
  import jax  # pylint: disable=g-import-not-at-top
  path = config.get('compilation_cache_dir', '') or os.path.join(
      os.path.expanduser('~'), '.cache', 'flax_attn', 'jax')
  if path == 'none':
    return None
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  return path


class _OrbaxErrorLogFilter(logging.Filter):
  """Drops orbax's own ERROR logs: each failing writer thread logs its
  traceback, and the same error reaches run_main as an exception, which
  prints it in one line (or, if unexpected, with its traceback)."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno < logging.ERROR:
      return True
    if f'{os.sep}orbax{os.sep}' in (record.pathname or ''):
      return False
    # asyncio, at exit, about orbax's writer tasks that failed with the
    # error already reported.
    return not (record.name == 'asyncio' and 'orbax' in record.getMessage())


def _quiet_closed_loop_callbacks(unraisable) -> None:
  """After a failed save (a full disk), TensorStore completes the writes
  still in flight and calls back into orbax's event loop, already closed:
  one 'Event loop is closed' traceback per write, nothing lost. Those are
  dropped; anything else goes to Python's default hook."""
  value = unraisable.exc_value
  if isinstance(value, RuntimeError) and 'Event loop is closed' in str(value):
    return
  sys.__unraisablehook__(unraisable)


def run_main(body: Callable[[], int]) -> int:
  """Runs `body`, turning user errors into one line on stderr and exit 2."""
  for name in ('absl', 'asyncio'):
    logging.getLogger(name).addFilter(_OrbaxErrorLogFilter())
  sys.unraisablehook = _quiet_closed_loop_callbacks
  from flax_attn.data import DatasetNotFoundError  # pylint: disable=g-import-not-at-top
  from flax_attn.errors import DivergenceError, UserError  # pylint: disable=g-import-not-at-top
  from flax_attn.train import Preempted  # pylint: disable=g-import-not-at-top
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
  except (UserError, UnknownNameError, DatasetNotFoundError) as e:
    print(f'error: {str(e).splitlines()[0]}', file=sys.stderr)
    return 2
  except ValueError as e:
    # Model / attention option checks raise ValueError with one line.
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    print(f'error: {msg}', file=sys.stderr)
    return 2

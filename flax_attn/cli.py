"""What train.py and eval.py share: flags, start-up and one-line failures."""
from __future__ import annotations

import os
import sys
from typing import Callable

from absl import flags
from ml_collections import config_flags

from flax_attn.errors import ConfigError
from flax_attn.registry import UnknownNameError

FLAGS = flags.FLAGS


def define_flags() -> None:
  config_flags.DEFINE_config_file(
      'config', None, 'Experiment config file (configs/*.py).',
      lock_config=True)
  flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics '
                      'and the resolved config.')
  flags.DEFINE_bool('multihost', False, 'Several processes (one per host) '
                    'train together: jax.distributed.initialize() first. '
                    'README.md, "Several hosts".')
  define_multihost_flags()
  flags.mark_flags_as_required(['config', 'workdir'])


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

"""Everything done to the process around JAX's start, in one place.

Every command-line entry point (train.py, eval.py, `python -m
flax_attn.visualize`, `python -m flax_attn.report`) and the notebooks get
the same set-up: `before_imports()` first thing when run as a script, then
one `start(config)` before anything touches a JAX backend. Each piece, why
it is there, and how to turn it off:

  piece                          off switch
  -----------------------------  --------------------------------------------
  malloc on huge pages (re-exec) FLAX_ATTN_HUGEPAGES=0
  TensorFlow C++ logs silenced   TF_CPP_MIN_LOG_LEVEL=<level> (yours wins)
  CPU host split into devices    config.cpu_devices=0 (or a device count in
                                 XLA_FLAGS, which is kept as it is)
  persistent compilation cache   config.compilation_cache_dir='none'
  its multi-process CPU key      FLAX_ATTN_CACHE_KEY_PATCH=0 (the cache is
                                 then off with several processes on CPU)
  orbax log and at-exit filters  FLAX_ATTN_LOG_FILTERS=0
  absl INFO logs hidden          FLAX_ATTN_LOG_FILTERS=0
  CPU platform where libtpu is   JAX_PLATFORMS=<yours> (kept as it is);
  installed but no TPU/GPU is    tpu_fit.skip_absent_tpu
  attached

Nothing here is imported by the library's modules: `import flax_attn` and
`create_model` change nothing about the process. This module imports only
the standard library at its top, so launch_env.py can load it before JAX.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Optional, Sequence

HUGEPAGES_SWITCH = 'FLAX_ATTN_HUGEPAGES'
CACHE_KEY_PATCH_SWITCH = 'FLAX_ATTN_CACHE_KEY_PATCH'
LOG_FILTERS_SWITCH = 'FLAX_ATTN_LOG_FILTERS'
DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser('~'), '.cache',
                                 'flax_attn', 'jax')


def _switched_off(name: str) -> bool:
  return os.environ.get(name, '1').strip().lower() in ('0', 'false', 'no',
                                                       'off')


# ---------------------------------------------------------------------------
# Before any import: huge pages, TensorFlow's C++ logs
# ---------------------------------------------------------------------------


def before_imports() -> None:
  """What a script does before importing JAX (or the package, which does)."""
  # tfds imports TensorFlow, whose C++ start-up logs are noise to a user.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  reexec_with_huge_pages()


def reexec_with_huge_pages() -> None:
  """Restarts this process once with malloc on transparent huge pages (Linux).

  XLA:CPU allocates a step's temporaries afresh every step, and with 4 KiB
  pages each first touch faults: a quarter of a ResNet-20 CPU step's time
  (benchmarks/README.md). glibc reads GLIBC_TUNABLES only at start-up,
  hence the re-exec, done before anything heavy is imported. Where THP is
  disabled it changes nothing. Off: FLAX_ATTN_HUGEPAGES=0.
  """
  tunables = os.environ.get('GLIBC_TUNABLES', '')
  if (not sys.platform.startswith('linux') or _switched_off(HUGEPAGES_SWITCH)
      or 'glibc.malloc.hugetlb' in tunables):
    return
  os.environ['GLIBC_TUNABLES'] = ':'.join(
      t for t in (tunables, 'glibc.malloc.hugetlb=1') if t)
  argv = getattr(sys, 'orig_argv', None) or [sys.executable] + sys.argv
  sys.stdout.flush()
  sys.stderr.flush()
  os.execv(sys.executable, [sys.executable] + list(argv[1:]))


# ---------------------------------------------------------------------------
# Before JAX starts its backends
# ---------------------------------------------------------------------------


def start(config=None, *, multihost: bool = False,
          coordinator_address: Optional[str] = None,
          num_processes: Optional[int] = None,
          process_id: Optional[int] = None,
          coordinator_timeout: Optional[int] = None) -> Optional[str]:
  """The whole set-up, before anything touches a JAX backend: log filters,
  the CPU device split (or the multi-process start), the compilation cache.

  config: the experiment's (None: no CPU split, the default cache). Where
  JAX's devices exist already (a notebook that listed them) the split is
  left out: XLA reads its flags once. Returns the compilation cache's
  directory, or None when it is off.
  """
  install_log_filters()
  # libtpu (installed for compiling to TPUs) makes JAX start a TPU runtime
  # that prints five warnings and fails where no TPU is attached: CPU then.
  from flax_attn import tpu_fit  # pylint: disable=g-import-not-at-top
  tpu_fit.skip_absent_tpu()
  if multihost:
    from flax_attn import distributed  # pylint: disable=g-import-not-at-top
    distributed.initialize(
        coordinator_address, num_processes, process_id,
        coordinator_timeout or distributed.DEFAULT_TIMEOUT_S)
  elif config is not None and not _backends_started():
    configure_cpu_devices(config)
  cache_dir = enable_compilation_cache(config)
  if multihost and cache_dir:
    from flax_attn import distributed  # pylint: disable=g-import-not-at-top
    if not distributed.share_compilation_cache(cache_dir):
      cache_dir = None
  return cache_dir


def _backends_started() -> bool:
  """Whether JAX already made its devices (a notebook that listed them):
  XLA_FLAGS are read once, so a device split would come too late."""
  if 'jax' not in sys.modules:
    return False
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):
    return False


def cpu_device_count(requested: int, cores: int, batch_sizes) -> int:
  """XLA:CPU devices to split the host into (0: leave XLA's one device).

  requested: config.cpu_devices. -1 = one device per core, or the largest
  count up to that which divides every batch size; 0 = XLA's default; N = N
  (validate_config names a batch size N does not divide).
  """
  from flax_attn.errors import ConfigError  # pylint: disable=g-import-not-at-top
  if (not isinstance(requested, int) or isinstance(requested, bool)
      or requested < -1):
    raise ConfigError(f'config.cpu_devices={requested!r} is not valid; valid: '
                      '-1 (one per core), 0 (XLA\'s single CPU device) or a '
                      'positive count')
  if requested >= 0:
    return requested
  count = max(d for d in range(1, max(cores, 1) + 1)
              if all(b % d == 0 for b in batch_sizes))
  return count if count > 1 else 0


def with_cpu_devices(xla_flags: str, requested: int, cores: int,
                     batch_sizes: Sequence[int], max_devices: int = 0) -> str:
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

  The batch is then sharded over them as over GPUs: XLA:CPU on its own uses
  a second core poorly for CNN steps (a CIFAR ResNet-20 step ran 35% faster
  on 2 cores this way, benchmarks/README.md). Only the CPU backend is
  affected. Off: config.cpu_devices=0, or XLA_FLAGS that set a device count
  (kept as they are).
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


# ---------------------------------------------------------------------------
# The persistent compilation cache
# ---------------------------------------------------------------------------


def enable_compilation_cache(config=None) -> Optional[str]:
  """JAX's persistent compilation cache: a rerun loads its compiled steps
  instead of compiling them again (minutes for the large models).

  Directory: config.compilation_cache_dir ('' = ~/.cache/flax_attn/jax).
  Off: 'none'. Returns the directory, or None.
  """
  import jax  # pylint: disable=g-import-not-at-top
  path = (config.get('compilation_cache_dir', '') if config is not None
          else '') or DEFAULT_CACHE_DIR
  if path == 'none':
    return None
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  return path


def share_compilation_cache_keys() -> bool:
  """Makes the persistent-cache key of a multi-process CPU program the same
  in every process.

  JAX hashes, on CPU, the local client's topology fingerprint into every
  key, which differs per process; only process 0 writes entries, so
  process 0 hit its warm cache while process 1 missed and compiled for
  minutes, and process 0's collective timed out waiting for it. The CPU
  key then hashes the device kinds instead, as JAX does for backends
  without a topology (the program, its device assignment and the flags
  stay in the key). Patches `jax._src.cache_key._hash_accelerator_config`
  (written for JAX 0.4.3x-0.10). Returns False where that function is not
  there, or with FLAX_ATTN_CACHE_KEY_PATCH=0 (then
  `distributed.share_compilation_cache` turns the cache off instead).
  """
  if _switched_off(CACHE_KEY_PATCH_SWITCH):
    return False
  try:
    from jax._src import cache_key  # pylint: disable=g-import-not-at-top
    original = cache_key._hash_accelerator_config  # pylint: disable=protected-access
    hash_devices = cache_key._hash_devices  # pylint: disable=protected-access
  except (ImportError, AttributeError):
    return False
  if getattr(original, 'flax_attn_process_invariant', False):
    return True

  def hash_accelerator_config(hash_obj, accelerators):
    devices = list(getattr(accelerators, 'flat', accelerators))
    if (devices and devices[0].platform == 'cpu'
        and len({d.process_index for d in devices}) > 1):
      # The CPU topology fingerprint is the local client's: per process.
      hash_devices(hash_obj, accelerators)
      return None
    return original(hash_obj, accelerators)

  hash_accelerator_config.flax_attn_process_invariant = True
  cache_key._hash_accelerator_config = hash_accelerator_config  # pylint: disable=protected-access
  return True


# ---------------------------------------------------------------------------
# Logs: one line per failure, not one traceback per writer thread
# ---------------------------------------------------------------------------


class OrbaxErrorLogFilter(logging.Filter):
  """Drops orbax's own ERROR logs: each failing writer thread logs its
  traceback, and the same error reaches cli.run_main as an exception, which
  prints it in one line (or, if unexpected, with its traceback)."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno < logging.ERROR:
      return True
    if f'{os.sep}orbax{os.sep}' in (record.pathname or ''):
      return False
    # asyncio, at exit, about orbax's writer tasks that failed with the
    # error already reported.
    return not (record.name == 'asyncio' and 'orbax' in record.getMessage())


def quiet_closed_loop_callbacks(unraisable) -> None:
  """After a failed save (a full disk), TensorStore completes the writes
  still in flight and calls back into orbax's event loop, already closed:
  one 'Event loop is closed' traceback per write, nothing lost. Those are
  dropped; anything else goes to Python's default hook."""
  value = unraisable.exc_value
  if isinstance(value, RuntimeError) and 'Event loop is closed' in str(value):
    return
  sys.__unraisablehook__(unraisable)


def install_log_filters() -> None:
  """absl at WARNING (orbax logs every save at INFO), the orbax filter on
  absl's and asyncio's loggers, and the unraisable hook above. Installed
  once; off: FLAX_ATTN_LOG_FILTERS=0."""
  if _switched_off(LOG_FILTERS_SWITCH):
    return
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  absl_logging.set_verbosity(absl_logging.WARNING)
  for name in ('absl', 'asyncio'):
    logger = logging.getLogger(name)
    if not any(isinstance(f, OrbaxErrorLogFilter) for f in logger.filters):
      logger.addFilter(OrbaxErrorLogFilter())
  sys.unraisablehook = quiet_closed_loop_callbacks

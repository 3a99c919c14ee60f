"""Process set-up (flax_attn/runtime.py): a restart with malloc on huge pages
(run before JAX through launch_env.py), a CPU host split into one XLA:CPU
device per core, and each piece's off switch."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = f'''
import os, sys
sys.path.insert(0, {ROOT!r})
import launch_env
launch_env.before_imports()
print(os.environ.get('GLIBC_TUNABLES'), sys.argv[1:], '-u' in sys.orig_argv,
      'jax' in sys.modules, 'flax_attn' in sys.modules)
'''


def _run(tmp_path, **env_overrides):
  script = tmp_path / 'script.py'
  script.write_text(SCRIPT)
  env = {k: v for k, v in os.environ.items()
         if k not in ('GLIBC_TUNABLES', 'FLAX_ATTN_HUGEPAGES')}
  env.update(env_overrides)
  out = subprocess.run([sys.executable, '-u', str(script), '--a', 'b'],
                       env=env, capture_output=True, text=True, check=True)
  return out.stdout.strip().splitlines()


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc only')
def test_restarts_once_with_the_tunable_and_the_same_arguments(tmp_path):
  # One line: the first run re-executed itself before printing; the
  # interpreter flag (-u) and the arguments survive; other tunables stay.
  # Neither JAX nor the package was imported to do it.
  assert _run(tmp_path) == [
      "glibc.malloc.hugetlb=1 ['--a', 'b'] True False False"]
  assert _run(tmp_path, GLIBC_TUNABLES='glibc.malloc.check=0') == [
      "glibc.malloc.check=0:glibc.malloc.hugetlb=1 ['--a', 'b'] True False "
      'False']


def test_can_be_turned_off(tmp_path):
  assert _run(tmp_path, FLAX_ATTN_HUGEPAGES='0') == [
      "None ['--a', 'b'] True False False"]


@pytest.mark.parametrize('requested,cores,batches,want', [
    (-1, 2, (128, 128), 2),   # one device per core
    (-1, 8, (12, 20), 4),     # the most cores that divide every batch
    (-1, 2, (127, 128), 0),   # none do: XLA's single device
    (-1, 1, (128, 128), 0),
    (0, 8, (128, 128), 0),    # asked for XLA's default
    (3, 2, (128, 128), 3),    # asked for 3 (validate_config checks batches)
])
def test_cpu_device_count(requested, cores, batches, want):
  from flax_attn import runtime
  assert runtime.cpu_device_count(requested, cores, batches) == want


@pytest.mark.parametrize('bad', [-2, 1.5, 'auto'])
def test_bad_cpu_devices_value_fails_with_one_line(bad):
  from flax_attn import runtime
  from flax_attn.errors import ConfigError
  with pytest.raises(ConfigError, match=r'^config.cpu_devices=.* valid: -1 '
                     r'\(one per core\), 0 .* or a positive count$'):
    runtime.cpu_device_count(bad, 2, (128,))


@pytest.mark.parametrize('xla_flags,max_devices,want', [
    ('--a', 0, '--a --xla_force_host_platform_device_count=4 '
     '--xla_cpu_multi_thread_eigen=false'),
    ('--xla_cpu_multi_thread_eigen=true', 0,  # the user's threading stays
     '--xla_cpu_multi_thread_eigen=true '
     '--xla_force_host_platform_device_count=4'),
    ('', 2, '--xla_force_host_platform_device_count=2'),  # 2 of 4 cores
    ('--xla_force_host_platform_device_count=3', 0,
     '--xla_force_host_platform_device_count=3'),
])
def test_with_cpu_devices(xla_flags, max_devices, want):
  from flax_attn import runtime
  assert runtime.with_cpu_devices(xla_flags, -1, 4, (128,), max_devices) == want


DEVICES_SCRIPT = f'''
import os, sys
sys.path.insert(0, {ROOT!r})
import ml_collections
from flax_attn import runtime
config = ml_collections.ConfigDict(dict(batch_size=int(sys.argv[1]),
                                        eval_batch_size=0, cpu_devices=-1,
                                        num_devices=int(sys.argv[2])))
runtime.configure_cpu_devices(config)
import jax
print(len(jax.devices('cpu')), 'multi_thread_eigen=false' in os.environ['XLA_FLAGS'])
'''


@pytest.mark.parametrize('xla_flags,batch,num_devices,want', [
    ('', 'cores', 0, 'cores True'),
    ('', 'cores+1', 0, '1 False'),  # (cores + 1) % cores: no split
    ('', 'cores', 1, '1 False'),  # a one-device mesh keeps XLA's threads
    ('--xla_force_host_platform_device_count=3', 'cores', 0, '3 False'),
])
def test_cpu_host_is_split_into_one_device_per_core(tmp_path, xla_flags,
                                                    batch, num_devices, want):
  cores = len(os.sched_getaffinity(0))
  script = tmp_path / 'devices.py'
  script.write_text(DEVICES_SCRIPT)
  env = dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS='cpu')
  size = cores if batch == 'cores' else cores + 1
  out = subprocess.run([sys.executable, str(script), str(size),
                        str(num_devices)], env=env,
                       capture_output=True, text=True, check=True)
  expect = want.replace('cores', str(cores))
  if cores == 1:
    expect = '1 False' if not xla_flags else expect  # nothing to split
  assert out.stdout.strip() == expect


def test_log_filters_and_their_switch(monkeypatch):
  import logging
  from absl import logging as absl_logging
  from flax_attn import runtime
  monkeypatch.setattr(sys, 'unraisablehook', sys.__unraisablehook__)
  verbosity = absl_logging.get_verbosity()
  loggers = [logging.getLogger(n) for n in ('absl', 'asyncio')]
  ours = lambda logger: [f for f in logger.filters
                         if isinstance(f, runtime.OrbaxErrorLogFilter)]
  before = {l.name: list(l.filters) for l in loggers}
  try:
    monkeypatch.setenv('FLAX_ATTN_LOG_FILTERS', '0')
    runtime.install_log_filters()
    assert sys.unraisablehook is sys.__unraisablehook__
    assert [l.filters for l in loggers] == list(before.values())
    monkeypatch.delenv('FLAX_ATTN_LOG_FILTERS')
    runtime.install_log_filters()
    runtime.install_log_filters()  # once, however often called
    assert sys.unraisablehook is runtime.quiet_closed_loop_callbacks
    assert all(len(ours(l)) == 1 for l in loggers)
    assert absl_logging.get_verbosity() == absl_logging.WARNING
    (orbax_filter,) = ours(loggers[0])
    record = lambda path, level=logging.ERROR, name='absl': logging.LogRecord(
        name, level, path, 1, 'boom', None, None)
    assert not orbax_filter.filter(record('/site/orbax/checkpoint/a.py'))
    assert orbax_filter.filter(record('/site/orbax/checkpoint/a.py',
                                      logging.WARNING))
    assert orbax_filter.filter(record('/repo/flax_attn/train.py'))
  finally:
    for logger in loggers:
      logger.filters[:] = before[logger.name]
    absl_logging.set_verbosity(verbosity)


def test_cache_key_patch_changes_only_multi_process_keys_and_can_be_off(
    monkeypatch):
  import hashlib
  import jax
  import numpy as np
  from jax._src import cache_key
  from flax_attn import runtime
  original = cache_key._hash_accelerator_config  # pylint: disable=protected-access
  monkeypatch.setattr(cache_key, '_hash_accelerator_config', original)
  monkeypatch.setenv('FLAX_ATTN_CACHE_KEY_PATCH', '0')
  assert not runtime.share_compilation_cache_keys()
  assert cache_key._hash_accelerator_config is original  # pylint: disable=protected-access
  monkeypatch.delenv('FLAX_ATTN_CACHE_KEY_PATCH')
  assert runtime.share_compilation_cache_keys()
  patched = cache_key._hash_accelerator_config  # pylint: disable=protected-access
  assert patched is not original and patched.flax_attn_process_invariant
  # One process: the same key as JAX's own.
  digests = []
  for fn in (original, patched):
    h = hashlib.sha256()
    fn(h, np.array(jax.devices()))
    digests.append(h.hexdigest())
  assert digests[0] == digests[1]


def test_compilation_cache_off_switch_and_directory(tmp_path):
  import jax
  import ml_collections
  from flax_attn import runtime
  off = ml_collections.ConfigDict(dict(compilation_cache_dir='none'))
  before = jax.config.jax_compilation_cache_dir
  assert runtime.enable_compilation_cache(off) is None
  assert jax.config.jax_compilation_cache_dir == before
  on = ml_collections.ConfigDict(dict(compilation_cache_dir=str(tmp_path)))
  try:
    assert runtime.enable_compilation_cache(on) == str(tmp_path)
    assert jax.config.jax_compilation_cache_dir == str(tmp_path)
  finally:
    jax.config.update('jax_compilation_cache_dir', before)

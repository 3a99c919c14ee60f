"""Process set-up of train.py / eval.py: a restart with malloc on huge pages
(launch_env), and a CPU host split into one XLA:CPU device per core (cli)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = f'''
import os, sys
sys.path.insert(0, {ROOT!r})
import launch_env
launch_env.reexec_with_huge_pages()
print(os.environ.get('GLIBC_TUNABLES'), sys.argv[1:], '-u' in sys.orig_argv)
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
  assert _run(tmp_path) == ["glibc.malloc.hugetlb=1 ['--a', 'b'] True"]
  assert _run(tmp_path, GLIBC_TUNABLES='glibc.malloc.check=0') == [
      "glibc.malloc.check=0:glibc.malloc.hugetlb=1 ['--a', 'b'] True"]


def test_can_be_turned_off(tmp_path):
  assert _run(tmp_path, FLAX_ATTN_HUGEPAGES='0') == ["None ['--a', 'b'] True"]


@pytest.mark.parametrize('requested,cores,batches,want', [
    (-1, 2, (128, 128), 2),   # one device per core
    (-1, 8, (12, 20), 4),     # the most cores that divide every batch
    (-1, 2, (127, 128), 0),   # none do: XLA's single device
    (-1, 1, (128, 128), 0),
    (0, 8, (128, 128), 0),    # asked for XLA's default
    (3, 2, (128, 128), 3),    # asked for 3 (validate_config checks batches)
])
def test_cpu_device_count(requested, cores, batches, want):
  from flax_attn import cli
  assert cli.cpu_device_count(requested, cores, batches) == want


@pytest.mark.parametrize('bad', [-2, 1.5, 'auto'])
def test_bad_cpu_devices_value_fails_with_one_line(bad):
  from flax_attn import cli
  from flax_attn.errors import ConfigError
  with pytest.raises(ConfigError, match=r'^config.cpu_devices=.* valid: -1 '
                     r'\(one per core\), 0 .* or a positive count$'):
    cli.cpu_device_count(bad, 2, (128,))


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
  from flax_attn import cli
  assert cli.with_cpu_devices(xla_flags, -1, 4, (128,), max_devices) == want


DEVICES_SCRIPT = f'''
import os, sys
sys.path.insert(0, {ROOT!r})
import ml_collections
from flax_attn import cli
config = ml_collections.ConfigDict(dict(batch_size=int(sys.argv[1]),
                                        eval_batch_size=0, cpu_devices=-1,
                                        num_devices=int(sys.argv[2])))
cli.configure_cpu_devices(config)
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

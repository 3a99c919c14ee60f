"""Test set-up: 8 virtual CPU devices (for sharding tests), repo on sys.path."""
import os
import sys

import pytest

# Must be set before JAX initialises its backends. Tests check numbers, not
# speed, and are mostly XLA:CPU compiles: skipping LLVM's expensive passes and
# optimising at LLVM level 1 (of 3) cut the suite from 14:53 to 8:51 on 2
# cores, with every result within its tolerance. (Level 0 produced NaN
# gradients in a CSCA-ResNet train step.) The SIGTERM/resume test runs the
# CLI with the default level, as users do.
FAST_COMPILE = ('--xla_llvm_disable_expensive_passes=true '
                '--xla_backend_optimization_level=1')
os.environ.setdefault(
    'XLA_FLAGS', f'--xla_force_host_platform_device_count=8 {FAST_COMPILE}')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# gcsfs reads this once, at import: any test (or library) that imports it
# before the gcs_emulator fixture would otherwise make every bucket call
# wait 60 s for the Storage Control gRPC API the emulator lacks.
os.environ.setdefault('GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT', 'false')

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _cpu_kernels_off_after_each_test():
  """train.py / eval.py switch flax_attn's CPU kernels on for the process
  (config.cpu_kernels='auto' on CPU); later tests start from the default."""
  yield
  from flax_attn import cpu_kernels  # pylint: disable=g-import-not-at-top
  cpu_kernels.configure('off', 'cpu')


@pytest.fixture(scope='session')
def gcs_emulator():
  """A Cloud Storage emulator on 127.0.0.1 for this session (see
  gcs_emulator.py), with the environment pointing every storage layer at it;
  killed and the environment restored at the end."""
  import gcs_emulator as emu  # pylint: disable=g-import-not-at-top
  emulator = emu.start()
  saved = {k: os.environ.get(k) for k in emulator.env}
  os.environ.update(emulator.env)
  try:
    yield emulator
  finally:
    for key, value in saved.items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value
    emulator.stop()

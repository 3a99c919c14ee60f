"""Test set-up: 8 virtual CPU devices (for sharding tests), repo on sys.path."""
import os
import sys

# Must be set before JAX initialises its backends. Tests check numbers, not
# speed: skipping LLVM's expensive passes cuts XLA:CPU compile time by about
# a quarter with identical results. (--xla_backend_optimization_level=0
# halves it but produced NaN gradients in a CSCA-ResNet train step.)
FAST_COMPILE = '--xla_llvm_disable_expensive_passes=true'
os.environ.setdefault(
    'XLA_FLAGS', f'--xla_force_host_platform_device_count=8 {FAST_COMPILE}')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


# The longest tests (tens of seconds each, mostly XLA compiles) go first, so
# that pytest-xdist's two workers do not end with one of them running a
# long test alone.
LONGEST_FIRST = ('test_configs_run.py', 'test_sigterm_saves',
                 'test_eight_devices_match_one_device', 'test_end_to_end',
                 'test_quickstart_learns')


def pytest_collection_modifyitems(session, config, items):
  del session, config
  items.sort(key=lambda item: not any(name in item.nodeid
                                      for name in LONGEST_FIRST))

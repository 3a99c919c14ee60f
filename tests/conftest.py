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

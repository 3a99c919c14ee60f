"""Test set-up: 8 virtual CPU devices (for sharding tests), repo on sys.path."""
import os
import sys

# Must be set before JAX initialises its backends. Tests check numbers, not
# speed: LLVM's optimisation level 0 halves XLA:CPU compile times.
FAST_COMPILE = '--xla_backend_optimization_level=0'
os.environ.setdefault(
    'XLA_FLAGS', f'--xla_force_host_platform_device_count=8 {FAST_COMPILE}')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

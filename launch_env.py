"""The one thing train.py and eval.py run before importing JAX.

flax_attn/runtime.py owns all process set-up (and documents each piece and
its off switch); this file loads that module by its path, without the
flax_attn package, whose import pulls in JAX: a re-exec after that would
waste its import time.
"""
import importlib.util
import os


def _runtime():
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      'flax_attn', 'runtime.py')
  spec = importlib.util.spec_from_file_location('_flax_attn_runtime', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def before_imports() -> None:
  """flax_attn.runtime.before_imports: TensorFlow's C++ logs off, then a
  restart with malloc on huge pages (FLAX_ATTN_HUGEPAGES=0: no restart)."""
  _runtime().before_imports()


# The name train.py / eval.py used before flax_attn/runtime.py existed.
reexec_with_huge_pages = before_imports

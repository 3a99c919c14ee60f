"""Process set-up train.py and eval.py do before importing JAX.

Kept out of the flax_attn package so that it runs before the package (and
JAX) is imported: a re-exec after that would waste their import time.
"""
import os
import sys


def reexec_with_huge_pages() -> None:
  """Restarts this process once with malloc on transparent huge pages (Linux).

  XLA:CPU allocates a step's temporaries afresh every step, and with 4 KiB
  pages each first touch faults: a quarter of a ResNet-20 CPU step's time
  here (benchmarks/README.md). glibc reads GLIBC_TUNABLES only at start-up,
  hence the re-exec, before anything heavy is imported. FLAX_ATTN_HUGEPAGES=0
  turns it off; where THP is disabled it changes nothing.
  """
  tunables = os.environ.get('GLIBC_TUNABLES', '')
  if (not sys.platform.startswith('linux')
      or os.environ.get('FLAX_ATTN_HUGEPAGES', '1') == '0'
      or 'glibc.malloc.hugetlb' in tunables):
    return
  os.environ['GLIBC_TUNABLES'] = ':'.join(
      t for t in (tunables, 'glibc.malloc.hugetlb=1') if t)
  argv = getattr(sys, 'orig_argv', None) or [sys.executable] + sys.argv
  sys.stdout.flush()
  sys.stderr.flush()
  os.execv(sys.executable, [sys.executable] + list(argv[1:]))

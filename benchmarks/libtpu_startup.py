"""JAX start-up on a machine with no TPU, with and without libtpu installed.

  python benchmarks/libtpu_startup.py --without PYTHON --with PYTHON [--repeats 5]

PYTHON are two interpreters with the same packages except libtpu (e.g. the
system one and a venv made with --system-site-packages plus
`pip install "jax[tpu]"`). JAX_PLATFORMS is unset, as for a user. Cases,
interleaved (A, B, C, A, B, C, ...), each a fresh process:

  without  `import flax_attn, jax; jax.devices()`, no libtpu
  with     the same, libtpu installed (JAX starts the TPU backend, fails)
  handled  libtpu installed, flax_attn.tpu_fit.skip_absent_tpu() first

Prints the median wall time and the lines each case writes to stderr.
"""
import argparse
import json
import os
import statistics
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Both import flax_attn (as train.py does), so that the difference is the
# TPU backend's start and skip_absent_tpu's checks.
PLAIN = ('from flax_attn import tpu_fit; '
         'import jax; print(jax.devices()[0].platform)')
HANDLED = ('from flax_attn import tpu_fit; tpu_fit.skip_absent_tpu(); '
           'import jax; print(jax.devices()[0].platform)')


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--without', required=True)
  parser.add_argument('--with', dest='with_', required=True)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--out', default='')
  args = parser.parse_args()
  env = {k: v for k, v in os.environ.items() if k != 'JAX_PLATFORMS'}
  env['PYTHONPATH'] = ROOT
  cases = {'without': (args.without, PLAIN), 'with': (args.with_, PLAIN),
           'handled': (args.with_, HANDLED)}
  times = {k: [] for k in cases}
  stderr_lines = {}
  platform = {}
  for _ in range(args.repeats):
    for name, (python, code) in cases.items():
      start = time.perf_counter()
      result = subprocess.run([python, '-c', code], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=300,
                              check=True)
      times[name].append(time.perf_counter() - start)
      stderr_lines[name] = len(result.stderr.strip().splitlines())
      platform[name] = result.stdout.strip()
  summary = {name: dict(median_s=round(statistics.median(t), 3),
                        runs_s=[round(x, 3) for x in t],
                        stderr_lines=stderr_lines[name],
                        platform=platform[name])
             for name, t in times.items()}
  print(json.dumps(summary, indent=1))
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(summary, f, indent=1)


if __name__ == '__main__':
  main()

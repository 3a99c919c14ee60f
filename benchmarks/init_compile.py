"""Compile time of a network's initial train state under each PRNG (change 31).

`train.py` builds its state with one jitted `create_train_state` (parameters,
BatchNorm statistics, optimiser state). On XLA:CPU the compile of that
function is dominated by the random draws, one piece of code per parameter,
so it depends on the key's implementation. For each model and each of
'threefry2x32' (JAX's default), 'rbg' (what train.py used before change 31)
and flax_attn's 'flax_attn_hash' (`flax_attn.init_key`), this times
`lower()` + `compile()` in a fresh process and counts the optimised HLO's
lines.

  python benchmarks/init_compile.py                       # the default models
  python benchmarks/init_compile.py --models resnet20,mgan_res2net50 \\
      --json benchmarks/results/init_compile.json

Runs on whatever XLA:CPU gives (the default flags, as train.py runs);
`--threads 1` pins each worker to one core, as the speed table's
single-core rows do.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMPLS = ('threefry2x32', 'rbg', 'flax_attn_hash')
MODELS = {  # name: (image size, classes)
    'resnet20': (32, 10),
    'resnet50': (224, 1000),
    'cbam_resnet50': (224, 1000),
    'mgan_res2net50': (224, 100),
}


def _worker(model_name: str, impl: str) -> dict:
  sys.path.insert(0, REPO)
  import functools  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from flax_attn import create_model, train  # pylint: disable=g-import-not-at-top
  from flax_attn.init_rng import init_key  # pylint: disable=g-import-not-at-top
  size, classes = MODELS.get(model_name, (224, 1000))
  model = create_model(model_name, classes)
  tx = optax.sgd(0.1, momentum=0.9)
  init = jax.jit(functools.partial(
      train.create_train_state, model=model, tx=tx,
      image_shape=(size, size, 3), use_ema=False))
  key = init_key(0) if impl == 'flax_attn_hash' else jax.random.key(0, impl=impl)
  t = time.perf_counter()
  lowered = init.lower(key)
  lower_s = time.perf_counter() - t
  t = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t
  t = time.perf_counter()
  jax.block_until_ready(compiled(key))
  run_s = time.perf_counter() - t
  params = sum(x.size for x in jax.tree_util.tree_leaves(
      jax.eval_shape(init, key).params))
  return dict(model=model_name, impl=impl, lower_s=lower_s,
              compile_s=compile_s, run_s=run_s, params=int(params),
              hlo_lines=compiled.as_text().count('\n'))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--models', default=','.join(MODELS))
  parser.add_argument('--impls', default=','.join(IMPLS))
  parser.add_argument('--threads', type=int, default=0,
                      help='1: pin each worker to one core (taskset)')
  parser.add_argument('--json', default='')
  parser.add_argument('--worker', nargs=2, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    print(json.dumps(_worker(*args.worker)))
    return
  rows = []
  print(f'{"model":16s} {"impl":15s} {"lower s":>8s} {"compile s":>10s} '
        f'{"run s":>6s} {"HLO lines":>10s}')
  for model_name in args.models.split(','):
    for impl in args.impls.split(','):
      cmd = [sys.executable, os.path.abspath(__file__), '--worker',
             model_name, impl]
      if args.threads == 1:
        cmd = ['taskset', '-c', '1'] + cmd
      out = subprocess.run(cmd, capture_output=True, text=True, check=False)
      if out.returncode:
        sys.exit(f'{model_name}/{impl} failed:\n{out.stderr[-2000:]}')
      row = json.loads(out.stdout.strip().splitlines()[-1])
      row['load'] = os.getloadavg()[0]
      rows.append(row)
      print(f'{model_name:16s} {impl:15s} {row["lower_s"]:8.1f} '
            f'{row["compile_s"]:10.1f} {row["run_s"]:6.2f} '
            f'{row["hlo_lines"]:10d}', flush=True)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(rows, f, indent=1)


if __name__ == '__main__':
  main()

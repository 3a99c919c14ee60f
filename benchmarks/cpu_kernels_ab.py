"""A/B: CPU train-step speed with and without flax_attn/cpu_kernels.py.

  python benchmarks/cpu_kernels_ab.py --baseline /path/to/other/checkout

Alternates, round by round, three runs of the quick start (train.py,
configs/quickstart.py: SE-ResNet-20 on 8 x 8 digits, batch 64, no
evaluation, no checkpoints): the baseline checkout's train.py, this
checkout's with config.cpu_kernels='auto' (on, on CPU) and with 'off' (the
plain flax / lax layers). Each run's figure is the median of its logged
images/s windows after the first (which holds the compile); the table gives
the median over rounds.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(tree, extra, steps, timeout):
  with tempfile.TemporaryDirectory() as workdir:
    cmd = [sys.executable, 'train.py', '--config', 'configs/quickstart.py',
           '--workdir', workdir, f'--config.num_train_steps={steps}',
           '--config.log_every_steps=20', '--config.eval_every_steps=100000',
           '--config.checkpoint_every_steps=100000',
           '--config.progress_bar=false'] + extra
    env = {**os.environ, 'PYTHONPATH': tree}
    subprocess.run(cmd, cwd=tree, env=env, check=True, timeout=timeout,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      rates = [r['images_per_sec'] for r in map(json.loads, f)
               if 'images_per_sec' in r]
  return statistics.median(rates[1:])


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--baseline', required=True, help='another checkout')
  p.add_argument('--rounds', type=int, default=3)
  p.add_argument('--steps', type=int, default=140)
  p.add_argument('--timeout', type=int, default=900)
  args = p.parse_args()
  variants = {'baseline': (args.baseline, []),
              'cpu_kernels=auto': (REPO, ['--config.cpu_kernels=auto']),
              'cpu_kernels=off': (REPO, ['--config.cpu_kernels=off'])}
  results = {name: [] for name in variants}
  for r in range(args.rounds):
    for name, (tree, extra) in variants.items():
      results[name].append(run(tree, extra, args.steps, args.timeout))
      print(f'round {r}: {name}: {results[name][-1]:.0f} images/s',
            flush=True)
  base = statistics.median(results['baseline'])
  for name, rates in results.items():
    median = statistics.median(rates)
    print(f'{name:18s} median {median:7.0f} images/s ({median / base:.3f} '
          f'of baseline); rounds: {", ".join(f"{x:.0f}" for x in rates)}')


if __name__ == '__main__':
  main()

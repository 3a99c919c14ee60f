"""Every config compiled for TPU slices without a TPU: memory, fit, batch.

  python benchmarks/tpu_fit.py                       # every row, in priority order
  python benchmarks/tpu_fit.py --rows 'fit/*@v5e-1'  # some rows (fnmatch, or a group)
  python benchmarks/tpu_fit.py --rows resnet50_vs_flax --redo
  python benchmarks/tpu_fit.py --table               # markdown from the results

Needs libtpu (`pip install "jax[tpu]"`); runs on CPU. Each row is one
`flax_attn.tpu_fit.fit_report` in its own subprocess under --timeout,
written to --out (JSON) as soon as it finishes; rows already there are
skipped (resumable), except with --redo. A row that timed out is recorded
as such and retried only with --redo; several drivers may share --out (a
row is claimed, 'running', before it starts).

Row groups, in the order they run:
  fit/CONFIG@TOPOLOGY   each config at its own batch and image size
  max/CONFIG@v5e-1      the largest per-chip batch (ImageNet-sized configs)
  resnet50_vs_flax/...  flax_attn's resnet50 and a plain flax.linen
                        ResNet-50 (benchmarks/flax_resnet50.py), same step,
                        topology, batch and dtype
  csm_blockwise_vs_xla/...  csm_resnet50 with the blockwise position
                        attention and with implementation='xla'
  gpu/CONFIG@h100-8     compile-only H100s (needs jax[cuda12], no GPU):
                        python benchmarks/tpu_fit.py --rows gpu
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import fnmatch
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DEFAULT_OUT = os.path.join(ROOT, 'benchmarks', 'results', 'tpu_fit.json')

# (row name, config module, variant or None); ablation configs at their
# default variant. Small images first: they compile in seconds.
CONFIGS = [
    ('quickstart', 'quickstart', None),
    ('default', 'default', None),
    ('mlan_resnet20_cifar10', 'mlan_resnet20_cifar10', None),
    ('mlan_resnet20_cifar100', 'mlan_resnet20_cifar100', None),
    ('mlan_resnet20_ablation', 'mlan_resnet20_ablation', None),
    ('hga_resnet110_cifar10', 'hga_resnet110_cifar10', None),
    ('csm_resnet18_cifar100', 'csm_resnet18_cifar100', None),
    ('mgan_resnet18_cifar10', 'mgan_resnet18_cifar10', None),
    ('mgan_res2net18_kernels', 'mgan_res2net18_kernels', None),
    ('mgan_res2net50_mini_imagenet', 'mgan_res2net50_mini_imagenet', None),
    ('hga_resnet50', 'hga_resnet50', None),
    ('csm_resnet50_imagenet', 'csm_resnet50_imagenet', None),
    ('csm_resnet50_ablation', 'csm_resnet50_ablation', None),
    ('hga_resnet101_ablation', 'hga_resnet101_ablation', None),
    ('csca_resnet50_cub', 'csca_resnet50_cub', None),
    ('csca_resnet50_cars', 'csca_resnet50_cars', None),
    ('csca_resnet50_dogs', 'csca_resnet50_dogs', None),
]
IMAGENET_SIZED = {'hga_resnet50', 'csm_resnet50_imagenet',
                  'csm_resnet50_ablation', 'hga_resnet101_ablation',
                  'csca_resnet50_cub', 'csca_resnet50_cars',
                  'csca_resnet50_dogs'}
COMPARE_TOPOLOGY = 'v5e-8'


def load_config(module: str, variant=None):
  config = importlib.import_module(f'configs.{module}')
  return config.get_config(variant) if variant else config.get_config()


NOTEBOOKS = {
    # notebooks/quickstart.ipynb's defaults on a TPU: resnet20 + cbam, width
    # 16, CIFAR-10, batch 128, bfloat16.
    'quickstart_notebook': dict(
        config='quickstart', overrides=dict(
            model='resnet20', attn='cbam', dataset='cifar10', image_size=32,
            batch_size=128, dtype='bfloat16'),
        model_kwargs=dict(width=16)),
    # notebooks/paper_experiment.ipynb's default config on a TPU (bfloat16).
    'paper_experiment_notebook': dict(
        config='mlan_resnet20_cifar10', overrides=dict(dtype='bfloat16')),
}


def rows():
  """Row id -> spec (config, topology, options), in run order."""
  small = [c for c in CONFIGS if c[0] not in IMAGENET_SIZED]
  large = [c for c in CONFIGS if c[0] in IMAGENET_SIZED]
  out = {}

  def fit(configs, topology):
    for name, _, _ in configs:
      out[f'fit/{name}@{topology}'] = dict(config=name, topology=topology)

  # The fit question first: every config on Colab's v5e-1 and on a v5e-8
  # host, the ImageNet-sized ones (the question) before the CIFAR ones.
  fit(large[:1], 'v5e-8')
  out[f'resnet50_vs_flax/flax_attn@{COMPARE_TOPOLOGY}'] = dict(
      config='hga_resnet50', topology=COMPARE_TOPOLOGY,
      overrides=dict(model='resnet50', attn='none', dtype='bfloat16'))
  out[f'resnet50_vs_flax/plain_flax@{COMPARE_TOPOLOGY}'] = dict(
      config='hga_resnet50', topology=COMPARE_TOPOLOGY,
      overrides=dict(model='resnet50', attn='none', dtype='bfloat16'),
      plain_flax=True)
  fit(large[1:], 'v5e-8')
  # The blockwise row is fit/csm_resnet50_imagenet@v5e-8.
  out[f'csm_blockwise_vs_xla/xla@{COMPARE_TOPOLOGY}'] = dict(
      config='csm_resnet50_imagenet', topology=COMPARE_TOPOLOGY,
      attn_overrides=dict(implementation='xla'))
  fit(large, 'v5e-1')
  for name, spec in NOTEBOOKS.items():
    for topology in ('v5e-1', 'v2-8'):
      out[f'notebook/{name}@{topology}'] = dict(spec, topology=topology)
  fit(small, 'v5e-1')
  fit(small, 'v5e-8')
  fit(CONFIGS, 'v2-8')
  fit(CONFIGS, 'v6e-8')
  fit(CONFIGS, 'v4-32')
  for name, _, _ in large:
    out[f'max/{name}@v5e-1'] = dict(config=name, topology='v5e-1',
                                    max_batch=True)
  # Compile-only GPUs (XLA's H100 description; run with an interpreter that
  # has jax[cuda12], e.g. --rows gpu).
  for name in ('quickstart', 'mlan_resnet20_cifar10', 'hga_resnet50'):
    out[f'gpu/{name}@h100-8'] = dict(config=name, topology='h100-8')
  return out


def select(all_rows, patterns):
  if not patterns:
    return list(all_rows)
  chosen = []
  for row in all_rows:
    for pattern in patterns.split(','):
      if fnmatch.fnmatch(row, pattern) or row.split('/')[0] == pattern:
        chosen.append(row)
        break
  return chosen


def build_config(spec):
  module, variant = {n: (m, v) for n, m, v in CONFIGS}[spec['config']]
  config = load_config(module, variant)
  for key, value in spec.get('overrides', {}).items():
    config[key] = value
  for key, value in spec.get('model_kwargs', {}).items():
    config.model_kwargs[key] = value
  for key, value in spec.get('attn_overrides', {}).items():
    config.attn_kwargs[key] = value
  return config


def run_one(row: str, result_file: str) -> None:
  """In the subprocess: one fit_report, its dict written to result_file."""
  from flax_attn import tpu_fit  # pylint: disable=g-import-not-at-top
  spec = rows()[row]
  tpu_fit.prepare_compile_only(spec['topology'])
  config = build_config(spec)
  model = None
  if spec.get('plain_flax'):
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    from benchmarks.flax_resnet50 import PlainResNet50  # pylint: disable=g-import-not-at-top
    from flax_attn import data as data_lib  # pylint: disable=g-import-not-at-top
    classes = data_lib.get_dataset_spec(config.dataset).num_classes
    model = PlainResNet50(num_classes=classes,
                          dtype=jnp.dtype(config.dtype))
  report = tpu_fit.fit_report(config, spec['topology'],
                              max_batch=spec.get('max_batch', False),
                              log=lambda line: print(line, flush=True),
                              model=model)
  print(tpu_fit.format_report(report), flush=True)
  result = report.as_dict()
  result.update(row=row, status='ok' if report.fits else 'does_not_fit',
                dtype=config.dtype, image_size=config.image_size,
                model=config.model)
  with open(result_file, 'w') as f:
    json.dump(result, f)


def load(path):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def save(path, results):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(results, f, indent=1, sort_keys=True)
  os.replace(tmp, path)


@contextlib.contextmanager
def _locked(path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + '.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    yield


def drive(args) -> None:
  results = load(args.out)
  skipped = set(select(rows(), args.skip)) if args.skip else set()
  for row in select(rows(), args.rows):
    if row in skipped:
      continue
    with _locked(args.out):  # claimed, so that a second driver skips it
      results = load(args.out)
      if row in results and not args.redo:
        continue
      results[row] = {'row': row, 'status': 'running'}
      save(args.out, results)
    start = time.time()
    print(f'{time.strftime("%H:%M:%S")} {row}', flush=True)
    with tempfile.TemporaryDirectory() as tmp:
      result_file = os.path.join(tmp, 'row.json')
      log_path = os.path.join(tmp, 'log.txt')
      env = dict(os.environ, PYTHONPATH=ROOT)
      try:
        with open(log_path, 'w') as log:
          proc = subprocess.run(
              [sys.executable, __file__, '--one', row, '--result_file',
               result_file], cwd=ROOT, env=env, stdout=log,
              stderr=subprocess.STDOUT, timeout=args.timeout, check=False)
        status = None if proc.returncode == 0 else f'failed ({proc.returncode})'
      except subprocess.TimeoutExpired:
        status = f'timeout ({args.timeout} s)'
      with open(log_path) as f:
        lines = [l for l in f.read().splitlines() if l.startswith(
            ('per-device', 'error', 'Traceback')) or 'Error' in l]
      result = load(result_file) if status is None else {
          'row': row, 'status': status, 'log_tail': lines[-3:]}
    result['wall_seconds'] = round(time.time() - start, 1)
    with _locked(args.out):  # another driver may have added rows
      results = load(args.out)
      results[row] = result
      save(args.out, results)
    print(f'  -> {result["status"]} '
          f'{result.get("total_bytes", 0) / 2**30:.2f} GiB '
          f'[{result["wall_seconds"]} s]', flush=True)


def _gib(n):
  return f'{n / 2**30:.3f}'


def _tflops(flops):
  return 'not given' if flops is None else f'{flops / 1e12:.3g}'


def table(path, measured_only: bool = False) -> str:
  """Markdown table of the rows; rows not measured say so (or are left out
  with measured_only)."""
  results = load(path)
  lines = ['| row | topology | batch (per device) | args | temps | '
           'outputs (donated) | total / HBM | fits | largest per-device '
           'batch | TFLOPs / image | compile s |',
           '|---|---|---|---|---|---|---|---|---|---|---|']
  for row, spec in rows().items():
    r = results.get(row)
    label = f'{row.split("/")[0]}: {row.split("/", 1)[1].split("@")[0]}'
    if r is None or r.get('status') not in ('ok', 'does_not_fit'):
      if not measured_only:
        why = 'not measured' if r is None else r['status']
        lines.append(f'| {label} | {spec["topology"]} | | | | | | {why} | | '
                     '| |')
      continue
    largest = ('' if r.get('max_per_device_batch') is None
               else f'{r["max_per_device_batch"]} ({r["max_batch_note"]})')
    fits = 'yes' if r['fits'] else f'**no** {r.get("compiler_message", "")}'
    lines.append(
        f'| {label} ({r.get("model", "")}, {r.get("image_size", "")} px, '
        f'{r.get("dtype", "")}) | {r["topology"]} ({r["hosts"]} '
        f'host{"s" if r["hosts"] > 1 else ""}) | '
        f'{r["global_batch"]} ({r["per_device_batch"]}) | '
        f'{_gib(r["argument_bytes"])} | {_gib(r["temporary_bytes"])} | '
        f'{_gib(r["output_bytes"])} ({_gib(r["alias_bytes"])}) | '
        f'{_gib(r["total_bytes"])} / {_gib(r["hbm_bytes"])} | {fits} | '
        f'{largest} | {_tflops(r["flops_per_image"])} | '
        f'{r["compile_seconds"]:.0f} |')
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--rows', default='', help='comma-separated fnmatch '
                      'patterns on row ids, or group names (fit, max, '
                      'resnet50_vs_flax, csm_blockwise_vs_xla)')
  parser.add_argument('--out', default=DEFAULT_OUT)
  parser.add_argument('--timeout', type=int, default=1800,
                      help='seconds per row')
  parser.add_argument('--skip', default='', help='patterns of rows not '
                      'to run (as --rows)')
  parser.add_argument('--redo', action='store_true',
                      help='run rows already in --out again')
  parser.add_argument('--table', action='store_true')
  parser.add_argument('--measured_only', action='store_true',
                      help='with --table: only the rows measured')
  parser.add_argument('--list', action='store_true')
  parser.add_argument('--one', help=argparse.SUPPRESS)
  parser.add_argument('--result_file', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.one:
    run_one(args.one, args.result_file)
  elif args.table:
    print(table(args.out, args.measured_only))
  elif args.list:
    print('\n'.join(select(rows(), args.rows)))
  else:
    drive(args)


if __name__ == '__main__':
  main()

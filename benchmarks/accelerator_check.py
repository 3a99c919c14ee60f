"""One-command accelerator check: training throughput, model FLOP
utilisation and CSM's memory with the blockwise position attention.

  python benchmarks/accelerator_check.py              # on one GPU or TPU
  python benchmarks/accelerator_check.py --tiny       # CPU smoke run (a test)
  python benchmarks/accelerator_check.py --cases resnet50,csm_resnet50

For each case it builds the model, optimiser and train state with
flax_attn.train (`create_optimizer`, `create_train_state`) and jits
`train.train_step` as train.py does (a mesh of all devices, batch sharded
along 'data', state replicated and donated, traced under the mesh), compiles
it, runs `--warmup` steps and times `--steps` more (one wait at the end):

  case            model            image  classes  batch  dtype
  resnet50        resnet50          224     1000    256   bf16
  hga_resnet50    hga_resnet50      224     1000    256   bf16
  mgan_res2net50  mgan_res2net50     84      100    256   bf16
  csm_resnet50    csm_resnet50      224     1000    256   bf16 (every stage)
  mlan_resnet20   mlan_resnet20      32       10   1024   bf16

Printed and written to JSON (`--json`): train img/s, step time, compile
time, XLA's temporaries / argument+output bytes of the compiled step, the
device's peak bytes in use, and model FLOP utilisation (MFU): model FLOPs per
image x img/s / (devices x the chip's peak dense bf16 FLOP/s). Model FLOPs
per image = 3 x XLA's count of one image's inference forward pass (the usual
forward + 2x backward convention; from the lowered, uncompiled program, with
the position attention in one block so XLA does not count a loop body once;
no recomputation counted). For csm_resnet50 the compiled step is also built
with `implementation='xla'` (the previous `jax.nn.dot_product_attention`
path), compiled but not run, to compare its memory.

Peaks (dense bf16, per chip) are looked up by `jax.devices()[0].device_kind`;
an unknown chip gets no MFU. `--time-budget` (default 450 s) skips the cases
that would start after it, so one run stays under 8 minutes.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

# (substring of device_kind, lower case; dense bf16 FLOP/s per chip). The
# first match wins, so 'v5 lite' (v5e) precedes 'v5'.
PEAK_BF16_FLOPS = (
    ('h200', 989e12), ('h100', 989e12), ('a100', 312e12),
    ('tpu v4', 275e12), ('tpu v5 lite', 197e12), ('tpu v5e', 197e12),
    ('tpu v5p', 459e12), ('tpu v5', 459e12), ('tpu v6 lite', 918e12),
    ('tpu v6e', 918e12), ('tpu v6', 918e12),
)


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  model: str
  image_size: int
  num_classes: int
  batch: int
  model_kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)
  attn_kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)


CASES = (
    Case('resnet50', 'resnet50', 224, 1000, 256),
    Case('hga_resnet50', 'hga_resnet50', 224, 1000, 256),
    Case('mgan_res2net50', 'mgan_res2net50', 84, 100, 256),
    Case('csm_resnet50', 'csm_resnet50', 224, 1000, 256),
    Case('mlan_resnet20', 'mlan_resnet20', 32, 10, 1024),
)

# --tiny: the same model families at a few channels, two stages of one block,
# on small images, so a case compiles and runs on CPU in seconds. CSM's
# 96 x 96 input gives a 24 x 24 stage-1 map: 576 positions, two blocks of
# queries and keys.
_TINY_RESNET = dict(stage_sizes=(1, 1), stage_widths=(4, 8),
                    stage_strides=(1, 2), stem_width=4)
TINY_CASES = (
    Case('resnet50', 'resnet50', 32, 10, 8, _TINY_RESNET),
    Case('hga_resnet50', 'hga_resnet50', 32, 10, 8, _TINY_RESNET),
    Case('mgan_res2net50', 'mgan_res2net50', 32, 10, 8,
         dict(_TINY_RESNET, stage_widths=(8, 8))),
    Case('csm_resnet50', 'csm_resnet50', 96, 10, 8, _TINY_RESNET),
    Case('mlan_resnet20', 'mlan_resnet20', 16, 10, 16, dict(width=4)),
)


def chip_peak_flops(device_kind: str) -> Optional[float]:
  kind = device_kind.lower()
  for key, peak in PEAK_BF16_FLOPS:
    if key in kind:
      return peak
  return None


@contextlib.contextmanager
def one_attention_block():
  """Position attention in one block while tracing: no loops, so XLA's
  cost analysis counts every tile (it counts a loop body once)."""
  from flax_attn import position_attention  # pylint: disable=g-import-not-at-top
  saved = position_attention.MAX_BLOCK
  position_attention.MAX_BLOCK = 1 << 30
  try:
    yield
  finally:
    position_attention.MAX_BLOCK = saved


def build_model(case: Case, dtype: str, implementation: Optional[str] = None):
  from flax_attn.models import create_model  # pylint: disable=g-import-not-at-top
  attn_kwargs = dict(case.attn_kwargs)
  if implementation is not None:
    attn_kwargs['implementation'] = implementation
  return create_model(case.model, num_classes=case.num_classes, dtype=dtype,
                      attn_kwargs=attn_kwargs or None, **case.model_kwargs)


def forward_flops_per_image(model, image_size: int) -> Optional[float]:
  """XLA's flop count of one image's inference forward (lowered only)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  with one_attention_block():
    variables = jax.eval_shape(
        lambda x: model.init(jax.random.key(0), x, train=False), images)
    lowered = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(
        variables, images)
    cost = lowered.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost['flops']) if cost and 'flops' in cost else None


def _memory(compiled) -> Dict[str, Optional[float]]:
  mem = compiled.memory_analysis()
  if mem is None:
    return dict(temp_bytes=None, argument_output_bytes=None)
  return dict(temp_bytes=float(mem.temp_size_in_bytes),
              argument_output_bytes=float(mem.argument_size_in_bytes +
                                          mem.output_size_in_bytes))


def compile_train_step(model, case: Case, mesh):
  """flax_attn.train's state and train_step, jitted as train.py does;
  returns (compiled step, state, batch). Call under `jax.set_mesh(mesh)`."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding  # pylint: disable=g-import-not-at-top
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
  from configs import default  # pylint: disable=g-import-not-at-top
  from flax_attn import train  # pylint: disable=g-import-not-at-top
  from flax_attn.init_rng import init_key  # pylint: disable=g-import-not-at-top

  config = default.get_config()  # SGD momentum 0.9, L2 5e-4, multistep lr
  config.batch_size = case.batch
  lr_fn = train.create_learning_rate_fn(config, 100, 100 * 90)
  tx = train.create_optimizer(config, lr_fn)
  replicated = NamedSharding(mesh, P())
  sharded = NamedSharding(mesh, P(mesh.axis_names[0]))
  size = case.image_size
  state = jax.jit(functools.partial(
      train.create_train_state, model=model, tx=tx,
      image_shape=(size, size, 3), use_ema=False),
                  out_shardings=replicated)(init_key(0))
  rng = np.random.default_rng(0)
  batch = {'image': jax.device_put(
      rng.standard_normal((case.batch, size, size, 3)).astype(np.float32),
      sharded), 'label': jax.device_put(
          rng.integers(0, case.num_classes, case.batch).astype(np.int32),
          sharded)}
  step = jax.jit(
      functools.partial(train.train_step, model=model, tx=tx, lr_fn=lr_fn,
                        num_classes=case.num_classes, label_smoothing=0.0,
                        ema_decay=0.0),
      in_shardings=(replicated, sharded),
      out_shardings=(replicated, replicated), donate_argnums=(0,))
  return step.lower(state, batch).compile(), state, batch


def time_steps(compiled, state, batch, warmup: int, steps: int):
  """(seconds per step, last loss, state): `warmup` steps, then `steps`
  timed together with one wait at the end (the input stays on device)."""
  import jax  # pylint: disable=g-import-not-at-top
  metrics = None
  for _ in range(warmup):
    state, metrics = compiled(state, batch)
  jax.block_until_ready((state, metrics))
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, batch)
  jax.block_until_ready((state, metrics))
  elapsed = (time.perf_counter() - start) / max(steps, 1)
  return elapsed, float(jax.device_get(metrics['train_loss'])), state


def _peak_bytes_in_use() -> Optional[float]:
  import jax  # pylint: disable=g-import-not-at-top
  try:
    stats = jax.devices()[0].memory_stats()
  except Exception:  # pylint: disable=broad-except
    return None
  return float(stats['peak_bytes_in_use']) if stats and (
      'peak_bytes_in_use' in stats) else None


def run_case(case: Case, mesh, dtype: str, warmup: int, steps: int,
             peak: Optional[float]) -> Dict[str, Any]:
  import jax  # pylint: disable=g-import-not-at-top
  model = build_model(case, dtype)
  flops = forward_flops_per_image(model, case.image_size)
  start = time.perf_counter()
  compiled, state, batch = compile_train_step(model, case, mesh)
  compile_s = time.perf_counter() - start
  step_s, loss, state = time_steps(compiled, state, batch, warmup, steps)
  del state
  images_per_s = case.batch / step_s
  row = dict(case=case.name, model=case.model, image_size=case.image_size,
             batch=case.batch, dtype=dtype, step_s=step_s,
             images_per_s=images_per_s, compile_s=compile_s, loss=loss,
             forward_flops_per_image=flops, **_memory(compiled),
             device_peak_bytes=_peak_bytes_in_use())
  model_flops = 3 * flops * images_per_s if flops else None
  row['model_flops_per_s'] = model_flops
  row['mfu'] = (model_flops / (peak * len(jax.devices()))
                if model_flops and peak else None)
  if case.model.startswith('csm'):
    # The previous path, compiled only: its memory next to the new one's.
    old, _, _ = compile_train_step(build_model(case, dtype, 'xla'), case,
                                   mesh)
    row['xla_path'] = _memory(old)
  return row


def _mib(value) -> str:
  if value is None:
    return '-'
  return f'{value / 2**20:,.{0 if value >= 2**24 else 1}f}'


def print_table(rows: List[Dict[str, Any]], out=None) -> None:
  out = out or sys.stdout
  print('| case | image | batch | train img/s | step ms | MFU | model TFLOP/s '
        '| compile s | temp MiB | args+out MiB | peak MiB |', file=out)
  print('|---|---|---|---|---|---|---|---|---|---|---|', file=out)
  for r in rows:
    if r.get('skipped'):
      print(f'| {r["case"]} | skipped: {r["skipped"]} |||||||||', file=out)
      continue
    mfu = '-' if r['mfu'] is None else f'{100 * r["mfu"]:.1f}%'
    tflops = ('-' if r['model_flops_per_s'] is None else
              f'{r["model_flops_per_s"] / 1e12:.3g}')
    print(f'| {r["case"]} | {r["image_size"]} | {r["batch"]} | '
          f'{r["images_per_s"]:,.1f} | {1e3 * r["step_s"]:.1f} | {mfu} | '
          f'{tflops} | {r["compile_s"]:.1f} | {_mib(r["temp_bytes"])} | '
          f'{_mib(r["argument_output_bytes"])} | '
          f'{_mib(r["device_peak_bytes"])} |', file=out)
  for r in rows:
    if 'xla_path' in r:
      old = r['xla_path']
      print(f'{r["case"]}: compiled step temporaries {_mib(r["temp_bytes"])} '
            f'MiB with the blockwise position attention, '
            f'{_mib(old["temp_bytes"])} MiB with the XLA '
            'dot_product_attention path', file=out)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--tiny', action='store_true',
                 help='tiny models and images, 1 warm-up and 1 timed step')
  p.add_argument('--cases', default='all',
                 help='comma-separated case names, or all')
  p.add_argument('--steps', type=int, default=None)
  p.add_argument('--warmup', type=int, default=None)
  p.add_argument('--dtype', default='bfloat16',
                 choices=('bfloat16', 'float32'))
  p.add_argument('--time-budget', type=float, default=450.0,
                 help='seconds; cases that would start later are skipped')
  p.add_argument('--json', default=None,
                 help='output file (default benchmarks/results/'
                      'accelerator_check_<device>.json)')
  return p.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.sharding import Mesh  # pylint: disable=g-import-not-at-top
  from flax_attn.ops import BATCH_AXIS  # pylint: disable=g-import-not-at-top

  cases = TINY_CASES if args.tiny else CASES
  if args.cases != 'all':
    wanted = args.cases.split(',')
    unknown = sorted(set(wanted) - {c.name for c in cases})
    if unknown:
      print(f'unknown case {unknown[0]!r}; valid: '
            f'{", ".join(c.name for c in cases)}', file=sys.stderr)
      return 2
    cases = [c for c in cases if c.name in wanted]
  warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 2)
  steps = args.steps if args.steps is not None else (1 if args.tiny else 10)
  device = jax.devices()[0]
  peak = chip_peak_flops(device.device_kind)
  backend = jax.default_backend()
  print(f'{len(jax.devices())} x {device.device_kind} ({backend}); peak '
        f'dense bf16 {peak / 1e12:.0f} TFLOP/s per chip' if peak else
        f'{len(jax.devices())} x {device.device_kind} ({backend}); no known '
        'peak, no MFU')
  if backend == 'cpu' and not args.tiny:
    print('warning: no accelerator; the full-size cases on CPU take hours '
          '(use --tiny)', file=sys.stderr)
  mesh = Mesh(np.asarray(jax.devices()), (BATCH_AXIS,))
  start = time.perf_counter()
  rows = []
  for case in cases:
    elapsed = time.perf_counter() - start
    if elapsed > args.time_budget:
      rows.append(dict(case=case.name, skipped=f'time budget ({elapsed:.0f} '
                       f's > {args.time_budget:.0f} s)'))
      continue
    with jax.set_mesh(mesh):
      rows.append(run_case(case, mesh, args.dtype, warmup, steps, peak))
    print(f'{case.name}: {rows[-1]["images_per_s"]:,.1f} img/s', flush=True)
  print_table(rows)
  result = dict(device_kind=device.device_kind, backend=backend,
                devices=len(jax.devices()), peak_bf16_flops=peak,
                tiny=args.tiny, warmup=warmup, steps=steps,
                jax_version=jax.__version__,
                total_s=time.perf_counter() - start, rows=rows)
  path = args.json or os.path.join(
      REPO, 'benchmarks', 'results', 'accelerator_check_' +
      ''.join(ch if ch.isalnum() else '_' for ch in device.device_kind.lower())
      + ('_tiny' if args.tiny else '') + '.json')
  if path != '-':
    with open(path, 'w') as f:
      json.dump(result, f, indent=1)
    print(f'wrote {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())

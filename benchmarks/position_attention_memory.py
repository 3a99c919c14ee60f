"""Memory and CPU speed of the blockwise position attention (issue 21) next
to the previous `jax.nn.dot_product_attention` ('xla') path.

  python benchmarks/position_attention_memory.py            # everything
  python benchmarks/position_attention_memory.py --parts blocks,steps_memory
  python benchmarks/position_attention_memory.py --parts times --steps 3

Parts (each a list of rows in the JSON, `--json`):
  blocks        XLA's temporaries of the compiled gradient (w.r.t. parameters
                and input) of one block at ResNet-50's stage 1, 1 x 56 x 56 x
                256, float32: CSM's position attention (mode 'spatial_only')
                and a non-local block (subsampling off, so it attends over
                all HW x HW pairs; and on, the paper's default, HW x HW/4).
                One HW x HW float32 matrix is 37.5 MiB.
  steps_memory  csm_resnet50's whole train step (flax_attn.train.train_step,
                224 x 224, `--batch`, CSM in every stage as the named model)
                compiled, not run: XLA's temporaries.
  times         train step time on CPU (median of `--steps` after one
                warm-up): CSM-ResNet-20 (resnet20 with attn='csm', 32 x 32,
                batch 32) and CSM-ResNet-50 (224 x 224, `--batch`).

The steps are built and jitted by benchmarks/accelerator_check.py's
`compile_train_step` (flax_attn.train's state and train_step, as train.py
jits them). XLA:CPU runs on one device here (no XLA_FLAGS device split).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import accelerator_check  # noqa: E402  pylint: disable=g-import-not-at-top

IMPLEMENTATIONS = ('xla', 'blockwise')
ONE_MATRIX_MIB = 3136 * 3136 * 4 / 2**20


def block_gradient_temporaries(block: str, implementation: str,
                               subsample: bool = False) -> float:
  """MiB of XLA temporaries of jit(grad) of one block at 1 x 56 x 56 x 256."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax_attn.attention.csm import ChannelSpatialModule  # pylint: disable=g-import-not-at-top
  from flax_attn.attention.non_local import NonLocalBlock  # pylint: disable=g-import-not-at-top
  if block == 'csm':
    module, kwargs = ChannelSpatialModule(
        mode='spatial_only', implementation=implementation), {}
  else:
    module, kwargs = NonLocalBlock(subsample=subsample,
                                   implementation=implementation), dict(
                                       train=True)
  x = jax.ShapeDtypeStruct((1, 56, 56, 256), jnp.float32)
  variables = jax.eval_shape(lambda: module.init(jax.random.key(0),
                                                 jnp.zeros(x.shape)))
  state = {k: v for k, v in variables.items() if k != 'params'}

  def loss(params, state, x):
    out = module.apply({**state, 'params': params}, x,
                       mutable=['batch_stats'], **kwargs)[0]
    return jnp.sum(out * out)

  compiled = jax.jit(jax.grad(loss, argnums=(0, 2))).lower(
      variables['params'], state, x).compile()
  return compiled.memory_analysis().temp_size_in_bytes / 2**20


def run_blocks() -> List[Dict[str, Any]]:
  rows = []
  for block, subsample in (('csm', False), ('nonlocal', False),
                           ('nonlocal', True)):
    row = dict(block=block, subsample=subsample, shape=(1, 56, 56, 256))
    for impl in IMPLEMENTATIONS:
      row[f'{impl}_temp_mib'] = block_gradient_temporaries(block, impl,
                                                           subsample)
    row['hw_matrix_mib'] = ONE_MATRIX_MIB
    print(f'{block}{" (subsample)" if subsample else ""}: gradient '
          f'temporaries {row["xla_temp_mib"]:.1f} MiB (xla) -> '
          f'{row["blockwise_temp_mib"]:.1f} MiB (blockwise); one HW x HW '
          f'matrix {ONE_MATRIX_MIB:.1f} MiB', flush=True)
    rows.append(row)
  return rows


def _case(name: str, batch: int) -> 'accelerator_check.Case':
  if name == 'csm_resnet20':
    return accelerator_check.Case('csm_resnet20', 'resnet20', 32, 10, batch,
                                  dict(attn='csm'))
  return accelerator_check.Case('csm_resnet50', 'csm_resnet50', 224, 1000,
                                batch)


def _mesh():
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.sharding import Mesh  # pylint: disable=g-import-not-at-top
  from flax_attn.ops import BATCH_AXIS  # pylint: disable=g-import-not-at-top
  return Mesh(np.asarray(jax.devices()), (BATCH_AXIS,))


def _build(case, implementation: str, dtype='float32'):
  import jax  # pylint: disable=g-import-not-at-top
  from flax_attn.models import create_model  # pylint: disable=g-import-not-at-top
  kwargs = dict(case.model_kwargs)
  attn = kwargs.pop('attn', 'default')
  model = create_model(case.model, num_classes=case.num_classes, dtype=dtype,
                       attn=attn,
                       attn_kwargs=dict(implementation=implementation),
                       **kwargs)
  mesh = _mesh()
  with jax.set_mesh(mesh):
    start = time.perf_counter()
    compiled, state, batch = accelerator_check.compile_train_step(
        model, case, mesh)
    return compiled, state, batch, time.perf_counter() - start


def run_steps_memory(batch: int) -> List[Dict[str, Any]]:
  case = _case('csm_resnet50', batch)
  row = dict(model='csm_resnet50', image_size=224, batch=batch,
             dtype='float32')
  for impl in IMPLEMENTATIONS:
    compiled, _, _, compile_s = _build(case, impl)
    mem = compiled.memory_analysis()
    row[f'{impl}_temp_mib'] = mem.temp_size_in_bytes / 2**20
    row[f'{impl}_argument_output_mib'] = (
        mem.argument_size_in_bytes + mem.output_size_in_bytes) / 2**20
    row[f'{impl}_compile_s'] = compile_s
    print(f'csm_resnet50 train step, batch {batch}, 224: temporaries '
          f'{row[f"{impl}_temp_mib"]:,.0f} MiB ({impl})', flush=True)
  return [row]


def run_times(batch50: int, steps: int) -> List[Dict[str, Any]]:
  import jax  # pylint: disable=g-import-not-at-top
  rows = []
  for name, batch in (('csm_resnet20', 32), ('csm_resnet50', batch50)):
    case = _case(name, batch)
    row = dict(model=name, image_size=case.image_size, batch=batch,
               steps=steps, dtype='float32')
    # Alternate the two implementations step by step (A/B/A/B...), so a
    # change in the shared machine's load moves both alike.
    built = {impl: _build(case, impl) for impl in IMPLEMENTATIONS}
    times = {impl: [] for impl in IMPLEMENTATIONS}
    states = {impl: built[impl][1] for impl in IMPLEMENTATIONS}
    for impl in IMPLEMENTATIONS:  # warm-up
      _, _, states[impl] = accelerator_check.time_steps(
          built[impl][0], states[impl], built[impl][2], 1, 0)
    for _ in range(steps):
      for impl in IMPLEMENTATIONS:
        step_s, loss, states[impl] = accelerator_check.time_steps(
            built[impl][0], states[impl], built[impl][2], 0, 1)
        times[impl].append(step_s)
        row[f'{impl}_loss'] = loss
    for impl in IMPLEMENTATIONS:
      row[f'{impl}_step_s'] = statistics.median(times[impl])
      row[f'{impl}_step_times'] = times[impl]
      row[f'{impl}_compile_s'] = built[impl][3]
    row['load'] = os.getloadavg()[0]
    print(f'{name}, batch {batch}: step {row["xla_step_s"]:.3f} s (xla) -> '
          f'{row["blockwise_step_s"]:.3f} s (blockwise), load '
          f'{row["load"]:.1f}', flush=True)
    rows.append(row)
    del built, states
    jax.clear_caches()
  return rows


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--parts', default='blocks,steps_memory,times')
  p.add_argument('--batch', type=int, default=2,
                 help='csm_resnet50 batch (memory and times)')
  p.add_argument('--steps', type=int, default=3)
  p.add_argument('--json', default=os.path.join(
      HERE, 'results', 'position_attention_memory.json'))
  args = p.parse_args(argv)
  import jax  # pylint: disable=g-import-not-at-top
  parts = args.parts.split(',')
  valid = ('blocks', 'steps_memory', 'times')
  bad = sorted(set(parts) - set(valid))
  if bad:
    print(f'unknown part {bad[0]!r}; valid: {", ".join(valid)}',
          file=sys.stderr)
    return 2
  result: Dict[str, Any] = dict(
      jax_version=jax.__version__, backend=jax.default_backend(),
      devices=len(jax.devices()), cpu_count=os.cpu_count(),
      load_before=os.getloadavg()[0],
      date=time.strftime('%Y-%m-%d %H:%M', time.gmtime()))
  if 'blocks' in parts:
    result['blocks'] = run_blocks()
  if 'steps_memory' in parts:
    result['steps_memory'] = run_steps_memory(args.batch)
  if 'times' in parts:
    result['times'] = run_times(args.batch, args.steps)
  result['load_after'] = os.getloadavg()[0]
  if args.json != '-':
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=1)
    print(f'wrote {args.json}')
  return 0


if __name__ == '__main__':
  sys.exit(main())

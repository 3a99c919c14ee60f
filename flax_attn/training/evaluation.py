"""Evaluation: exact metrics over the whole eval split, and the restore of a
workdir's checkpoint that eval.py and flax_attn.visualize build on."""
from __future__ import annotations

import json
import time
from typing import Any, Dict, Optional, Tuple

import jax
import ml_collections

from flax_attn import data as data_lib
from flax_attn import records, storage
from flax_attn.errors import CheckpointError, WorkdirWriteError
from flax_attn.training.checkpoints import (create_checkpoint_manager,
                                            restore_intact)
from flax_attn.training.experiment import (Experiment, build_experiment,
                                           global_batch, jit_eval_step)
from flax_attn.training.state import TrainState, eval_batch_size
from flax_attn.training.workdir import disk_fault


def run_evaluation(config, state: TrainState, eval_fn, batch_sharding
                   ) -> Dict[str, float]:
  """Exact metrics over the whole eval split (padding masked out)."""
  totals = {'loss': 0.0, 'top1': 0.0, 'top5': 0.0, 'count': 0.0}
  variables = state.eval_variables(config.ema_decay > 0)
  it = data_lib.create_eval_iterator(
      config, batch_size=eval_batch_size(config) // jax.process_count(),
      process_index=jax.process_index(), process_count=jax.process_count())
  for batch in it:
    sums = jax.device_get(eval_fn(variables,
                                  global_batch(batch, batch_sharding)))
    for k in totals:
      totals[k] += float(sums[k])
  n = max(totals['count'], 1.0)
  return {'eval_loss': totals['loss'] / n, 'top1': totals['top1'] / n,
          'top5': totals['top5'] / n, 'num_examples': int(totals['count'])}


def restore_state(config: ml_collections.ConfigDict, workdir: str,
                  step: Optional[int] = None
                  ) -> Tuple[Experiment, TrainState, int]:
  """The Experiment of `config` (as training builds it) and the train state
  of the newest intact (or the given) checkpoint of `workdir`: checksums
  verified, a bad newest one skipped with a one-line warning
  (restore_intact), a bad given one an error.

  Returns `(exp, state, step)`; `exp.model` is the linen module and
  `state.eval_variables(config.ema_decay > 0)` its variables. What
  `evaluate` and `flax_attn.visualize` restore with.
  """
  manager = create_checkpoint_manager(workdir, config, create=False)
  try:
    steps = (manager.all_steps() if storage.isdir(str(manager.directory))
             else [])
    if not steps:
      raise CheckpointError(f'no checkpoint in {manager.directory}; train '
                            'first with: python train.py --config ... '
                            f'--workdir {workdir}')
    if step is not None and step not in steps:
      raise CheckpointError(f'no checkpoint for step {step} in '
                            f'{manager.directory}; available: '
                            f'{", ".join(map(str, sorted(steps)))}')
    exp = build_experiment(config)
    state, _, step = restore_intact(manager, workdir, exp.state,
                                    config.model, set_aside=False,
                                    only_step=step)
  finally:
    manager.close()
  return exp, state, int(step)


def evaluate(config: ml_collections.ConfigDict, workdir: str,
             step: Optional[int] = None) -> Dict[str, Any]:
  """Restores the newest intact (or the given) checkpoint of `workdir`,
  evaluates the whole eval split, writes `workdir/eval.json` (the latest
  evaluation) and adds it to the records `workdir/evals` (all of them:
  evals.jsonl locally, objects under evals/ on a bucket; flax_attn.records,
  adding only, as eval.py may run beside training)."""
  exp, state, step = restore_state(config, workdir, step)
  with jax.set_mesh(exp.mesh):
    result = run_evaluation(config, state, jit_eval_step(exp),
                            exp.batch_sharding)
  out = {'top1': result['top1'], 'top5': result['top5'],
         'loss': result['eval_loss'], 'num_examples': result['num_examples'],
         'step': int(step), 'model': config.model, 'dataset': config.dataset}
  if jax.process_index() == 0:
    try:
      storage.write_atomic(storage.join(workdir, 'eval.json'),
                           json.dumps(out, indent=2))
      writer = records.RecordWriter(workdir, 'evals')
      writer.write({**out, 'time': time.strftime('%Y-%m-%dT%H:%M:%S')})
      writer.close()
    except Exception as e:  # pylint: disable=broad-except
      fault = disk_fault(e)
      if fault is None and not isinstance(e, OSError):
        raise
      raise WorkdirWriteError(
          f'cannot write the evaluation to {workdir}: '
          f'{fault or getattr(e, "strerror", None) or e}') from None
  return out

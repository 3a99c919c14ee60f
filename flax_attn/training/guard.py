"""The divergence guard: a non-finite or exploding loss stops the run before
anything after it is logged or saved.

The guard's state rides beside the train state through the compiled step,
so a bad step is caught where it happens without a host sync; the loop
reads it (check_guard) only at log, eval and save steps.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import jax
import jax.numpy as jnp

from flax_attn.errors import DivergenceError
from flax_attn.training.state import TrainState
from flax_attn.training.steps import train_step

# Losses the running median is taken over, and how many must be seen first.
GUARD_WINDOW = 32
GUARD_WARMUP = 8
EMPTY = -1.0


def init_guard() -> Dict[str, jnp.ndarray]:
  """The divergence guard's state: recent losses and the first bad step.

  Carried beside the train state through the compiled step, so a bad step
  is caught where it happens with no host sync; the host reads `bad_step`
  (one scalar) only before each log, eval and save.
  """
  # Empty slots hold -1 (losses are >= 0), not NaN: multi-process
  # device_put compares the host values of every process, and NaN != NaN.
  return {'losses': jnp.full((GUARD_WINDOW,), EMPTY, jnp.float32),
          'bad_step': jnp.array(-1, jnp.int32),
          'bad_loss': jnp.array(0.0, jnp.float32),
          'median': jnp.array(0.0, jnp.float32)}


def update_guard(guard, step, metrics, divergence_factor: float,
                 loss_floor: float = 0.0):
  """Flags step `step` if its loss or gradient norm is not finite, or (with
  divergence_factor > 0) its loss exceeds divergence_factor x the larger of
  the median of the last GUARD_WINDOW losses and `loss_floor`. The first
  flagged step is kept.

  The floor (guarded_train_step: ln(num_classes), the loss of a chance-level guess)
  keeps a well-trained run, whose losses sit near zero, from being stopped
  by an ordinary noisy batch: 0.006 -> 0.08 is 13x its median, not a
  divergence; a diverging network's loss passes chance level by far.
  """
  loss = metrics['train_loss'].astype(jnp.float32)
  losses = guard['losses']
  seen = losses != EMPTY
  median = jnp.maximum(jnp.nanmedian(jnp.where(seen, losses, jnp.nan)),
                       loss_floor)
  finite = jnp.isfinite(loss) & jnp.isfinite(metrics['grad_norm'])
  bad = ~finite
  if divergence_factor:
    bad |= (jnp.sum(seen) >= GUARD_WARMUP) & (
        loss > divergence_factor * median)
  first = bad & (guard['bad_step'] < 0)
  return {
      'losses': jnp.where(bad, losses,
                          losses.at[step % GUARD_WINDOW].set(loss)),
      'bad_step': jnp.where(first, step, guard['bad_step']),
      'bad_loss': jnp.where(first, loss, guard['bad_loss']),
      'median': jnp.where(first, median, guard['median']),
  }


def guarded_train_step(state: TrainState, guard, batch, *,
                       divergence_factor: float, **step_kwargs):
  """train_step, then the divergence guard on its loss."""
  new_state, metrics = train_step(state, batch, **step_kwargs)
  floor = math.log(max(step_kwargs['num_classes'], 2))
  guard = update_guard(guard, new_state.step, metrics, divergence_factor,
                       floor)
  return new_state, guard, metrics


def check_guard(guard, config, last_saved: Optional[int]) -> None:
  """Raises DivergenceError (one line) if the guard flagged a step."""
  bad_step = int(jax.device_get(guard['bad_step']))
  if bad_step < 0:
    return
  loss = float(jax.device_get(guard['bad_loss']))
  median = float(jax.device_get(guard['median']))
  why = ('is not finite' if not math.isfinite(loss) else
         f'exceeds {config.divergence_factor:g} x {median:.4g}, the larger of '
         'its running median and the chance-level loss ln(num_classes) '
         '(config.divergence_factor)')
  kept = (f'the last checkpoint, step {last_saved}, is intact'
          if last_saved is not None else 'no checkpoint was written')
  raise DivergenceError(
      f'training diverged at step {bad_step}: train loss {loss:.4g} {why}; '
      f'nothing after it was saved and {kept}; lower config.learning_rate '
      '(or raise config.grad_clip_norm) and run again to resume')

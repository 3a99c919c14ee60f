"""The train state, the optimiser and its schedule, the mesh, and the
config checks that fail early with one line."""
from __future__ import annotations

import math

import sys
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh

from flax_attn import data as data_lib
from flax_attn.errors import ConfigError
from flax_attn.ops import BATCH_AXIS

OPTIMIZERS = ('sgd', 'adamw')
SCHEDULES = ('multistep', 'cosine', 'constant')
WEIGHT_DECAY_MODES = ('l2', 'decoupled')
DTYPES = ('float32', 'bfloat16')


class TrainState(struct.PyTreeNode):
  """Everything a step changes. `ema_params` is {} when EMA is off."""
  step: jnp.ndarray
  params: Any
  batch_stats: Any
  opt_state: Any
  ema_params: Any

  def eval_variables(self, use_ema: bool) -> Dict[str, Any]:
    params = self.ema_params if use_ema else self.params
    return {'params': params, 'batch_stats': self.batch_stats}


def _choice(config, field: str, valid: Tuple[str, ...]) -> str:
  value = config[field]
  if value not in valid:
    raise ConfigError(f'config.{field}={value!r} is not valid; valid: '
                      f'{", ".join(valid)}')
  return value


def validate_config(config: ml_collections.ConfigDict, num_devices: int
                    ) -> None:
  """Fails early, with one line, on a config value that cannot work.

  `num_devices` is the whole mesh (all processes): each global batch is
  split evenly over it, and so over the processes feeding it.
  """
  for field in ('batch_size',):
    value = config[field]
    if not isinstance(value, int) or value <= 0:
      raise ConfigError(f'config.{field}={value!r} must be a positive integer')
  for field, value in (('batch_size', config.batch_size),
                       ('eval_batch_size', eval_batch_size(config))):
    multiple = num_devices
    if value % multiple:
      hint = multiple * max(1, round(value / multiple))
      raise ConfigError(f'config.{field}={value} is not divisible by the '
                        f'{multiple} devices it is split over; try {hint}')
  if config.num_train_steps <= 0 and config.num_epochs <= 0:
    raise ConfigError(f'config.num_epochs={config.num_epochs} and '
                      f'config.num_train_steps={config.num_train_steps}: one '
                      'must be positive')
  lr = config.learning_rate
  if not (isinstance(lr, (int, float)) and not isinstance(lr, bool)
          and math.isfinite(lr) and lr > 0):
    raise ConfigError(f'config.learning_rate={lr!r} must be a positive '
                      'finite number')
  _choice(config, 'optimizer', OPTIMIZERS)
  _choice(config, 'lr_schedule', SCHEDULES)
  _choice(config, 'weight_decay_mode', WEIGHT_DECAY_MODES)
  _choice(config, 'dtype', DTYPES)
  for field in ('checkpoint_every_steps', 'log_every_steps',
                'keep_checkpoints'):
    if not isinstance(config.get(field, 1), int) or config.get(field, 1) <= 0:
      raise ConfigError(f'config.{field}={config[field]!r} must be a positive '
                        'integer' + ('; checkpoints beyond the newest are '
                                     'deleted, so at least 1 is kept'
                                     if field == 'keep_checkpoints' else ''))
  factor = config.get('divergence_factor', 0.0)
  if not isinstance(factor, (int, float)) or factor < 0 or 0 < factor <= 1:
    raise ConfigError(f'config.divergence_factor={factor!r} is not valid; '
                      'valid: 0 (off) or a factor > 1 (e.g. 10: stop when the '
                      'loss exceeds 10x its running median)')
  if config.num_train_steps == 0:
    warn('config.num_train_steps=0 means "use num_epochs" '
         f'({config.num_epochs} epochs); set -1 for that, or a positive step '
         'count')
  if not 0.0 <= config.ema_decay < 1.0:
    raise ConfigError(f'config.ema_decay={config.ema_decay} must be in [0, 1)')
  data_lib.get_dataset_spec(config.dataset)  # unknown names fail here


def warn(message: str) -> None:
  """One line on stderr (first process only): a surprise, not an error."""
  if jax.process_index() == 0:
    print(f'warning: {message}', file=sys.stderr, flush=True)


def eval_batch_size(config) -> int:
  return config.eval_batch_size or config.batch_size


def create_mesh(config, devices: Optional[Sequence[Any]] = None) -> Mesh:
  """The 1-D 'data' mesh over `devices` (default: jax.devices()), of which
  the first `config.num_devices` (0: all) are used."""
  # Process by process: each process's devices hold one contiguous slice of
  # the global batch, the slice its input pipeline reads.
  devices = sorted(jax.devices() if devices is None else devices,
                   key=lambda d: (d.process_index, d.id))
  n = config.get('num_devices', 0) or len(devices)
  if jax.process_count() > 1 and n != len(devices):
    raise ConfigError(f'config.num_devices={n}: with {jax.process_count()} '
                      f'processes the mesh takes all {len(devices)} devices;'
                      ' set config.num_devices=0')
  if n > len(devices):
    raise ConfigError(f'config.num_devices={n} but only {len(devices)} '
                      'devices are available')
  return Mesh(np.asarray(devices[:n]), (BATCH_AXIS,))


def create_learning_rate_fn(config, steps_per_epoch: int,
                            total_steps: int) -> optax.Schedule:
  """The config's schedule, in steps, with optional linear warm-up."""
  base = config.learning_rate
  warmup = int(round(config.warmup_epochs * steps_per_epoch))
  if config.lr_schedule == 'multistep':
    # Boundaries are absolute epochs; join_schedules shifts by `warmup`.
    boundaries = {}
    for epoch in config.lr_boundaries_epochs:
      step = int(round(epoch * steps_per_epoch)) - warmup
      if step > 0:
        boundaries[step] = boundaries.get(step, 1.0) * config.lr_decay_factor
    main = optax.piecewise_constant_schedule(base, boundaries)
  elif config.lr_schedule == 'cosine':
    main = optax.cosine_decay_schedule(base, max(1, total_steps - warmup))
  else:
    main = optax.constant_schedule(base)
  if warmup <= 0:
    return main
  return optax.join_schedules(
      [optax.linear_schedule(0.0, base, warmup), main], [warmup])


def create_optimizer(config, lr_fn: optax.Schedule
                     ) -> optax.GradientTransformation:
  """SGD (momentum / Nesterov) or AdamW, L2 or decoupled weight decay.

  'l2' adds wd * w to the gradient before momentum (PyTorch's SGD
  weight_decay, the papers' recipes); 'decoupled' adds it after the
  momentum / Adam statistics (SGDW / AdamW).
  """
  wd = config.weight_decay
  parts = []
  if config.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
  if wd and config.weight_decay_mode == 'l2':
    parts.append(optax.add_decayed_weights(wd))
  if config.optimizer == 'sgd':
    parts.append(optax.trace(decay=config.momentum, nesterov=config.nesterov))
  else:
    parts.append(optax.scale_by_adam())
  if wd and config.weight_decay_mode == 'decoupled':
    parts.append(optax.add_decayed_weights(wd))
  parts.append(optax.scale_by_learning_rate(lr_fn))
  return optax.chain(*parts)


def create_train_state(rng, model, tx, image_shape, use_ema: bool
                       ) -> TrainState:
  variables = model.init(rng, jnp.zeros((1,) + tuple(image_shape)),
                         train=False)
  params = variables['params']
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get('batch_stats', {}),
                    opt_state=tx.init(params),
                    ema_params=params if use_ema else {})

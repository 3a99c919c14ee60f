"""Training and evaluation, importable: train.py and eval.py only parse flags.

  from configs import quickstart
  from flax_attn import train
  train.train_and_evaluate(quickstart.get_config(), '/tmp/run')
  train.evaluate(quickstart.get_config(), '/tmp/run')

One jit-compiled train step and one eval step over a `jax.sharding.Mesh` of
all (or `config.num_devices`) devices: the batch is sharded along 'data', the
state replicated, so BatchNorm statistics are those of the global batch. The
steps are traced under `jax.set_mesh(mesh)`: ops.py's batch sums (the CPU
kernel gradients) then run per device instead of being all-gathered.
"""
from __future__ import annotations

import base64
import contextlib
import errno
import functools
import json
import math
import os
import signal
import sys
import time
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from etils import epath
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from flax_attn import data as data_lib
from flax_attn import integrity
from flax_attn import tb_events
from flax_attn.errors import (CheckpointError, CheckpointMismatchError,
                              ConfigError, DivergenceError, UserError,
                              WorkdirWriteError)
from flax_attn.init_rng import init_key
from flax_attn.models import model_from_config
from flax_attn import cpu_kernels
from flax_attn.ops import BATCH_AXIS
from flax_attn.workdir_lock import WorkdirLock

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


# ---------------------------------------------------------------------------
# Validation and set-up
# ---------------------------------------------------------------------------


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
  if config.learning_rate <= 0:
    raise ConfigError(f'config.learning_rate={config.learning_rate} must be '
                      'positive')
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


def create_mesh(config) -> Mesh:
  # Process by process: each process's devices hold one contiguous slice of
  # the global batch, the slice its input pipeline reads.
  devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
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


# ---------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------


def cross_entropy(logits, labels, num_classes: int, label_smoothing: float):
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def train_step(state: TrainState, batch, *, model, tx, lr_fn, num_classes,
               label_smoothing, ema_decay):
  """One SGD step on a (globally sharded) batch; returns state and metrics."""

  def loss_fn(params):
    logits, new_model_state = model.apply(
        {'params': params, 'batch_stats': state.batch_stats}, batch['image'],
        train=True, mutable=['batch_stats'])
    loss = cross_entropy(logits, batch['label'], num_classes,
                         label_smoothing).mean()
    return loss, (logits, new_model_state)

  (loss, (logits, new_model_state)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema = state.ema_params
  if ema_decay:
    ema = jax.tree_util.tree_map(
        lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema, params)
  metrics = {
      'train_loss': loss,
      'train_top1': jnp.mean(jnp.argmax(logits, -1) == batch['label']),
      'lr': lr_fn(state.step),
      'grad_norm': optax.tree_utils.tree_norm(grads),
  }
  new_state = state.replace(step=state.step + 1, params=params,
                            batch_stats=new_model_state['batch_stats'],
                            opt_state=opt_state, ema_params=ema)
  return new_state, metrics


# ---------------------------------------------------------------------------
# Divergence guard
# ---------------------------------------------------------------------------

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

  The floor (train.py: ln(num_classes), the loss of a chance-level guess)
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


def eval_step(variables, batch, *, model, num_classes):
  """Masked sums over one batch: loss, top-1, top-5 hits and count."""
  logits = model.apply(variables, batch['image'], train=False)
  mask = batch['mask']
  labels = batch['label']
  loss = cross_entropy(logits, labels, num_classes, 0.0)
  k = min(5, num_classes)
  topk = jax.lax.top_k(logits, k)[1]
  top1 = (topk[:, 0] == labels)
  top5 = jnp.any(topk == labels[:, None], axis=-1)
  return {'loss': jnp.sum(loss * mask), 'top1': jnp.sum(top1 * mask),
          'top5': jnp.sum(top5 * mask), 'count': jnp.sum(mask)}


# ---------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------


def _encode_iterator_state(state) -> Dict[str, Any]:
  if isinstance(state, bytes):
    return {'bytes_b64': base64.b64encode(state).decode('ascii')}
  return {'json': state}


def _decode_iterator_state(blob: Dict[str, Any]):
  if 'bytes_b64' in blob:
    return base64.b64decode(blob['bytes_b64'])
  return blob['json']


def _state_tree(state: TrainState) -> Dict[str, Any]:
  return {'step': state.step, 'params': state.params,
          'batch_stats': state.batch_stats, 'opt_state': state.opt_state,
          'ema_params': state.ema_params}


def _flat_shapes(tree) -> Dict[str, Tuple[int, ...]]:
  flat = flax.traverse_util.flatten_dict(
      flax.serialization.to_state_dict(tree), sep='/')
  return {k: tuple(getattr(v, 'shape', ())) for k, v in flat.items()
          if v is not None and not (isinstance(v, dict) and not v)}


def check_checkpoint_fits(manager: ocp.CheckpointManager, step: int,
                          state: TrainState, model_name: str) -> None:
  """Compares the stored tree with the model's before restoring anything."""
  try:
    meta = ocp.StandardCheckpointHandler().metadata(
        epath.Path(manager.directory) / str(step) / 'state')
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f'checkpoint step {step} in {manager.directory} is '
                          f'unreadable: {type(e).__name__}: {e}'.splitlines()[0])
  stored = _flat_shapes(getattr(meta, 'tree', meta))
  wanted = _flat_shapes(_state_tree(state))
  for key in sorted(set(wanted) | set(stored)):
    if stored.get(key) != wanted.get(key):
      raise CheckpointMismatchError(
          f'checkpoint step {step} in {manager.directory} does not fit model '
          f'{model_name!r}: first mismatch at {key!r}: checkpoint '
          f'{stored.get(key, "missing")} vs model {wanted.get(key, "missing")};'
          ' use another --workdir or the matching --config.model')


def _state_handler() -> ocp.PyTreeCheckpointHandler:
  """The train state's handler: on one host, arrays saved without replica
  parallelism.

  orbax's replica-parallel save gives each replica a slice of every
  replicated array to write, cut with one eager `lax.slice` per array; each
  new shape compiles, which cost the first checkpoint 2.3 s on 2 CPU
  devices (benchmarks/README.md, change 33). On one host the replicas share
  a process and a file system, so replica 0 writes every array whole. The
  files are those StandardCheckpointHandler writes (it wraps this handler).
  """
  if jax.process_count() > 1:
    return ocp.PyTreeCheckpointHandler()
  registry = ocp.type_handlers.create_type_handler_registry(
      (jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False)))
  return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


def create_checkpoint_manager(workdir: str, config, create: bool = True
                              ) -> ocp.CheckpointManager:
  """orbax's manager for WORKDIR/checkpoints. It deletes nothing:
  CheckpointWriter rotates, so that the last known good checkpoint survives.
  `create=False` (eval.py) also leaves other runs' temporary folders alone."""
  del config  # rotation is CheckpointWriter's
  options = ocp.CheckpointManagerOptions(
      max_to_keep=None, create=create, cleanup_tmp_directories=create)
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), 'checkpoints'), options=options,
      item_handlers={'state': _state_handler(),
                     'data': ocp.JsonCheckpointHandler(),
                     'config': ocp.JsonCheckpointHandler()})


def save_checkpoint(manager, state: TrainState, data_state, config,
                    guard_losses: Optional[Sequence[float]] = None) -> None:
  """Saves asynchronously; `guard_losses` (the divergence guard's recent
  losses) ride with the data iterator's position, so a resumed run's guard
  compares with the losses before the checkpoint."""
  step = int(jax.device_get(state.step))
  data = _encode_iterator_state(data_state)
  if guard_losses is not None:
    data['guard_losses'] = np.asarray(guard_losses, np.float64).tolist()
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.PyTreeSave(_state_tree(state)),
      data=ocp.args.JsonSave(data),
      config=ocp.args.JsonSave(config.to_dict())), force=True)


def restore_checkpoint(manager, step: int, state: TrainState, model_name: str
                       ) -> Tuple[TrainState, Any]:
  check_checkpoint_fits(manager, step, state, model_name)
  target = _state_tree(state)
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore(
          target, restore_args=ocp.checkpoint_utils.construct_restore_args(
              target)),
      data=ocp.args.JsonRestore()))
  tree = restored['state']
  new_state = state.replace(**tree)
  return new_state, _decode_iterator_state(restored['data'])


def restored_guard(manager, step: Optional[int]) -> Dict[str, jnp.ndarray]:
  """The divergence guard, with the recent losses saved at `step`."""
  guard = init_guard()
  if step is None:
    return guard
  try:
    blob = manager.restore(step, args=ocp.args.Composite(
        data=ocp.args.JsonRestore()))['data']
    guard['losses'] = jnp.asarray(np.asarray(
        blob['guard_losses'], np.float32).reshape(GUARD_WINDOW))
  except Exception:  # pylint: disable=broad-except
    pass  # saved before the guard existed: it warms up again
  return guard


def checkpoint_config(manager, step: int) -> Dict[str, Any]:
  """The config a checkpoint was trained with ({} if unreadable)."""
  try:
    return dict(manager.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore()))['config'] or {})
  except Exception:  # pylint: disable=broad-except
    return {}


@jax.jit
def _all_finite(tree) -> jnp.ndarray:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


_DISK_ERRORS = {errno.ENOSPC: 'the disk is full', errno.EROFS:
                'the file system is read-only', errno.EACCES:
                'permission denied', errno.EPERM: 'permission denied',
                errno.EDQUOT: 'the disk quota is exceeded', errno.EFBIG:
                'a file is too large', errno.EIO: 'an I/O error'}
_DISK_MESSAGES = {os.strerror(code).lower(): text
                  for code, text in _DISK_ERRORS.items()}


def disk_fault(error: BaseException) -> Optional[str]:
  """What disk fault `error` (or what caused it) is, or None. orbax and
  TensorStore re-raise OSErrors as other types, keeping the message."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in _DISK_ERRORS:
      return _DISK_ERRORS[error.errno]
    text = str(error).lower()
    for message, fault in _DISK_MESSAGES.items():
      if message in text:
        return fault
    error = error.__cause__ or error.__context__
  return None


class CheckpointWriter:
  """Saves, verifies and rotates checkpoints so that none is ever lost.

  * A save is asynchronous (orbax); it is finished (and its manifest of
    checksums written, integrity.py) before the next save and at the end.
  * A state that is not finite is never written.
  * Rotation keeps the newest `keep` checkpoints plus the last known good
    one: the newest saved while the divergence guard was clear and the
    latest evaluation was finite and within divergence_factor x the best
    one; recorded in WORKDIR/last_good.json.
  * A full disk or read-only workdir raises WorkdirWriteError (one line)
    after removing the partial checkpoint, so a restart after freeing space
    works.
  """

  def __init__(self, manager, workdir: str, config, is_main: bool):
    self.manager = manager
    self.workdir = workdir
    self.keep = config.keep_checkpoints
    self.factor = config.get('divergence_factor', 0.0)
    self.is_main = is_main
    self.last_saved: Optional[int] = manager.latest_step()
    self._pending: Optional[Tuple[int, bool]] = None
    self._good_path = os.path.join(workdir, 'last_good.json')
    self._good = self._read_good()
    # Whether the latest evaluation was healthy, kept across restarts: a
    # resumed run's first save must not become "last good" after a bad eval.
    self._eval_ok = bool(self._good.get('eval_ok', True))

  def _read_good(self) -> Dict[str, Any]:
    try:
      with open(self._good_path) as f:
        return json.load(f)
    except (OSError, ValueError):
      return {}

  def note_eval(self, step: int, result: Dict[str, float]) -> None:
    """Records whether the evaluation at `step` looks healthy."""
    loss = result.get('eval_loss', float('nan'))
    best = self._good.get('best_eval_loss')
    self._eval_ok = math.isfinite(loss) and not (
        self.factor and best is not None and loss > self.factor * best)
    if self._eval_ok and (best is None or loss < best):
      self._good['best_eval_loss'] = loss
    self._good['eval_ok'] = self._eval_ok
    if self.is_main:
      self._write_good()
    del step

  def save(self, state: TrainState, data_state, config,
           guard: Optional[Dict[str, Any]] = None) -> None:
    self.finish()
    step = int(jax.device_get(state.step))
    if not bool(jax.device_get(_all_finite(_state_tree(state)))):
      raise DivergenceError(
          f'the train state at step {step} is not finite; it was not saved '
          f'and the last checkpoint, step {self.last_saved}, is intact; '
          'lower config.learning_rate and run again to resume')
    with self._disk_errors(step):
      save_checkpoint(self.manager, state, data_state, config,
                      None if guard is None else jax.device_get(
                          guard['losses']))
    self._pending = (step, self._eval_ok)

  @property
  def newest(self) -> Optional[int]:
    """The newest checkpoint written or being written (finish() completes
    it even when the run stops with an error)."""
    return self._pending[0] if self._pending else self.last_saved

  def finish(self) -> None:
    """Waits for the pending save; writes its manifest; rotates."""
    if self._pending is None:
      return
    step, healthy = self._pending
    self._pending = None
    with self._disk_errors(step):
      self.manager.wait_until_finished()
    failure = None
    if self.is_main:
      try:
        with self._disk_errors(step):
          integrity.write_manifest(os.path.join(self.manager.directory,
                                                str(step)))
        if healthy:
          self._good['step'] = step
          self._write_good()
      except UserError as e:
        failure = e
    raise_everywhere(failure, f'finishing checkpoint step {step}')
    self.last_saved = step
    if healthy:
      self._good['step'] = step
    with self._disk_errors(None, f'{self.manager.directory} (deleting old '
                           'checkpoints)'):
      self._rotate()  # every process: orbax's delete is a collective

  def _write_good(self) -> None:
    tmp = self._good_path + '.tmp'
    with self._disk_errors(None):
      with open(tmp, 'w') as f:
        json.dump(self._good, f)
      os.replace(tmp, self._good_path)

  def _rotate(self) -> None:
    steps = sorted(self.manager.all_steps())
    keep = set(steps[-self.keep:]) | {self._good.get('step')}
    for old in steps:
      if old not in keep:
        self.manager.delete(old)

  @contextlib.contextmanager
  def _disk_errors(self, step: Optional[int], what: Optional[str] = None):
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except
      fault = disk_fault(e)
      if fault is None:
        raise
      if step is not None and self.is_main:
        integrity.remove_partial(str(self.manager.directory), step)
      what = what or (f'checkpoint step {step} in {self.manager.directory}'
                      if step is not None else self._good_path)
      raise WorkdirWriteError(
          f'cannot write {what}: {fault}; the partial checkpoint was removed '
          'and the earlier ones are intact: free space (or fix permissions) '
          'and run again to resume') from None


def restore_intact(manager, workdir: str, state: TrainState, model_name: str,
                   set_aside: bool, only_step: Optional[int] = None):
  """Restores the newest intact checkpoint (or `only_step`).

  Each candidate is verified against its checksums (integrity.py) and must
  restore to a finite state. A bad one gets a one-line warning and, with
  `set_aside` (train.py), is moved to WORKDIR/checkpoints_corrupt/; eval.py
  only skips it. Returns (state, data_state, step), or None when there is
  no checkpoint; raises CheckpointError when none is intact.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  if only_step is not None:
    steps = [only_step]
  bad = []
  for step in steps:
    step_dir = os.path.join(str(manager.directory), str(step))
    status = integrity.verify(step_dir)
    if status == integrity.UNVERIFIED:
      warn(f'checkpoint {step_dir} has no checksums (saved before they '
           'existed, or stopped before writing them); restoring it unverified')
    if status in (integrity.OK, integrity.UNVERIFIED):
      try:
        restored, data_state = restore_checkpoint(manager, step, state,
                                                  model_name)
        if bool(jax.device_get(_all_finite(_state_tree(restored)))):
          if set_aside and bad:
            manager.reload()  # it still lists the steps moved aside
          return restored, data_state, step
        status = 'its arrays are not finite'
      except CheckpointMismatchError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        reason = (f'{type(e).__name__}: '
                  f'{str(e).splitlines()[0] if str(e) else ""}')[:200]
        if status == integrity.OK:
          # Its files are as saved: not corruption (memory, a flaky file
          # system...), so nothing is set aside; the run stops instead.
          raise CheckpointError(
              f'checkpoint {step_dir} passed its checksums but could not be '
              f'restored ({reason}); nothing was moved, run again') from None
        status = f'it cannot be read ({reason})'

    if only_step is not None:
      raise CheckpointError(f'checkpoint step {step} in {manager.directory} is '
                            f'corrupt: {status}')
    bad.append(step)
    if set_aside and jax.process_index() == 0:
      try:
        dest = integrity.quarantine(step_dir, workdir)
      except OSError as e:
        raise WorkdirWriteError(
            f'checkpoint {step_dir} is corrupt ({status}) and cannot be moved '
            f'aside: {disk_fault(e) or e.strerror}') from None
      warn(f'checkpoint {step_dir} is corrupt ({status}); moved to {dest}, '
           'falling back to an older one')
    else:
      warn(f'checkpoint {step_dir} is corrupt ({status}); skipping it')
  if set_aside and bad:
    manager.reload()
  if bad:
    where = (f'; they were moved to {os.path.join(workdir, "checkpoints_corrupt")}'
             if set_aside else '')
    raise CheckpointError(
        f'no intact checkpoint in {manager.directory}: all {len(bad)} are '
        f'corrupt{where}; use another --workdir to start over')
  return None


def load_pretrained(state: TrainState, path: str) -> Tuple[TrainState, str]:
  """Initialises params / batch_stats from an orbax checkpoint at `path`.

  Entries whose path and shape match are loaded; the rest (attention
  modules, a head of another size) keep their fresh initialisation. Returns
  the new state and a one-line report.
  """
  if not os.path.exists(path):
    raise CheckpointError(f'config.pretrained_path={path!r} does not exist')
  try:
    stored = ocp.StandardCheckpointer().restore(os.path.abspath(path))
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f'config.pretrained_path={path!r} is not a readable '
                          f'orbax checkpoint: {type(e).__name__}: '
                          f'{e}'.splitlines()[0])
  stored = stored.get('state', stored)
  loaded, fresh = 0, []
  new = {}
  for collection in ('params', 'batch_stats'):
    flat = flax.traverse_util.flatten_dict(getattr(state, collection))
    src = flax.traverse_util.flatten_dict(stored.get(collection, {}))
    for key, value in flat.items():
      if key in src and tuple(src[key].shape) == tuple(value.shape):
        flat[key] = jnp.asarray(src[key], value.dtype)
        loaded += 1
      else:
        fresh.append('/'.join(key))
    new[collection] = flax.traverse_util.unflatten_dict(flat)
  if not loaded:
    raise CheckpointError(
        f'config.pretrained_path={path!r} matches none of the model\'s '
        f'{len(fresh)} arrays (e.g. model {fresh[0] if fresh else "-"!r}, '
        f'file {"/".join(next(iter(flax.traverse_util.flatten_dict(stored.get("params", {}))), ("-",)))!r}); '
        'convert it for this model with python -m flax_attn.convert --model '
        'NAME')
  report = (f'pretrained {path}: loaded {loaded} arrays, '
            f'{len(fresh)} freshly initialised'
            + (f' (e.g. {", ".join(fresh[:3])})' if fresh else ''))
  return state.replace(params=new['params'], batch_stats=new['batch_stats'],
                       ema_params=new['params'] if state.ema_params else {}
                       ), report


# ---------------------------------------------------------------------------
# Metrics output
# ---------------------------------------------------------------------------


class MetricWriter:
  """metrics.jsonl (one JSON object per log / eval) + TensorBoard events."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self._path = os.path.join(workdir, 'metrics.jsonl')
    self._tb = (tb_events.EventWriter(os.path.join(workdir, 'tensorboard'))
                if enabled else None)

  def write(self, step: int, values: Dict[str, Any]) -> None:
    if not self.enabled:
      return
    row = {'step': int(step)}
    row.update({k: (float(v) if isinstance(v, (np.generic, np.ndarray, float,
                                               jax.Array)) else v)
                for k, v in values.items()})
    try:
      with open(self._path, 'a') as f:
        f.write(json.dumps(row) + '\n')
      self._tb.write(step, {k: v for k, v in row.items()
                            if k != 'step' and isinstance(v, (int, float))})
    except OSError as e:
      raise WorkdirWriteError(
          f'cannot write {e.filename or self._path}: '
          f'{disk_fault(e) or e.strerror}; the checkpoints are intact: free '
          'space (or fix permissions) and run again to resume') from None

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


# ---------------------------------------------------------------------------
# The loops
# ---------------------------------------------------------------------------


# Fine-grained recipes (seed 004) fine-tune ImageNet weights.
FINE_GRAINED_DATASETS = ('caltech_birds2011', 'stanford_dogs', 'cars196')


def no_pretrained_warning(config) -> Optional[str]:
  """One line when a fine-grained dataset starts without pretrained weights
  (config.pretrained_path ''), naming the command that makes them; else None."""
  if (config.get('pretrained_path')
      or config.dataset not in FINE_GRAINED_DATASETS):
    return None
  return (f'warning: {config.dataset} trains from scratch (no '
          'config.pretrained_path); fine-grained recipes start from ImageNet '
          f'weights: python -m flax_attn.convert --model {config.model} '
          'CHECKPOINT.pth OUT_DIR, then --config.pretrained_path=OUT_DIR')


def _build(config, workdir: Optional[str]):
  """Model, optimiser, mesh, shardings and the initial state (shared by
  training and evaluation)."""
  mesh = create_mesh(config)
  validate_config(config, mesh.size)
  cpu_kernels.configure(config.get('cpu_kernels', 'auto'), mesh.devices.flat[0].platform)  # CPU kernels switch (issue 28): before anything is traced
  spec = data_lib.get_dataset_spec(config.dataset)
  model = model_from_config(config, spec.num_classes)
  steps_per_epoch = data_lib.num_examples(config, 'train') // config.batch_size
  if steps_per_epoch < 1:
    raise ConfigError(f'config.batch_size={config.batch_size} is larger than '
                      f'the {data_lib.num_examples(config, "train")} training '
                      f'examples of {config.dataset!r}')
  total_steps = (config.num_train_steps if config.num_train_steps > 0 else
                 int(config.num_epochs * steps_per_epoch))
  lr_fn = create_learning_rate_fn(config, steps_per_epoch, total_steps)
  tx = create_optimizer(config, lr_fn)
  image_shape = (config.image_size, config.image_size, spec.channels)
  use_ema = config.ema_decay > 0
  init = functools.partial(create_train_state, model=model, tx=tx,
                           image_shape=image_shape, use_ema=use_ema)
  replicated = NamedSharding(mesh, P())
  # A hash-based key (init_rng): JAX's generators cost XLA:CPU seconds to
  # tens of seconds of compile per network; its bits are the same on any device.
  state = jax.jit(init, out_shardings=replicated)(init_key(config.seed))
  return dict(mesh=mesh, spec=spec, model=model, tx=tx, lr_fn=lr_fn,
              state=state, steps_per_epoch=steps_per_epoch,
              total_steps=total_steps, replicated=replicated,
              batch_sharding=NamedSharding(mesh, P(BATCH_AXIS)))


def _global_batch(batch, sharding):
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}


def _make_eval_fn(b):
  return jax.jit(functools.partial(eval_step, model=b['model'],
                                   num_classes=b['spec'].num_classes),
                 in_shardings=(b['replicated'], b['batch_sharding']),
                 out_shardings=b['replicated'])


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
                                  _global_batch(batch, batch_sharding)))
    for k in totals:
      totals[k] += float(sums[k])
  n = max(totals['count'], 1.0)
  return {'eval_loss': totals['loss'] / n, 'top1': totals['top1'] / n,
          'top5': totals['top5'] / n, 'num_examples': int(totals['count'])}


class _Preemption:
  """Turns SIGTERM and SIGINT (Ctrl-C) into a flag the loop checks after each
  step: it then saves a checkpoint and stops. A second Ctrl-C stops at once
  (KeyboardInterrupt; the last checkpoint is intact)."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signum: Optional[int] = None
    self._previous = {}

  @property
  def requested(self) -> bool:
    return self.signum is not None

  def __enter__(self):
    for signum in self.SIGNALS:
      try:
        self._previous[signum] = signal.signal(signum, self._handler)
      except ValueError:  # not the main thread (e.g. some notebooks)
        pass
    return self

  def _handler(self, signum, frame):
    del frame
    if self.signum == signal.SIGINT and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signum = signum

  def __exit__(self, *exc):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)


class Preempted(Exception):
  """Raised after SIGTERM / SIGINT once the checkpoint is safely written;
  `exit_code` is 128 + the signal number (143, 130)."""

  def __init__(self, message: str, exit_code: int = 143):
    super().__init__(message)
    self.exit_code = exit_code


def _progress(total: int, initial: int, enabled: bool):
  if not enabled:
    return None
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, initial=initial, unit='step', dynamic_ncols=True,
              smoothing=0.1)


def write_config(workdir: str, config) -> None:
  """WORKDIR/config.json, atomically (eval.py reads it without --config)."""
  path = os.path.join(workdir, 'config.json')
  try:
    with open(path + '.tmp', 'w') as f:
      json.dump(config.to_dict(), f, indent=2, sort_keys=True, default=str)
    os.replace(path + '.tmp', path)
  except OSError as e:
    raise WorkdirWriteError(f'cannot write {path}: '
                            f'{disk_fault(e) or e.strerror}') from None


def raise_everywhere(error: Optional[BaseException], what: str) -> None:
  """Raises `error` (process 0's, or None) on every process.

  Work only process 0 does (the lock, manifests, last_good.json) can fail
  there alone; the other processes would wait for it at the next collective
  until the coordination timeout. One broadcast makes them all stop with a
  line at once. One process: raises `error` if any.
  """
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    failed = int(multihost_utils.broadcast_one_to_all(
        np.int32(error is not None)))
    if failed and error is None:
      error = WorkdirWriteError(f'{what} failed on process 0 (its error '
                                'line says why)')
  if error is not None:
    raise error


def _prepare_workdir(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_test.{os.getpid()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise WorkdirWriteError(
        f'cannot write to workdir {workdir}: '
        f'{disk_fault(e) or e.strerror}') from None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str
                       ) -> Dict[str, float]:
  """Trains (resuming from the newest intact checkpoint in `workdir`),
  evaluates every `eval_every_steps` and at the end; returns the final eval
  metrics. One run per workdir (WORKDIR/.lock)."""
  _prepare_workdir(workdir)
  lock = WorkdirLock(workdir)
  busy = None
  if jax.process_index() == 0:
    try:
      lock.acquire()
    except UserError as e:
      busy = e
  raise_everywhere(busy, f'locking workdir {workdir}')
  try:
    return _train_and_evaluate(config, workdir)
  finally:
    lock.release()


def _train_and_evaluate(config, workdir):
  b = _build(config, workdir)
  state, mesh = b['state'], b['mesh']
  total_steps = b['total_steps']
  is_main = jax.process_index() == 0
  manager = create_checkpoint_manager(workdir, config)
  restored = restore_intact(manager, workdir, state, config.model,
                            set_aside=True)
  data_state = None
  if restored is not None:
    state, data_state, latest = restored
    print(f'resumed from {manager.directory}/{latest}', flush=True)
    _warn_resume_changes(checkpoint_config(manager, latest), config, latest,
                         total_steps)
  elif config.pretrained_path:
    state, report = load_pretrained(state, config.pretrained_path)
    state = jax.device_put(state, b['replicated'])
    print(report, flush=True)
  elif is_main and (warning := no_pretrained_warning(config)):
    print(warning, flush=True)
  if is_main:
    write_config(workdir, config)
    print(f'training on {mesh.size} {mesh.devices.flat[0].platform} '
          f'device(s), {config.batch_size // mesh.size} images each per step',
          flush=True)

  train_iter = data_lib.create_train_iterator(
      config, seed=config.seed, process_index=jax.process_index(),
      process_count=jax.process_count())
  if data_state is not None:
    train_iter.set_state(data_state)

  writer = MetricWriter(workdir, enabled=is_main)
  ckpt = CheckpointWriter(manager, workdir, config, is_main)
  start = int(jax.device_get(state.step))
  bar = _progress(total_steps, start, is_main and config.progress_bar)
  last_eval: Dict[str, float] = {}
  if start >= total_steps:
    last_eval = run_evaluation(config, state, _make_eval_fn(b),
                               b['batch_sharding'])

  try:
    result = _train_loop(config, b, state, ckpt, train_iter, writer, bar,
                         start, last_eval)
    ckpt.finish()
    return result
  finally:
    # Whatever ended the loop, finished checkpoints and metrics are on disk.
    failure = sys.exc_info()[1]
    if failure is not None and not isinstance(failure, WorkdirWriteError):
      try:  # a save in flight when the run stopped (divergence, Ctrl-C x 2)
        ckpt.finish()
      except Exception:  # pylint: disable=broad-except
        pass  # the error already being raised is the one to report
    try:
      manager.wait_until_finished()
      manager.close()
    except Exception:  # pylint: disable=broad-except
      if failure is None:
        raise
      # Already failing (e.g. a full disk): that error is the one to report.
    if isinstance(failure, WorkdirWriteError) and is_main:
      # orbax's writer threads may have gone on after the first error.
      integrity.remove_partial(str(manager.directory))
    writer.close()
    if bar is not None:
      bar.close()
    if hasattr(train_iter, 'close'):  # grain worker processes
      train_iter.close()


def _warn_resume_changes(saved: Dict[str, Any], config, step: int,
                         total_steps: int) -> None:
  """One line for each change from the checkpoint's run that surprises."""
  for field in ('batch_size', 'dataset', 'image_size', 'seed'):
    if field in saved and saved[field] != config[field]:
      warn(f'resuming step {step} with config.{field}={config[field]!r}; the '
           f'checkpoint was trained with {saved[field]!r} (the data order and '
           'schedule change from here)')
  if step > total_steps:
    warn(f'the checkpoint is at step {step}, past config.num_train_steps='
         f'{total_steps}: nothing to train, evaluating step {step}')


def _train_loop(config, b, state, ckpt, train_iter, writer, bar, start,
                last_eval):
  total_steps = b['total_steps']
  steps_per_epoch = b['steps_per_epoch']
  eval_fn = _make_eval_fn(b)
  eval_every = config.eval_every_steps or steps_per_epoch
  step_fn = jax.jit(
      functools.partial(guarded_train_step, model=b['model'], tx=b['tx'],
                        lr_fn=b['lr_fn'], num_classes=b['spec'].num_classes,
                        label_smoothing=config.label_smoothing,
                        ema_decay=config.ema_decay,
                        divergence_factor=config.divergence_factor),
      in_shardings=(b['replicated'], b['replicated'], b['batch_sharding']),
      out_shardings=(b['replicated'], b['replicated'], b['replicated']),
      donate_argnums=(0, 1))
  guard = jax.device_put(restored_guard(ckpt.manager, ckpt.last_saved),
                         b['replicated'])
  t_log, n_log = time.perf_counter(), 0
  with jax.set_mesh(b['mesh']), _Preemption() as preemption:
    for step in range(start + 1, total_steps + 1):
      batch = _global_batch(next(train_iter), b['batch_sharding'])
      state, guard, metrics = step_fn(state, guard, batch)
      n_log += 1
      if bar is not None:
        bar.update(1)
      log = step % config.log_every_steps == 0 or step == total_steps
      evaluate_now = step % eval_every == 0 or step == total_steps
      periodic_save = (step % config.checkpoint_every_steps == 0
                       or step == total_steps)
      boundary = log or evaluate_now or periodic_save
      if boundary:
        # The one host read of the guard: nothing flagged is logged or saved.
        check_guard(guard, config, ckpt.newest)
      if log:
        metrics = jax.device_get(metrics)
        elapsed = time.perf_counter() - t_log
        ips = n_log * config.batch_size / max(elapsed, 1e-9)
        row = {'epoch': step / steps_per_epoch, **metrics,
               'images_per_sec': ips}
        writer.write(step, row)
        if bar is not None:
          bar.set_postfix(loss=f'{float(metrics["train_loss"]):.4f}',
                          img_s=f'{ips:.0f}')
        t_log, n_log = time.perf_counter(), 0
      if evaluate_now:
        last_eval = run_evaluation(config, state, eval_fn,
                                   b['batch_sharding'])
        ckpt.note_eval(step, last_eval)
        writer.write(step, {'epoch': step / steps_per_epoch, **last_eval})
        if bar is not None:
          bar.write(f'step {step}: eval loss {last_eval["eval_loss"]:.4f} '
                    f'top1 {last_eval["top1"]:.4f} top5 '
                    f'{last_eval["top5"]:.4f}')
        t_log, n_log = time.perf_counter(), 0  # eval time is not train time
      # Decided after the log and the evaluation, so that a signal that
      # arrived during them still gets its checkpoint.
      stop = _stop_agreed(preemption.requested, boundary)
      if stop and not boundary:
        check_guard(guard, config, ckpt.newest)
      if periodic_save or stop:
        ckpt.save(state, train_iter.get_state(), config, guard)
      if stop and step < total_steps:
        ckpt.finish()
        signum = preemption.signum or signal.SIGTERM
        name = (signal.Signals(signum).name if preemption.signum
                else 'signal to another process')
        raise Preempted(f'{name}: stopped at step {step}, checkpoint saved '
                        f'in {ckpt.manager.directory}', 128 + signum)
  return {**last_eval, 'step': total_steps}


def _stop_agreed(requested: bool, boundary: bool) -> bool:
  """Whether to save and stop after this step for a SIGTERM / SIGINT.

  One process: as soon as it is signalled. Several: the processes must
  save together (orbax's save is collective) but may be signalled at
  different steps, or only one of them; so they agree, with one small
  all-gather, at the steps where every process logs, evaluates or saves
  anyway, and all stop at the first such step after any was signalled.
  """
  if jax.process_count() == 1:
    return requested
  if not boundary:
    return False
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  flags = multihost_utils.process_allgather(np.asarray(requested, np.int32))
  return bool(np.any(flags))


def restore_state(config: ml_collections.ConfigDict, workdir: str,
                  step: Optional[int] = None
                  ) -> Tuple[Dict[str, Any], TrainState, int]:
  """The model, mesh, ... of `config` (as training builds them) and the
  train state of the newest intact (or the given) checkpoint of `workdir`:
  checksums verified, a bad newest one skipped with a one-line warning
  (restore_intact), a bad given one an error.

  Returns `(built, state, step)`; `built['model']` is the linen module and
  `state.eval_variables(config.ema_decay > 0)` its variables. What
  `evaluate` and `flax_attn.visualize` restore with.
  """
  manager = create_checkpoint_manager(workdir, config, create=False)
  try:
    steps = manager.all_steps() if os.path.isdir(manager.directory) else []
    if not steps:
      raise CheckpointError(f'no checkpoint in {manager.directory}; train '
                            'first with: python train.py --config ... '
                            f'--workdir {workdir}')
    if step is not None and step not in steps:
      raise CheckpointError(f'no checkpoint for step {step} in '
                            f'{manager.directory}; available: '
                            f'{", ".join(map(str, sorted(steps)))}')
    b = _build(config, workdir)
    state, _, step = restore_intact(manager, workdir, b['state'],
                                    config.model, set_aside=False,
                                    only_step=step)
  finally:
    manager.close()
  return b, state, int(step)


def evaluate(config: ml_collections.ConfigDict, workdir: str,
             step: Optional[int] = None) -> Dict[str, Any]:
  """Restores the newest intact (or the given) checkpoint of `workdir`,
  evaluates the whole eval split, writes `workdir/eval.json` (the latest
  evaluation) and appends it to `workdir/evals.jsonl` (all of them)."""
  b, state, step = restore_state(config, workdir, step)
  with jax.set_mesh(b['mesh']):
    result = run_evaluation(config, state, _make_eval_fn(b),
                            b['batch_sharding'])
  out = {'top1': result['top1'], 'top5': result['top5'],
         'loss': result['eval_loss'], 'num_examples': result['num_examples'],
         'step': int(step), 'model': config.model, 'dataset': config.dataset}
  if jax.process_index() == 0:
    try:
      with open(os.path.join(workdir, 'eval.json'), 'w') as f:
        json.dump(out, f, indent=2)
      with open(os.path.join(workdir, 'evals.jsonl'), 'a') as f:
        f.write(json.dumps({**out, 'time': time.strftime(
            '%Y-%m-%dT%H:%M:%S')}) + '\n')
    except OSError as e:
      raise WorkdirWriteError(f'cannot write the evaluation to {workdir}: '
                              f'{disk_fault(e) or e.strerror}') from None
  return out

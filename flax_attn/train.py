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
import functools
import json
import math
import os
import signal
import time
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

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
from flax_attn import tb_events
from flax_attn.errors import CheckpointError, ConfigError
from flax_attn.init_rng import init_key
from flax_attn.models import model_from_config
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
  for field in ('checkpoint_every_steps', 'log_every_steps'):
    if config[field] <= 0:
      raise ConfigError(f'config.{field}={config[field]} must be positive')
  if not 0.0 <= config.ema_decay < 1.0:
    raise ConfigError(f'config.ema_decay={config.ema_decay} must be in [0, 1)')
  data_lib.get_dataset_spec(config.dataset)  # unknown names fail here


def eval_batch_size(config) -> int:
  return config.eval_batch_size or config.batch_size


def create_mesh(config) -> Mesh:
  devices = jax.devices()
  n = config.get('num_devices', 0) or len(devices)
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
  }
  new_state = state.replace(step=state.step + 1, params=params,
                            batch_stats=new_model_state['batch_stats'],
                            opt_state=opt_state, ema_params=ema)
  return new_state, metrics


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
      raise CheckpointError(
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
  options = ocp.CheckpointManagerOptions(
      max_to_keep=config.get('keep_checkpoints', 3), create=create)
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), 'checkpoints'), options=options,
      item_handlers={'state': _state_handler(),
                     'data': ocp.JsonCheckpointHandler(),
                     'config': ocp.JsonCheckpointHandler()})


def save_checkpoint(manager, state: TrainState, data_state, config) -> None:
  step = int(jax.device_get(state.step))
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.PyTreeSave(_state_tree(state)),
      data=ocp.args.JsonSave(_encode_iterator_state(data_state)),
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
    with open(self._path, 'a') as f:
      f.write(json.dumps(row) + '\n')
    self._tb.write(step, {k: v for k, v in row.items()
                          if k != 'step' and isinstance(v, (int, float))})

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


# ---------------------------------------------------------------------------
# The loops
# ---------------------------------------------------------------------------


def _build(config, workdir: Optional[str]):
  """Model, optimiser, mesh, shardings and the initial state (shared by
  training and evaluation)."""
  mesh = create_mesh(config)
  validate_config(config, mesh.size)
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
  """Turns SIGTERM into a flag the loop checks after each step."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handler)
    except ValueError:  # not the main thread (e.g. some notebooks)
      self._previous = None
    return self

  def _handler(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


class Preempted(Exception):
  """Raised after a SIGTERM once the checkpoint is safely written."""


def _progress(total: int, initial: int, enabled: bool):
  if not enabled:
    return None
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, initial=initial, unit='step', dynamic_ncols=True,
              smoothing=0.1)


def write_config(workdir: str, config) -> None:
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(config.to_dict(), f, indent=2, sort_keys=True, default=str)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str
                       ) -> Dict[str, float]:
  """Trains (resuming from the latest checkpoint in `workdir`), evaluates
  every `eval_every_steps` and at the end; returns the final eval metrics."""
  os.makedirs(workdir, exist_ok=True)
  b = _build(config, workdir)
  state, mesh = b['state'], b['mesh']
  total_steps, steps_per_epoch = b['total_steps'], b['steps_per_epoch']
  is_main = jax.process_index() == 0
  manager = create_checkpoint_manager(workdir, config)
  latest = manager.latest_step()
  data_state = None
  if latest is not None:
    state, data_state = restore_checkpoint(manager, latest, state,
                                           config.model)
    print(f'resumed from {manager.directory}/{latest}', flush=True)
  elif config.pretrained_path:
    state, report = load_pretrained(state, config.pretrained_path)
    state = jax.device_put(state, b['replicated'])
    print(report, flush=True)
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
  start = int(jax.device_get(state.step))
  bar = _progress(total_steps, start, is_main and config.progress_bar)
  last_eval: Dict[str, float] = {}
  if start >= total_steps:
    last_eval = run_evaluation(config, state, _make_eval_fn(b),
                               b['batch_sharding'])

  try:
    return _train_loop(config, b, state, manager, train_iter, writer, bar,
                       start, last_eval)
  finally:
    # Whatever ended the loop, the last checkpoint and metrics are on disk.
    manager.wait_until_finished()
    manager.close()
    writer.close()
    if bar is not None:
      bar.close()
    if hasattr(train_iter, 'close'):  # grain worker processes
      train_iter.close()


def _train_loop(config, b, state, manager, train_iter, writer, bar, start,
                last_eval):
  mesh, total_steps = b['mesh'], b['total_steps']
  steps_per_epoch = b['steps_per_epoch']
  eval_fn = _make_eval_fn(b)
  eval_every = config.eval_every_steps or steps_per_epoch
  step_fn = jax.jit(
      functools.partial(train_step, model=b['model'], tx=b['tx'],
                        lr_fn=b['lr_fn'], num_classes=b['spec'].num_classes,
                        label_smoothing=config.label_smoothing,
                        ema_decay=config.ema_decay),
      in_shardings=(b['replicated'], b['batch_sharding']),
      out_shardings=(b['replicated'], b['replicated']),
      donate_argnums=(0,))
  t_log, n_log = time.perf_counter(), 0
  with jax.set_mesh(mesh), _Preemption() as preemption:
    for step in range(start + 1, total_steps + 1):
      batch = _global_batch(next(train_iter), b['batch_sharding'])
      state, metrics = step_fn(state, batch)
      n_log += 1
      if bar is not None:
        bar.update(1)
      if step % config.log_every_steps == 0 or step == total_steps:
        metrics = jax.device_get(metrics)
        elapsed = time.perf_counter() - t_log
        ips = n_log * config.batch_size / max(elapsed, 1e-9)
        row = {'epoch': step / steps_per_epoch, **metrics,
               'images_per_sec': ips}
        if not math.isfinite(float(metrics['train_loss'])):
          raise FloatingPointError(f'train loss is {metrics["train_loss"]} '
                                   f'at step {step}; lower learning_rate')
        writer.write(step, row)
        if bar is not None:
          bar.set_postfix(loss=f'{float(metrics["train_loss"]):.4f}',
                          img_s=f'{ips:.0f}')
        t_log, n_log = time.perf_counter(), 0
      if step % eval_every == 0 or step == total_steps:
        last_eval = run_evaluation(config, state, eval_fn,
                                   b['batch_sharding'])
        writer.write(step, {'epoch': step / steps_per_epoch, **last_eval})
        if bar is not None:
          bar.write(f'step {step}: eval loss {last_eval["eval_loss"]:.4f} '
                    f'top1 {last_eval["top1"]:.4f} top5 '
                    f'{last_eval["top5"]:.4f}')
        t_log, n_log = time.perf_counter(), 0  # eval time is not train time
      if (step % config.checkpoint_every_steps == 0 or step == total_steps
          or preemption.requested):
        save_checkpoint(manager, state, train_iter.get_state(), config)
      if preemption.requested and step < total_steps:
        manager.wait_until_finished()
        raise Preempted(f'SIGTERM: stopped at step {step}, checkpoint saved '
                        f'in {manager.directory}')
  return {**last_eval, 'step': total_steps}


def restore_state(config: ml_collections.ConfigDict, workdir: str,
                  step: Optional[int] = None
                  ) -> Tuple[Dict[str, Any], TrainState, int]:
  """The model, mesh, ... of `config` (as training builds them) and the
  train state of the latest (or given) checkpoint of `workdir`.

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
    if step is None:
      step = max(steps)
    elif step not in steps:
      raise CheckpointError(f'no checkpoint for step {step} in '
                            f'{manager.directory}; available: '
                            f'{", ".join(map(str, sorted(steps)))}')
    b = _build(config, workdir)
    state, _ = restore_checkpoint(manager, step, b['state'], config.model)
  finally:
    manager.close()
  return b, state, int(step)


def evaluate(config: ml_collections.ConfigDict, workdir: str,
             step: Optional[int] = None) -> Dict[str, Any]:
  """Restores the latest (or given) checkpoint of `workdir`, evaluates the
  whole eval split and writes `workdir/eval.json`."""
  b, state, step = restore_state(config, workdir, step)
  with jax.set_mesh(b['mesh']):
    result = run_evaluation(config, state, _make_eval_fn(b),
                            b['batch_sharding'])
  out = {'top1': result['top1'], 'top5': result['top5'],
         'loss': result['eval_loss'], 'num_examples': result['num_examples'],
         'step': int(step), 'model': config.model, 'dataset': config.dataset}
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'eval.json'), 'w') as f:
      json.dump(out, f, indent=2)
  return out

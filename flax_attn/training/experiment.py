"""One config made concrete: the mesh, dataset spec, model, optimiser,
schedule, initial train state and shardings that training, evaluation and
visualisation share (`Experiment`), and the jitted steps built from it.

One jit-compiled train step and one eval step run over a `jax.sharding.Mesh`
of all (or `config.num_devices`) devices: the batch is sharded along 'data',
the state replicated, so BatchNorm statistics are those of the global batch.
Trace and run the steps under `jax.set_mesh(exp.mesh)`, as the loop does:
ops.py's batch sums (the CPU kernel gradients) then run per device instead
of being all-gathered.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from flax_attn import cpu_kernels
from flax_attn import data as data_lib
from flax_attn.data import DatasetNotFoundError
from flax_attn.data.specs import DatasetSpec
from flax_attn.errors import ConfigError
from flax_attn.init_rng import init_key
from flax_attn.models import model_from_config
from flax_attn.ops import BATCH_AXIS
from flax_attn.training.guard import guarded_train_step
from flax_attn.training.state import (TrainState, create_learning_rate_fn,
                                      create_mesh, create_optimizer,
                                      create_train_state, validate_config)
from flax_attn.training.steps import eval_step


@dataclasses.dataclass(frozen=True)
class Experiment:
  """What `build_experiment` makes of a config.

  Attributes:
    mesh: the 1-D 'data' mesh the batch is sharded over.
    spec: the dataset's spec (classes, channels, ...).
    model: the linen module.
    tx: the optimiser.
    lr_fn: the learning-rate schedule, in steps.
    state: the initial TrainState, replicated over the mesh; with
      `abstract=True` a tree of `jax.ShapeDtypeStruct` with that sharding.
    steps_per_epoch: training examples // config.batch_size.
    total_steps: config.num_train_steps, or num_epochs x steps_per_epoch.
    replicated: the sharding of the state and metrics.
    batch_sharding: the sharding of a global batch (split along 'data').
  """
  mesh: Mesh
  spec: DatasetSpec
  model: nn.Module
  tx: optax.GradientTransformation
  lr_fn: optax.Schedule
  state: TrainState
  steps_per_epoch: int
  total_steps: int
  replicated: NamedSharding
  batch_sharding: NamedSharding


def build_experiment(config: ml_collections.ConfigDict, *,
                     devices: Optional[Sequence[Any]] = None,
                     abstract: bool = False,
                     train_examples: Optional[int] = None,
                     model: Optional[nn.Module] = None) -> Experiment:
  """Checks `config` (one line on a bad value) and builds its Experiment.

  Args:
    config: the run's config.
    devices: the devices to put the mesh on (default jax.devices()); the
      first `config.num_devices` (0: all) are used.
    abstract: `state` is a tree of `jax.ShapeDtypeStruct` (with the
      replicated sharding) from `jax.eval_shape`: nothing is computed or
      placed on a device, so `devices` may be compile-only (e.g. a TPU
      topology), and no workdir is touched.
    train_examples: the size of the training split, which sets
      steps_per_epoch and so the schedule. Default: counted from the
      prepared dataset (`data_lib.num_examples`, which needs its files).
      With `abstract=True` and the files absent, one step per epoch is
      assumed: the schedule's constants then differ from a real run's,
      but not the compiled step's shapes, memory or cost.
    model: a linen module to train instead of the config's (e.g. a
      reference network to compare with, at the same state and step).
  """
  mesh = create_mesh(config, devices)
  validate_config(config, mesh.size)
  spec = data_lib.get_dataset_spec(config.dataset)
  # The one place training and evaluation switch flax_attn's CPU kernels
  # (config.cpu_kernels; 'auto': on for CPU meshes only), before the model
  # is built and any step is traced: a TPU or GPU mesh gets plain XLA.
  cpu_kernels.configure(config.get('cpu_kernels', 'auto'),
                        mesh.devices.flat[0].platform)
  if model is None:
    model = model_from_config(config, spec.num_classes)
  if train_examples is None:
    try:
      train_examples = data_lib.num_examples(config, 'train')
    except DatasetNotFoundError:
      if not abstract:
        raise
      train_examples = config.batch_size
  steps_per_epoch = train_examples // config.batch_size
  if steps_per_epoch < 1:
    raise ConfigError(f'config.batch_size={config.batch_size} is larger than '
                      f'the {train_examples} training '
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
  if abstract:
    shapes = jax.eval_shape(lambda: init(init_key(config.seed)))
    state = jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
        shapes)
  else:
    # A hash-based key (init_rng): JAX's generators cost XLA:CPU seconds to
    # tens of seconds of compile per network; its bits are the same on any
    # device.
    state = jax.jit(init, out_shardings=replicated)(init_key(config.seed))
  return Experiment(mesh=mesh, spec=spec, model=model, tx=tx, lr_fn=lr_fn,
                    state=state, steps_per_epoch=steps_per_epoch,
                    total_steps=total_steps, replicated=replicated,
                    batch_sharding=NamedSharding(mesh, P(BATCH_AXIS)))


def jit_train_step(exp: Experiment, config: ml_collections.ConfigDict):
  """The loop's train step, jitted: `(state, guard, batch) -> (state, guard,
  metrics)` (guarded_train_step), state and guard replicated and donated,
  the batch sharded along 'data'. A compile-only tool lowers this very
  object (under `jax.set_mesh(exp.mesh)`) to measure what the loop runs."""
  return jax.jit(
      functools.partial(guarded_train_step, model=exp.model, tx=exp.tx,
                        lr_fn=exp.lr_fn, num_classes=exp.spec.num_classes,
                        label_smoothing=config.label_smoothing,
                        ema_decay=config.ema_decay,
                        divergence_factor=config.divergence_factor,
                        input_spec=data_lib.input_spec(exp.spec)),
      in_shardings=(exp.replicated, exp.replicated, exp.batch_sharding),
      out_shardings=(exp.replicated, exp.replicated, exp.replicated),
      donate_argnums=(0, 1))


def jit_eval_step(exp: Experiment):
  """The eval step, jitted: `(variables, batch) -> masked sums` (eval_step)."""
  return jax.jit(functools.partial(eval_step, model=exp.model,
                                   num_classes=exp.spec.num_classes,
                                   input_spec=data_lib.input_spec(exp.spec)),
                 in_shardings=(exp.replicated, exp.batch_sharding),
                 out_shardings=exp.replicated)


def global_batch(batch, sharding: NamedSharding):
  """This process's slice of a batch (numpy) as one global, sharded array per
  key."""
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}

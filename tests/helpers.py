"""Utilities shared by the tests."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from flax_attn.init_rng import init_key


def param_count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))


def abstract_variables(model, shape, **kwargs):
  """Variables' shapes without running anything (jax.eval_shape)."""
  return jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False,
                         **kwargs))


def jit_init(model, key, *args, **kwargs):
  """`model.init(key, *args, **kwargs)` compiled as one computation: eager
  init dispatches (and compiles) every initializer on its own, 3-4x slower."""
  return jax.jit(functools.partial(model.init, **kwargs))(key, *args)


def init_variables(model, x, seed=0, **kwargs):
  """`jit_init` with the hash key the trainer uses (faster to compile)."""
  return jit_init(model, init_key(seed), x, **kwargs)


def random_variables(module, shape, seed=0, **kwargs):
  """Random input of `shape` and random parameters of the module's shapes
  (0.3 * N(0, 1), so learnable scales that start at zero take part too),
  without running initialisers: each new shape would cost an XLA compile."""
  rng = np.random.RandomState(seed)
  x = jnp.asarray(rng.randn(*shape), jnp.float32)
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), x, **kwargs))
  variables = jax.tree_util.tree_map(
      lambda s: jnp.asarray(0.3 * rng.randn(*s.shape), s.dtype), shapes)
  return variables, x


def to_numpy(tree):
  return jax.tree_util.tree_map(np.asarray, tree)


def sigmoid(v):
  """NumPy sigmoid, for the reference computations."""
  return 1 / (1 + np.exp(-v))


def model_param_count(model, shape=(1, 224, 224, 3)) -> int:
  return param_count(abstract_variables(model, shape)['params'])


def randomize_batch_stats(variables, key, scale=0.5):
  """Replaces BN running statistics with non-trivial values (for eval tests)."""
  stats = variables.get('batch_stats')
  if not stats:
    return variables
  leaves, treedef = jax.tree_util.tree_flatten_with_path(stats)
  keys = jax.random.split(key, len(leaves))
  new = []
  for (path, leaf), k in zip(leaves, keys):
    name = str(path[-1])
    if 'var' in name:
      new.append(jax.random.uniform(k, leaf.shape, minval=0.5, maxval=1.5))
    else:
      new.append(scale * jax.random.normal(k, leaf.shape))
  return {**variables,
          'batch_stats': jax.tree_util.tree_unflatten(treedef, new)}


def kill_process_groups(procs) -> None:
  """SIGKILLs each still-running subprocess's whole process group (started
  with start_new_session=True) and reaps them all."""
  import os  # pylint: disable=g-import-not-at-top
  import signal  # pylint: disable=g-import-not-at-top
  for proc in procs:
    if proc.poll() is None:
      try:
        os.killpg(proc.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
  for proc in procs:
    proc.communicate()

"""Starting from pretrained weights: config.pretrained_path's arrays loaded
into the fresh train state where path and shape match, and the warning for a
fine-grained run that starts without them."""
from __future__ import annotations

import os
from typing import Optional, Tuple

import flax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from flax_attn.errors import CheckpointError
from flax_attn.training.state import TrainState

# Fine-grained recipes fine-tune ImageNet weights.
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

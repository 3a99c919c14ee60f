"""Models by name, as timm users expect them.

A registered model is a tiny function that only builds keyword arguments
(timm's habit); every name is registered in `models/zoo/`, with the
builders of `models/builders.py`. `create_model(name, num_classes=..., attn=..., **overrides)`
resolves the attention and head names, validates every override and returns
the linen module.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Dict, Mapping, Optional

import flax.linen as nn
import jax.numpy as jnp
from flax import traverse_util

from flax_attn.attention import get_attention
from flax_attn.errors import ConfigError
from flax_attn.models.heads import HEADS
from flax_attn.models.resnet import ResNet
from flax_attn.registry import MODELS

_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16,
           'float16': jnp.float16}

# Keys create_model itself understands; everything else is a module field.
_MODEL_CLS = 'model_cls'


def list_models(pattern: str = '*'):
  """Registered model names matching a shell-style pattern, sorted."""
  return MODELS.names(pattern)


def resolve_dtype(dtype: Any):
  if isinstance(dtype, str):
    if dtype not in _DTYPES:
      raise ConfigError(f'unknown dtype {dtype!r}; valid: {", ".join(_DTYPES)}')
    return _DTYPES[dtype]
  return dtype


def _resolve_head(head: Any):
  if isinstance(head, str):
    return HEADS.get(head)
  return head


def create_model(name: str, num_classes: int = 1000, *,
                 attn: Any = 'default', attn_kwargs: Optional[Mapping] = None,
                 stage_attn: Any = 'default',
                 stage_attn_kwargs: Optional[Mapping] = None,
                 head: Any = None, dtype: Any = jnp.float32,
                 **overrides) -> nn.Module:
  """Builds a registered model.

  Args:
    name: a name from `list_models()`, e.g. 'resnet50', 'seresnet50'.
    num_classes: classifier outputs.
    attn: block attention: a name from `list_attention()`, a module factory,
      or None for none; by default the named model's own.
    attn_kwargs: options of that attention (its dataclass fields).
    stage_attn, stage_attn_kwargs: the same for per-stage attention; place it
      with `stage_attn_after=(1, 2, 3)`.
    head: 'linear' (GAP + FC) or 'fcn' (1x1 conv + GAP, CAM), or a factory.
    dtype: compute dtype ('float32', 'bfloat16' or a jnp dtype).
    **overrides: the builder's own options (e.g. `width` of CIFAR ResNets)
      or any field of the model class (e.g. `stem='small'`).

  Returns:
    A `flax.linen.Module`: `model.init(key, images, train=False)` then
    `model.apply(variables, images, train=False)` gives logits.
  """
  builder = MODELS.get(name)
  params = [p for p in inspect.signature(builder).parameters
            if not p.startswith('_')]
  builder_kwargs = {k: overrides.pop(k) for k in list(overrides)
                    if k in params}
  kwargs: Dict[str, Any] = builder(**builder_kwargs)
  model_cls = kwargs.pop(_MODEL_CLS, ResNet)

  default_attn = kwargs.pop('attn', None), kwargs.pop('attn_kwargs', None)
  default_stage = (kwargs.pop('stage_attn', None),
                   kwargs.pop('stage_attn_kwargs', None))
  if attn == 'default':
    attn, attn_kwargs = default_attn[0], {**(default_attn[1] or {}),
                                          **(attn_kwargs or {})}
  if stage_attn == 'default':
    stage_attn, stage_attn_kwargs = default_stage[0], {
        **(default_stage[1] or {}), **(stage_attn_kwargs or {})}

  fields = {f.name for f in dataclasses.fields(model_cls)} - {'parent', 'name'}
  bad = sorted(set(overrides) - fields)
  if bad:
    valid = sorted(fields | set(params))
    raise ConfigError(f'unknown option {bad[0]!r} for model {name!r}; valid '
                      f'options: {", ".join(valid)}')
  kwargs.update(overrides)
  if not isinstance(num_classes, int) or num_classes <= 0:
    raise ConfigError(f'num_classes must be a positive integer, got '
                      f'{num_classes!r}')
  kwargs['num_classes'] = num_classes
  kwargs['attn'] = get_attention(attn, attn_kwargs)
  kwargs['stage_attn'] = get_attention(stage_attn, stage_attn_kwargs)
  if head is not None or 'head' in kwargs:
    kwargs['head'] = _resolve_head(head if head is not None else kwargs['head'])
  kwargs['dtype'] = resolve_dtype(dtype)
  return model_cls(**kwargs)


def extract_features(model: nn.Module, variables, images, train: bool = False,
                     capture: Optional[Callable[[nn.Module, str], bool]] = None
                     ) -> Dict[str, Any]:
  """Logits, named features and every sown attention map, in one dict.

  Keys: 'logits', 'stem', 'stage1'.., 'pre_logits', head maps ('cam'), and
  one key per attention map, named by module path, e.g.
  'stage1_block0/attn/channel_weights'.

  `capture`: flax's `capture_intermediates` filter `(module, method_name)
  -> bool`; the outputs of the `__call__`s it selects are added under their
  module path, e.g. 'stage1_block0/attn/theta' (what flax_attn.visualize
  uses for the query-key attention no module sows).
  """
  (logits, feats), state = model.apply(
      variables, images, train=train, return_features=True,
      mutable=['intermediates'] + (['batch_stats'] if train else []),
      capture_intermediates=capture or False)
  out = {'logits': logits, **feats}
  flat = traverse_util.flatten_dict(state.get('intermediates', {}), sep='/')
  for path, value in flat.items():
    key = path[:-len('/0')] if path.endswith('/0') else path
    key = key[:-len('/__call__')] if key.endswith('/__call__') else key
    out.setdefault(key, value[0] if isinstance(value, tuple) else value)
  return out


def _plain(value):
  """ConfigDicts (and nested ones) to plain dicts; other values unchanged."""
  if hasattr(value, 'to_dict'):
    value = value.to_dict()
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  return value


def model_from_config(config, num_classes: int) -> nn.Module:
  """The model a training config describes (see configs/default.py).

  Uses `config.model`, `config.model_kwargs` (builder options or module
  fields, e.g. `width`, `stage_attn_kwargs`), `config.attn` ('default' keeps
  the named model's own, 'none' removes it), `config.attn_kwargs`,
  `config.head` ('' keeps the model's own) and `config.dtype`.
  """
  kwargs = _plain(config.get('model_kwargs', {})) or {}
  attn = config.get('attn', 'default')
  attn_kwargs = _plain(config.get('attn_kwargs', {})) or None
  if attn == 'default':
    kwargs.setdefault('attn_kwargs', attn_kwargs)
  else:
    kwargs['attn'] = None if attn in ('none', '', None) else attn
    kwargs['attn_kwargs'] = attn_kwargs
  head = config.get('head', '') or None
  return create_model(config.model, num_classes=num_classes, head=head,
                      dtype=config.get('dtype', 'float32'), **kwargs)

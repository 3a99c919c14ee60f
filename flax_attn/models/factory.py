"""Models by name, as timm users expect them.

A registered model is a tiny function that only builds keyword arguments
(timm's habit). `create_model(name, num_classes=..., attn=..., **overrides)`
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
from flax_attn.registry import MODELS, register_model

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


# --------------------------------------------------------------------------
# Named models. Each returns the kwargs of its model class.
# --------------------------------------------------------------------------

_IMAGENET_DEPTHS = {
    18: ('basic', (2, 2, 2, 2)),
    34: ('basic', (3, 4, 6, 3)),
    26: ('bottleneck', (2, 2, 2, 2)),
    50: ('bottleneck', (3, 4, 6, 3)),
    101: ('bottleneck', (3, 4, 23, 3)),
    152: ('bottleneck', (3, 8, 36, 3)),
}


def imagenet_resnet(depth: int, **kw) -> Dict[str, Any]:
  block, sizes = _IMAGENET_DEPTHS[depth]
  return dict(stage_sizes=sizes, block=kw.pop('block', block), **kw)


def cifar_resnet(depth: int, width: int = 16, block: str = 'basic',
                 shortcut: str = 'A', **kw) -> Dict[str, Any]:
  """He et al. 2016 Sec. 4.2 CIFAR ResNets: 3 stages of n blocks.

  Basic blocks: depth = 6n + 2; bottlenecks: depth = 9n + 2. Widths
  (width, 2 width, 4 width) after a 3x3 stem of `width` channels.
  """
  per_block = 2 if block in ('basic', 'res2net_basic') else 3
  if (depth - 2) % (3 * per_block):
    raise ConfigError(f'CIFAR ResNet depth {depth} is not '
                      f'{3 * per_block}n+2 for {block} blocks')
  n = (depth - 2) // (3 * per_block)
  return dict(stage_sizes=(n, n, n), block=block, stem='small',
              stem_width=width, stage_widths=(width, 2 * width, 4 * width),
              stage_strides=(1, 2, 2), shortcut=shortcut, **kw)


def _register_simple(name: str, fn: Callable[..., Dict[str, Any]]):
  register_model(name)(fn)


for _d in (18, 34, 50, 101, 152):
  _register_simple(f'resnet{_d}', lambda _d=_d: imagenet_resnet(_d))
_register_simple('resnet26', lambda: imagenet_resnet(26))

for _d, _g, _w in ((50, 32, 4), (101, 32, 4), (101, 32, 8), (101, 64, 4)):
  _register_simple(f'resnext{_d}_{_g}x{_w}d',
                   lambda _d=_d, _g=_g, _w=_w: imagenet_resnet(
                       _d, block_kwargs=dict(groups=_g, base_width=_w)))

for _d in (50, 101):
  _register_simple(f'wide_resnet{_d}_2',
                   lambda _d=_d: imagenet_resnet(
                       _d, block_kwargs=dict(base_width=128)))


def res2net(depth: int, base_width: int = 26, scale: int = 4, **kw):
  """Res2Net (Gao et al. 2021): bottlenecks for 50/101, basic for 18/34."""
  if depth in (18, 34):
    return imagenet_resnet(depth, block='res2net_basic',
                           block_kwargs=dict(scale=scale), **kw)
  return imagenet_resnet(depth, block='res2net_bottleneck',
                         block_kwargs=dict(base_width=base_width,
                                           scale=scale), **kw)


for _d in (50, 101):
  register_model(f'res2net{_d}_26w_4s')(
      lambda base_width=26, scale=4, _d=_d: res2net(_d, base_width, scale))
for _w, _s in ((26, 6), (26, 8), (48, 2), (14, 8)):
  register_model(f'res2net50_{_w}w_{_s}s')(
      lambda base_width=_w, scale=_s: res2net(50, base_width, scale))
for _d in (18, 34):
  register_model(f'res2net{_d}')(lambda scale=4, _d=_d: res2net(_d, scale=scale))

# CIFAR ResNets (He 2016): resnet26 is timm's ImageNet model, so every CIFAR
# depth is also registered as cifar_resnetN and 26 only under that name.
_CIFAR_BASIC = (8, 14, 20, 26, 32, 44, 56, 110, 1202)
for _d in _CIFAR_BASIC:
  _fn = (lambda width=16, shortcut='A', _d=_d:
         cifar_resnet(_d, width=width, shortcut=shortcut))
  register_model(f'cifar_resnet{_d}')(_fn)
  if f'resnet{_d}' not in MODELS:
    register_model(f'resnet{_d}')(_fn)
for _name in ('resnet164', 'cifar_resnet164'):
  register_model(_name)(lambda width=16, shortcut='B': cifar_resnet(
      164, width=width, block='bottleneck', shortcut=shortcut))


@register_model('wrn28_10')
def wrn28_10(widen_factor: float = 10.0):
  """WRN-28-10 (Zagoruyko & Komodakis 2016) layout: 3 stages of 4 basic
  blocks, widths 16k/32k/64k, projection shortcuts. Post-activation blocks
  (this library's BasicBlock), so attention sits where it does in every
  other backbone; the original WRN is pre-activation with dropout."""
  # WRN depth counts 6n + 4 layers (n = 4 for 28), not the 6n + 2 of He 2016.
  kw = cifar_resnet(26, width=16, shortcut='B')
  kw['widen_factor'] = widen_factor
  return kw


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

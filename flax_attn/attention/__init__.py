"""Attention modules, one file per paper or family, registered by name.

The contract every attention type keeps (so backbones never import one):
  * it is a `flax.linen.Module` whose dataclass fields are its
    hyper-parameters, with the paper's defaults, plus `dtype`, the compute
    dtype (parameters stay float32);
  * it infers the channel count `C` from its input;
  * it is called as `module(x, train=False)` on an NHWC map and returns a map
    of the same shape and dtype;
  * maps worth visualising are recorded with `self.sow('intermediates', ...)`.

`get_attention(name, **kwargs)` turns a registered name into a factory (a
`functools.partial` of the class) that a block calls with `name=`.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Optional, Union

from flax_attn.errors import ConfigError
from flax_attn.registry import ATTENTION, import_submodules, register_attention  # noqa: F401,E501

# Every module of this package registers its attention types when imported:
# adding an attention type is adding one file here.
import_submodules(__name__, __path__)


class NotABlockAttentionError(ConfigError):
  """Raised for a registered type that cannot gate a block's output (it
  replaces a layer instead, like SK); its message names what to use."""


AttnSpec = Union[None, str, Callable[..., Any]]

# Fields every module has that are set by the backbone, not by users.
_RESERVED_FIELDS = ('parent', 'name')


def list_attention(pattern: str = '*'):
  """Registered attention names matching a shell-style pattern."""
  return ATTENTION.names(pattern)


def attention_fields(cls) -> list:
  return [f.name for f in dataclasses.fields(cls)
          if f.name not in _RESERVED_FIELDS]


def get_attention(spec: AttnSpec,
                  kwargs: Optional[Mapping[str, Any]] = None
                  ) -> Optional[Callable[..., Any]]:
  """Resolves `spec` (a registered name, a factory or None) to a factory.

  Unknown names and unknown keyword arguments fail with one line naming the
  valid choices.
  """
  kwargs = dict(kwargs or {})
  if spec is None or spec == '' or spec == 'none':
    if kwargs:
      raise ConfigError(f'attention kwargs {sorted(kwargs)} given without an '
                        'attention type')
    return None
  if isinstance(spec, str):
    cls = ATTENTION.get(spec)
    # A type that replaces a layer (SK) says so with this class attribute.
    if getattr(cls, 'not_a_block_attention', None):
      raise NotABlockAttentionError(cls.not_a_block_attention)
    valid = attention_fields(cls)
    bad = sorted(set(kwargs) - set(valid))
    if bad:
      raise ConfigError(f'unknown option {bad[0]!r} for attention {spec!r}; '
                        f'valid options: {", ".join(valid)}')
    return functools.partial(cls, **kwargs)
  if callable(spec):
    return functools.partial(spec, **kwargs) if kwargs else spec
  raise TypeError(f'attention must be a name, a module factory or None, '
                  f'got {spec!r}')

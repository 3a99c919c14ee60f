"""Keyword-argument builders of the backbone families (ResNet-style): what
the registered names of `models/zoo/` return."""
from __future__ import annotations

from typing import Any, Dict

from flax_attn.errors import ConfigError

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


def res2net(depth: int, base_width: int = 26, scale: int = 4, **kw):
  """Res2Net (Gao et al. 2021): bottlenecks for 50/101, basic for 18/34."""
  if depth in (18, 34):
    return imagenet_resnet(depth, block='res2net_basic',
                           block_kwargs=dict(scale=scale), **kw)
  return imagenet_resnet(depth, block='res2net_bottleneck',
                         block_kwargs=dict(base_width=base_width,
                                           scale=scale), **kw)

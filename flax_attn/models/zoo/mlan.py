"""MLAN named models (Wang, Qin et al. 2022): mlan_resnet14..32.

CIFAR ResNets of 3 groups of n = (depth - 2) / 6 basic blocks (Table 1):
widths (8, 16, 32) for CIFAR-10 by default, `width=16` gives Table 8's
(16, 32, 64) for CIFAR-100. SMA (N = 3) at every level, plus fusion,
multi-level structure: the paper's defaults (Sec. IV). Every MLAN field
(`fusion`, `multi_level`, `aggregation`, `block_attn`, ...) and the
attention (`attn='sma_v2' | 'fma' | 'cbam' | ...`) can be overridden through
`create_model`.
"""
from flax_attn.errors import ConfigError
from flax_attn.models.mlan import MLAN
from flax_attn.registry import register_model

MLAN_DEPTHS = (14, 20, 26, 32)


def mlan_cifar(depth: int, width: int = 8, attn: str = 'sma'):
  """Kwargs of an MLAN on a CIFAR ResNet of `depth` = 6n + 2 layers."""
  if (depth - 2) % 6:
    raise ConfigError(f'MLAN ResNet depth {depth} is not 6n+2; valid depths '
                      f'include {", ".join(map(str, MLAN_DEPTHS))}')
  n = (depth - 2) // 6
  return dict(model_cls=MLAN, stage_sizes=(n, n, n), stem_width=width,
              stage_widths=(width, 2 * width, 4 * width),
              stage_strides=(1, 2, 2), attn=attn)


for _depth in MLAN_DEPTHS:
  register_model(f'mlan_resnet{_depth}')(
      lambda width=8, _depth=_depth: mlan_cifar(_depth, width))

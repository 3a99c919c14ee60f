"""timm's pretrained attention ResNets: ResNet-D/-T backbones, SE, ECA, GC.

Architectures and parameter counts are timm's (`timm.create_model(name)`),
so `flax_attn.weights.from_torch` / `python -m flax_attn.convert` import
their ImageNet weights:

  resnet26d, resnet50d, resnet101d  ResNet-D (He et al. 2019, "Bag of
      Tricks", Sec. 4.1): deep 3x3 stem 32-32-64 (`stem_type='deep'`) and
      average-pool projection shortcuts (`avg_down=True`).
  seresnext26d_32x4d  ResNeXt-26 32x4d, D stem and shortcuts, SE.
  ecaresnet26t, ecaresnet50t  the tiered 24-32-64 deep stem
      (`stem_type='deep_tiered'`), avg-pool shortcuts, ECA.
  ecaresnet50d, ecaresnet101d  ResNet-D with ECA.
  gcresnet50t  timm's ByobNet 'gcresnet50t': tiered stem whose last conv
      strides 2 instead of a max-pool (`stem_pool=''`), plain projection
      shortcuts, and GC attention *inside* each bottleneck, after the 3x3
      conv's BN + ReLU at the inner width (block 'mid_attn_bottleneck').

Elsewhere: seresnext50_32x4d (zoo/classic.py) and skresnet18/34,
skresnext50_32x4d (zoo/comparators.py) are timm's too.

Where an attention module's defaults (the papers') differ from timm's, these
models pass timm's settings:
  ECA  timm floors the adaptive kernel at 3 taps: `min_kernel_size=3`
       (no difference at these widths, C >= 256).
  GC   timm's 'gca': r = 8, C/r rounded to nearest, LayerNorm eps 1e-6:
       `reduction=8, rd_divisor=1, ln_epsilon=1e-6` (the authors' r = 16,
       int(C / r), eps 1e-5 are GlobalContext's defaults).
  SE   timm's SEModule is ours: r = 16, C/r rounded to a multiple of 8.
"""
from __future__ import annotations

import flax.linen as nn

from flax_attn.models.builders import imagenet_resnet
from flax_attn.models.resnet import BLOCKS, Bottleneck
from flax_attn.registry import register_model

ECA_TIMM = dict(min_kernel_size=3)
GC_TIMM = dict(reduction=8, rd_divisor=1, ln_epsilon=1e-6)


class MidAttentionBottleneck(Bottleneck):
  """Bottleneck with `attn` after the 3x3 conv's BN + act, at the inner
  width, before the last 1x1 conv (timm ByobNet's `BottleneckBlock` with
  `attn_last=False`, as gcresnet50t uses it):
    1x1 -> BN -> act -> 3x3 -> BN -> act -> attn -> 1x1 -> BN -> + shortcut.
  Its PyTorch counterpart names modules as ByobNet does (`torch_layout`,
  read by flax_attn.weights).
  """
  torch_layout = 'byobnet'

  @nn.compact
  def __call__(self, x, train: bool = False):
    width = int(self.filters * (self.base_width / 64.0)) * self.groups
    out = self.filters * self.expansion
    y = self.conv(width, (1, 1), name='conv1')(x)
    y = self.act(self.norm(name='bn1')(y))
    y = self.spatial_conv(y, width, self.strides, self.groups, 2, train)
    y = self.attend(y, train)
    y = self.conv(out, (1, 1), name='conv3')(y)
    y = self.last_norm(y, 'bn3')
    return self.add_shortcut(x, y, out)


BLOCKS['mid_attn_bottleneck'] = MidAttentionBottleneck


def resnet_d(depth: int, stem_type: str = 'deep', **kw):
  """timm's '-D' ('deep') and '-T' ('deep_tiered') ResNets: a deep stem of
  stem_width 32 and average-pool projection shortcuts."""
  return imagenet_resnet(depth, stem_width=32, stem_type=stem_type,
                         avg_down=True, **kw)


for _d in (26, 50, 101):
  register_model(f'resnet{_d}d')(lambda _d=_d: resnet_d(_d))
  if _d != 26:
    register_model(f'ecaresnet{_d}d')(lambda _d=_d: resnet_d(
        _d, attn='eca', attn_kwargs=ECA_TIMM))
for _d in (26, 50):
  register_model(f'ecaresnet{_d}t')(lambda _d=_d: resnet_d(
      _d, stem_type='deep_tiered', attn='eca', attn_kwargs=ECA_TIMM))

register_model('seresnext26d_32x4d')(lambda: resnet_d(
    26, attn='se', block_kwargs=dict(groups=32, base_width=4)))


@register_model('gcresnet50t')
def gcresnet50t():
  """timm's ByobNet gcresnet50t: see the module docstring. Its weights use
  ByobNet's key layout (stem.convN, stages.i.j.conv1_1x1, ...), which
  flax_attn.weights recognises by the block type."""
  return imagenet_resnet(50, block='mid_attn_bottleneck', stem_width=32,
                         stem_type='deep_tiered', stem_pool='', attn='gc',
                         attn_kwargs=GC_TIMM)

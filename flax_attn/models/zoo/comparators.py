"""The comparator zoo: SimAM, GC, SK, triplet attention and non-local nets.

Each attention type works on any backbone as `create_model(name, attn=key)`
(in the block-attention slot: after the block's last norm, before the
residual addition). The named models below follow each paper's own
placement, which is not always that slot:

  simam_resnet18/34/50/101  SimAM right after the block's 3x3 conv, before its
      BN (authors' `networks/imagenet/resnet.py`), blocks 'simam_basic' /
      'simam_bottleneck'; lambda = 1e-4, the paper's default (the authors'
      README trains ImageNet with 0.1: pass attn_kwargs=dict(e_lambda=0.1)).
  gc_resnet50/101  GC (r = 16, 'add') after the last norm of every block of
      stages 2-4 only (c3-c5, the authors' `r16_gcb_c3-c5`); `gc_stages`
      changes that.
  skresnet18/34  timm's: the first 3x3 conv of each basic block is a
      selective-kernel conv (split input, r = 8, d a multiple of 16),
      block 'sk_basic'.
  skresnext50_32x4d  SKNet-50 of the SK paper (= timm's): ResNeXt-50 32x4d
      whose grouped 3x3 conv is SK (M = 2, G = 32, r = 16, L = 32), block
      'sk_bottleneck'.
  triplet_resnet18/50  triplet attention after the last norm of every block.
  nl_resnet50  five non-local blocks *between* residual blocks, after blocks
      1, 3 of res3 and 1, 3, 5 of res4 (0-based; Wang et al. 2018, Table 2c
      "5-block", authors' `LAYER_MOD = 2`), blocks 'nl_bottleneck' /
      'nl_basic'; `nonlocal_after` changes where.

Blocks registered here (into `flax_attn.models.resnet.BLOCKS`):
  'simam_basic', 'simam_bottleneck': the block's `attn` goes after the 3x3
      conv, before its BN (any attention type can use that spot);
  'sk_basic', 'sk_bottleneck': the 3x3 conv is a selective-kernel conv;
      options through `block_kwargs=dict(sk_kwargs=dict(...))`;
  'nl_basic', 'nl_bottleneck': a non-local block after the blocks named in
      `block_kwargs=dict(nonlocal_after=('stage3_block1', ...))`.
"""
from __future__ import annotations

import functools
from typing import Any, Dict, Optional, Sequence

import flax.linen as nn

from flax_attn.attention.non_local import NonLocalBlock
from flax_attn.attention.selective_kernel import SelectiveKernelConv
from flax_attn.models.builders import imagenet_resnet
from flax_attn.models.resnet import BLOCKS, BasicBlock, Bottleneck
from flax_attn.registry import ATTENTION, register_model


# --------------------------------------------------------------------------
# SimAM placement: attention after the 3x3 conv, before its BN.
# --------------------------------------------------------------------------

class SimAMBasicBlock(BasicBlock):
  """Basic block with `attn` between conv2 and bn2 (SimAM's placement)."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    y = self.spatial_conv(x, self.filters, self.strides, 1, 1, train)
    y = self.conv(self.filters, (3, 3), name='conv2')(y)
    y = self.last_norm(self.attend(y, train), 'bn2')
    return self.add_shortcut(x, y, self.filters)


class SimAMBottleneck(Bottleneck):
  """Bottleneck with `attn` between the 3x3 conv2 and bn2 (SimAM's place);
  the attention sees the inner width, not the expanded output."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    width = int(self.filters * (self.base_width / 64.0)) * self.groups
    out = self.filters * self.expansion
    y = self.conv(width, (1, 1), name='conv1')(x)
    y = self.act(self.norm(name='bn1')(y))
    y = self.conv(width, (3, 3), (self.strides, self.strides),
                  feature_group_count=self.groups, name='conv2')(y)
    y = self.act(self.norm(name='bn2')(self.attend(y, train)))
    y = self.conv(out, (1, 1), name='conv3')(y)
    y = self.last_norm(y, 'bn3')
    return self.add_shortcut(x, y, out)


# --------------------------------------------------------------------------
# Selective-kernel blocks (timm's SelectiveKernelBasic / Bottleneck): the
# block's 3x3 conv (with its BN and ReLU) becomes a selective-kernel conv.
# --------------------------------------------------------------------------

# timm's skresnet18/34 settings; the bottleneck defaults to the SK paper's
# (SelectiveKernelConv's own defaults: r = 16, L = 32, no input split).
SK_BASIC_DEFAULTS = dict(rd_ratio=1 / 8, rd_divisor=16, split_input=True)


class _SelectiveKernelSpatial:
  """Mixin: the block's 3x3 conv (with its BN and act) is a
  `SelectiveKernelConv`, the block's `sk_kwargs` over `sk_defaults`."""
  sk_defaults = {}

  def spatial_conv(self, y, features, strides, groups, index, train):
    return SelectiveKernelConv(
        features, strides, groups=groups, conv=self.conv, norm=self.norm,
        act=self.act, dtype=y.dtype,
        **{**self.sk_defaults, **(self.sk_kwargs or {})},
        name=f'conv{index}')(y, train=train)


class SelectiveKernelBasicBlock(_SelectiveKernelSpatial, BasicBlock):
  """SK conv (stride) -> 3x3 conv -> BN -> attn -> + shortcut -> act.

  The SK conv's paths carry their own BN + ReLU, so there is no bn1.
  `sk_kwargs` overrides `SelectiveKernelConv` fields (defaults: timm's
  skresnet18/34, `SK_BASIC_DEFAULTS`).
  """
  sk_kwargs: Optional[Dict[str, Any]] = None
  sk_defaults = SK_BASIC_DEFAULTS


class SelectiveKernelBottleneck(_SelectiveKernelSpatial, Bottleneck):
  """1x1 -> SK conv (stride, groups) -> 1x1 -> BN -> attn -> + shortcut.

  Inner width `floor(filters * base_width / 64) * groups` as ResNeXt.
  `sk_kwargs` overrides `SelectiveKernelConv` fields (defaults: the SK
  paper's r = 16, L = 32, whole input to every path).
  """
  sk_kwargs: Optional[Dict[str, Any]] = None


# --------------------------------------------------------------------------
# Non-local blocks between residual blocks (Wang et al. 2018, Sec. 4.1).
# --------------------------------------------------------------------------

class _NonLocalAfter:
  """Mixin: a non-local block on the output of the blocks it names.

  A block knows where it is only by its name ('stage3_block1', as ResNet
  names them), so `nonlocal_after` lists block names.
  """

  def _maybe_nonlocal(self, y, train):
    if self.name in tuple(self.nonlocal_after):
      y = NonLocalBlock(**(self.nonlocal_kwargs or {}), dtype=y.dtype,
                        name='nonlocal')(y, train=train)
    return y


class NonLocalBasicBlock(_NonLocalAfter, BasicBlock):
  """Basic block followed, where named, by a non-local block."""
  nonlocal_after: Sequence[str] = ()
  nonlocal_kwargs: Optional[Dict[str, Any]] = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    return self._maybe_nonlocal(super().__call__(x, train=train), train)


class NonLocalBottleneck(_NonLocalAfter, Bottleneck):
  """Bottleneck followed, where named, by a non-local block."""
  nonlocal_after: Sequence[str] = ()
  nonlocal_kwargs: Optional[Dict[str, Any]] = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    return self._maybe_nonlocal(super().__call__(x, train=train), train)


BLOCKS.update({
    'simam_basic': SimAMBasicBlock,
    'simam_bottleneck': SimAMBottleneck,
    'sk_basic': SelectiveKernelBasicBlock,
    'sk_bottleneck': SelectiveKernelBottleneck,
    'nl_basic': NonLocalBasicBlock,
    'nl_bottleneck': NonLocalBottleneck,
})


# --------------------------------------------------------------------------
# Block attention restricted to some stages (GCNet's c3-c5).
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def attention_in_stages(attention_cls, stages: Sequence[int]):
  """`attention_cls` acting only in blocks of the given 1-based stages.

  Returns a subclass with the same fields (so `attn_kwargs` still apply)
  that is the identity, without parameters, in blocks of other stages. The
  block is recognised by its name, 'stage{i}_block{j}' (ResNet's naming).
  """
  stage_names = frozenset(f'stage{s}' for s in stages)

  class InStages(attention_cls):

    def __call__(self, x, train: bool = False):
      block = self.path[-2] if len(self.path) >= 2 else ''
      if block.split('_')[0] not in stage_names:
        return x
      return super().__call__(x, train=train)

  InStages.__name__ = InStages.__qualname__ = (
      f'{attention_cls.__name__}InStages{"".join(map(str, stages))}')
  return InStages


# --------------------------------------------------------------------------
# Named models.
# --------------------------------------------------------------------------

_SIMAM_LAMBDA = 1e-4  # the paper's lambda (Sec. 3.2); authors' README uses 0.1 on ImageNet

for _d in (18, 34, 50, 101):
  register_model(f'simam_resnet{_d}')(
      lambda _d=_d: imagenet_resnet(
          _d, block='simam_basic' if _d < 50 else 'simam_bottleneck',
          attn='simam', attn_kwargs=dict(e_lambda=_SIMAM_LAMBDA)))


def _gc_resnet(depth: int, gc_stages: Sequence[int] = (2, 3, 4)):
  gc = attention_in_stages(ATTENTION.get('gc'), tuple(gc_stages))
  return imagenet_resnet(depth, attn=gc)


for _d in (50, 101):
  register_model(f'gc_resnet{_d}')(
      lambda gc_stages=(2, 3, 4), _d=_d: _gc_resnet(_d, gc_stages))

for _d in (18, 34):
  register_model(f'skresnet{_d}')(
      lambda _d=_d: imagenet_resnet(_d, block='sk_basic'))
register_model('skresnext50_32x4d')(lambda: imagenet_resnet(
    50, block='sk_bottleneck', block_kwargs=dict(groups=32, base_width=4)))

for _d in (18, 50):
  register_model(f'triplet_resnet{_d}')(
      lambda _d=_d: imagenet_resnet(_d, attn='triplet'))

# After residual blocks 1, 3 of res3 and 1, 3, 5 of res4 (0-based), i.e.
# `idx % 2 == 1` in the authors' `res_stage_nonlocal` with LAYER_MOD = 2.
NL_RESNET50_PLACES = ('stage2_block1', 'stage2_block3', 'stage3_block1',
                      'stage3_block3', 'stage3_block5')


@register_model('nl_resnet50')
def nl_resnet50(nonlocal_after: Sequence[str] = NL_RESNET50_PLACES):
  """ResNet-50 with the paper's 5 non-local blocks (Table 2c)."""
  return imagenet_resnet(50, block='nl_bottleneck', block_kwargs=dict(
      nonlocal_after=tuple(nonlocal_after)))

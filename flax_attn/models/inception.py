"""A small Inception-style network: HGA's second placement (Fig. 2c, 2d).

HGA (Cao et al. 2020, Sec. 4) is shown on two designs: in a
ResBlock on the main path before the addition (Fig. 2b, the ResNets of
flax_attn/models/resnet.py), and in an Inception block *after* the block
(Fig. 2d): on the concatenation of all four branches, the 1x1 branch
included, since "the identical information transmission is utilized by
1x1 convolutional layer" and that 1x1 convolution "will change the
distribution of information from different channels", so no branch is
left out of the attention.

`InceptionBlock` is GoogLeNet's Inception module (Szegedy et al. 2015,
Fig. 2b) with conv-BN-ReLU units as torchvision's GoogLeNet has them:

  1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max-pool (stride 1) -> 1x1
  -> concatenate -> attn (Fig. 2d) -> output

`InceptionNet` is a small example network of such blocks (the paper gives
no Inception architecture or results): a 3x3 stem, stages of blocks with a
3x3 / stride-2 max-pool between stages, GAP + FC. The attention is any
block attention by name (`attn='hga'` for `hga_inception_tiny`); the
network never imports a particular one.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from flax_attn.errors import ConfigError
from flax_attn.models.heads import LinearHead, apply_head
from flax_attn.models.layers import (ModuleDef, small_stem, start_backbone,
                                     with_dtype)

Factory = Optional[Callable[..., nn.Module]]

# (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection) output channels.
BranchWidths = Tuple[int, int, int, int, int, int]


class InceptionBlock(nn.Module):
  """Four branches, concatenated, then the block attention (HGA Fig. 2d)."""
  widths: BranchWidths
  conv: ModuleDef
  norm: ModuleDef
  attn: Factory = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    w1, w3_reduce, w3, w5_reduce, w5, w_pool = self.widths

    def unit(y, features, kernel, name):
      y = self.conv(features, (kernel, kernel), name=f'{name}_conv')(y)
      return nn.relu(self.norm(name=f'{name}_bn')(y))

    branch1 = unit(x, w1, 1, 'branch1')
    branch3 = unit(unit(x, w3_reduce, 1, 'branch3_reduce'), w3, 3, 'branch3')
    branch5 = unit(unit(x, w5_reduce, 1, 'branch5_reduce'), w5, 5, 'branch5')
    pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    branch_pool = unit(pooled, w_pool, 1, 'branch_pool')
    y = jnp.concatenate([branch1, branch3, branch5, branch_pool], axis=-1)
    if self.attn is not None:
      y = self.attn(name='attn')(y, train=train)
    return y


class InceptionNet(nn.Module):
  """Stem, stages of Inception blocks (max-pool 3x3/2 between), GAP + FC.

  Attributes:
    stage_blocks: per stage, the branch widths of each of its blocks.
    num_classes: classifier outputs.
    stem_width: channels of the 3x3 stem conv.
    attn: block attention factory, applied after every block (Fig. 2d).
    stage_attn: per-stage attention factory after the stages named in
      `stage_attn_after` (1-based), as in the ResNets.
    head: classifier head factory.
    dtype: compute dtype.
    bn_momentum, bn_epsilon, bn_axis_name: BatchNorm settings.
  """
  stage_blocks: Sequence[Sequence[BranchWidths]]
  num_classes: int = 10
  stem_width: int = 32
  attn: Factory = None
  stage_attn: Factory = None
  stage_attn_after: Sequence[int] = ()
  head: Callable[..., nn.Module] = LinearHead
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  bn_axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool = False, return_features: bool = False):
    x, conv, norm = start_backbone(self, x, train)
    attn = with_dtype(self.attn, self.dtype)
    stage_attn = with_dtype(self.stage_attn, self.dtype)
    x = small_stem(x, conv, norm, nn.relu, self.stem_width)
    features = {'stem': x}
    for i, blocks in enumerate(self.stage_blocks):
      if i:
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
      for j, widths in enumerate(blocks):
        x = InceptionBlock(tuple(widths), conv, norm, attn,
                           name=f'stage{i + 1}_block{j}')(x, train=train)
      if stage_attn is not None and (i + 1) in self.stage_attn_after:
        x = stage_attn(name=f'stage{i + 1}_attn')(x, train=train)
      features[f'stage{i + 1}'] = x
    return apply_head(self, x, features, train, return_features)


# A CIFAR-sized example: GoogLeNet's 3a / 3b / 4a widths, halved.
TINY_STAGES = (
    ((32, 48, 64, 8, 16, 16), (64, 64, 96, 16, 48, 32)),
    ((96, 48, 104, 8, 24, 32),),
)


def inception_tiny_kwargs(**kw):
  return dict(model_cls=InceptionNet, stage_blocks=TINY_STAGES,
              stem_width=32, **kw)

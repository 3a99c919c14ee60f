"""MGAN networks and classifier head (Wu & Tanprasert 2023, seed 000).

Named models: `mgan_resnet18/34/50/101` and `mgan_res2net18/34/50/101`
(Table 1; Res2Net-50/101 are res2net50_26w_4s-style, Res2Net-18/34 use the
'res2net_basic' block). The multi-grained attention `MA` ('mgan') follows
stages conv2_x, conv3_x and conv4_x (`stage_attn_after=(1, 2, 3)`); Table 4's
kernel sets are `stage_attn_kwargs=dict(kernel_sizes=(3, 3, 3))` etc.

Stem (Sec. 4.1: "7x7 or 3x3, depending on the size of the images"): the
models default to the 7 x 7 / stride-2 stem with max-pool ('imagenet', for
84 x 84 Mini-ImageNet and larger); for 32 x 32 CIFAR images pass
`stem='small'` (3 x 3 / stride-1 conv, no pool), e.g.
`create_model('mgan_resnet18', num_classes=10, stem='small')`.

The head `HEADS['mgan']` is Alg. 3 steps 9-12, optional (`head='mgan'`).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from flax_attn.attention.mgan import MultiGrainedFeatures
from flax_attn.models.factory import imagenet_resnet, res2net
from flax_attn.models.heads import HEADS
from flax_attn.ops import Conv
from flax_attn.registry import register_model

# Table 1: an attention module after conv2_x, conv3_x and conv4_x.
MGAN_STAGES = (1, 2, 3)


@HEADS.register('mgan')
class MGANHead(nn.Module):
  """MGAN classifier, Alg. 3 steps 9-12, on the last feature map F.

    F_cat = MA steps 1-8 on F            (len(kernel_sizes) * C channels)
    F_new = concat(F_cat, Conv1x1(F))    (step 9; Conv1x1 keeps C)
    F_pool = MaxPool(Conv2D(F_new, K))   (step 10; global max-pool)
    F_c = FC(flatten(F_pool))            (step 11; logits, softmax in the loss)

  Alg. 3 leaves K and the widths open. Reading: K = `conv_kernel_size` (1 by
  default, so the head stays near the attention's own size), the K x K conv
  maps to `width` channels (None = C), max-pooling is global so the FC input
  does not depend on the image size; convs and FC carry biases.

  Attributes:
    num_classes: classifier outputs.
    kernel_sizes, reduction, spatial_kernel_size: as in `MultiGrainedAttention`.
    conv_kernel_size: K of step 10.
    width: output channels of step 10's conv (None = C).
    dtype: compute dtype.
  """
  num_classes: int
  kernel_sizes: Sequence[int] = (3, 5, 7)
  reduction: float = 16
  spatial_kernel_size: int = 1
  conv_kernel_size: int = 1
  width: Optional[int] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    channels = x.shape[-1]
    fused = MultiGrainedFeatures(self.kernel_sizes, self.reduction,
                                 self.spatial_kernel_size, self.dtype,
                                 name='features')(x)                # steps 1-8
    projected = Conv(channels, (1, 1), dtype=self.dtype,
                     name='feature_conv')(x)
    combined = jnp.concatenate([fused, projected], axis=-1)          # step 9
    k = self.conv_kernel_size
    y = Conv(self.width or channels, (k, k), padding=k // 2,
             dtype=self.dtype, name='conv')(combined)                # step 10
    pooled = jnp.max(y, axis=(1, 2))
    logits = nn.Dense(self.num_classes, dtype=self.dtype,
                      name='fc')(pooled)                              # step 11
    return logits, {'pre_logits': pooled}


def _mgan(kw):
  return dict(kw, stage_attn='mgan', stage_attn_after=MGAN_STAGES)


for _depth in (18, 34, 50, 101):
  register_model(f'mgan_resnet{_depth}')(
      lambda _depth=_depth: _mgan(imagenet_resnet(_depth)))
  register_model(f'mgan_res2net{_depth}')(
      lambda base_width=26, scale=4, _depth=_depth: _mgan(
          res2net(_depth, base_width=base_width, scale=scale)))

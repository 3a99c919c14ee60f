"""Triplet attention.

Misra, Nalamada, Arasanipalai, Hou, "Rotate to Attend: Convolutional Triplet
Attention Module", WACV 2021.

Three branches, each a spatial gate over a rotated view of the C x H x W
tensor (Sec. 3, Fig. 3):

  Z-pool(t) = [MaxPool_0(t); AvgPool_0(t)]                          (Eq. 1)
  branch_i  = rot^-1( rot(x) * sigmoid(BN(conv_kxk(Z-pool(rot(x))))) )
  y = 1/3 (branch_cw + branch_hc + branch_hw)        (the branches' average)

where the pooled ("channel") axis is H for the C-W branch, W for the H-C
branch and C for the plain spatial H-W branch. k = 7; the conv maps 2 -> 1
channels without bias and is followed by BatchNorm (the authors' code,
`BasicConv(2, 1, 7, relu=False)`, BN momentum 0.01 in PyTorch's convention,
i.e. 0.99 in Flax's).

Reading: the rotated views and the kernel's axis order follow the authors'
NCHW code (`x.permute(0, 2, 1, 3)`: spatial axes (C, W); `x.permute(0, 3, 2,
1)`: spatial axes (H, C); plain: (H, W)), and Z-pool stacks max before mean,
so their weights map one to one: a Flax kernel (kh, kw, 2, 1) is PyTorch's
(1, 2, kh, kw) transposed. `no_spatial=True` drops the H-W branch and averages
the other two (the authors' option).

Placement: after the last norm of each residual block, before the addition
(the authors' ResNet code, inherited from CBAM's); named `triplet_resnetN`.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from flax_attn.ops import Conv
from flax_attn.registry import register_attention


def z_pool(x):
  """Eq. 1 over the last axis: [max; mean], 2 channels (max first)."""
  return jnp.concatenate([jnp.max(x, axis=-1, keepdims=True),
                          jnp.mean(x, axis=-1, keepdims=True)], axis=-1)


class AttentionGate(nn.Module):
  """Z-pool -> k x k conv (2 -> 1, no bias) -> BN -> sigmoid; returns x * w."""
  kernel_size: int = 7
  bn_momentum: float = 0.99
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    k = self.kernel_size
    s = Conv(1, (k, k), padding=k // 2, use_bias=False, dtype=self.dtype,
             name='conv')(z_pool(x))
    s = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                     epsilon=1e-5, dtype=self.dtype, use_fast_variance=False,
                     name='bn')(s)
    w = nn.sigmoid(s)
    return x * w, w


# Rotations of an NHWC tensor so that the pooled axis is last and the two
# convolved axes follow the authors' NCHW order. Each is its own inverse.
_CW = (0, 3, 2, 1)   # (N, C, W, H): pool over H, convolve over (C, W)
_HC = (0, 1, 3, 2)   # (N, H, C, W): pool over W, convolve over (H, C)


@register_attention('triplet')
class TripletAttention(nn.Module):
  """Three rotated spatial gates (C-W, H-C, H-W), averaged.

  Attributes:
    kernel_size: k of each branch's convolution (7 in the paper).
    no_spatial: drop the plain H-W branch (average of two).
    bn_momentum: Flax BatchNorm momentum (0.99 = PyTorch's 0.01).
    dtype: compute dtype.
  """
  kernel_size: int = 7
  no_spatial: bool = False
  bn_momentum: float = 0.99
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    xc = x.astype(self.dtype)
    gate = lambda name: AttentionGate(self.kernel_size, self.bn_momentum,
                                      dtype=self.dtype, name=name)
    out_cw, w_cw = gate('cw')(xc.transpose(_CW), train=train)
    out_hc, w_hc = gate('hc')(xc.transpose(_HC), train=train)
    branches = [out_cw.transpose(_CW), out_hc.transpose(_HC)]
    self.sow('intermediates', 'channel_width_map', w_cw.transpose(_CW))
    self.sow('intermediates', 'height_channel_map', w_hc.transpose(_HC))
    if not self.no_spatial:
      out_hw, w_hw = gate('hw')(xc, train=train)
      branches.append(out_hw)
      self.sow('intermediates', 'spatial_map', w_hw)
    return (sum(branches) / len(branches)).astype(x.dtype)

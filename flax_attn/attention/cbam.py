"""Convolutional Block Attention Module (CBAM).

Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module",
ECCV 2018.

  F'  = Mc(F) * F,  F'' = Ms(F') * F'                              (Eq. 1)
  Mc(F) = sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F)))               (Eq. 2)
  Ms(F) = sigmoid(f7x7([AvgPool_c(F); MaxPool_c(F)]))              (Eq. 3)

Reading: the MLP is shared, C -> C/r -> C with ReLU, r = 16, no biases (the
equations' W0, W1; timm does the same). The 7x7 convolution is followed by
BatchNorm, as in the authors' released code and timm, before the sigmoid.
No residual is added around the module: the block's own residual does that.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from flax_attn.attention.common import channel_mean_max, reduced_channels
from flax_attn.ops import Conv
from flax_attn.registry import register_attention


class ChannelGate(nn.Module):
  """CBAM channel attention Mc, Eq. 2. Returns the (N,1,1,C) weights."""
  reduction: float = 16
  rd_divisor: int = 1
  use_bias: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    hidden = reduced_channels(channels, self.reduction, self.rd_divisor)
    fc1 = nn.Dense(hidden, use_bias=self.use_bias, dtype=self.dtype,
                   name='fc1')
    fc2 = nn.Dense(channels, use_bias=self.use_bias, dtype=self.dtype,
                   name='fc2')
    mlp = lambda v: fc2(nn.relu(fc1(v)))
    avg = jnp.mean(x, axis=(1, 2), keepdims=True)
    mx = jnp.max(x, axis=(1, 2), keepdims=True)
    return nn.sigmoid(mlp(avg) + mlp(mx))


class SpatialGate(nn.Module):
  """CBAM spatial attention Ms, Eq. 3. Returns the (N,H,W,1) weights."""
  kernel_size: int = 7
  use_norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    k = self.kernel_size
    s = Conv(1, (k, k), padding=k // 2, use_bias=not self.use_norm,
             dtype=self.dtype, name='conv')(channel_mean_max(x))
    if self.use_norm:
      s = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                       epsilon=1e-5, dtype=self.dtype,
                       use_fast_variance=False, name='bn')(s)
    return nn.sigmoid(s)


@register_attention('cbam')
class CBAM(nn.Module):
  """Channel gate then spatial gate, applied in sequence (Eq. 1).

  Attributes:
    reduction: r of the channel MLP.
    rd_divisor: hidden width rounded to this multiple (1 = exact C // r).
    kernel_size: the spatial convolution's size (7 in the paper).
    mlp_bias: biases in the channel MLP.
    spatial_norm: BatchNorm after the spatial convolution.
    dtype: compute dtype.
  """
  reduction: float = 16
  rd_divisor: int = 1
  kernel_size: int = 7
  mlp_bias: bool = False
  spatial_norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    mc = ChannelGate(self.reduction, self.rd_divisor, self.mlp_bias,
                     dtype=self.dtype, name='channel')(x)
    x1 = x * mc
    ms = SpatialGate(self.kernel_size, self.spatial_norm, dtype=self.dtype,
                     name='spatial')(x1, train=train)
    self.sow('intermediates', 'channel_weights', mc)
    self.sow('intermediates', 'spatial_map', ms)
    return (x1 * ms).astype(x.dtype)

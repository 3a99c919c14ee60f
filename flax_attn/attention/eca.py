"""Efficient Channel Attention (ECA).

Wang, Wu, Zhu, Li, Zuo, Hu, "ECA-Net: Efficient Channel Attention for Deep
Convolutional Neural Networks", CVPR 2020.

  y = GAP(x); w = sigmoid(C1D_k(y))             (Eq. 7)
  k = psi(C) = |log2(C)/gamma + b/gamma|_odd    (Eq. 12), gamma = 2, b = 1

The 1-D convolution runs over the channel axis, shared across channels,
zero padded so it keeps C values, without bias (as the paper's code).

timm's `EcaModule` uses the same rule with a floor of 3 taps
(`max(k, 3)`, which differs from Eq. 12 only for C <= 8); its named
models (ecaresnet50d, ...) pass `min_kernel_size=3`.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from flax_attn.attention.common import eca_kernel_size
from flax_attn.registry import register_attention


@register_attention('eca')
class EfficientChannelAttention(nn.Module):
  """ECA: a k-tap 1-D convolution across pooled channels, then sigmoid.

  Attributes:
    kernel_size: fixed k; None adapts it to C by Eq. 12.
    gamma, beta: the constants of Eq. 12.
    min_kernel_size: the adaptive k is at least this (timm: 3).
    dtype: compute dtype.
  """
  kernel_size: Optional[int] = None
  gamma: int = 2
  beta: int = 1
  min_kernel_size: int = 1
  dtype: Any = jnp.float32

  # Our submodule -> timm's (`EcaModule.conv`, a bias-free Conv1d), for
  # flax_attn.weights.
  timm_names = {'conv': 'conv'}

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    channels = x.shape[-1]
    k = self.kernel_size or max(
        eca_kernel_size(channels, self.gamma, self.beta), self.min_kernel_size)
    y = jnp.mean(x, axis=(1, 2))                       # (N, C)
    # Treat channels as a 1-D sequence of one feature: (N, C, 1).
    w = nn.Conv(1, (k,), padding=[((k - 1) // 2, (k - 1) // 2)],
                use_bias=False, dtype=self.dtype, name='conv')(y[..., None])
    w = nn.sigmoid(w[..., 0])[:, None, None, :]
    self.sow('intermediates', 'channel_weights', w)
    return (x * w).astype(x.dtype)

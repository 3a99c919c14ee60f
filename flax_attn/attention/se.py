"""Squeeze-and-Excitation (SE).

Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018.

  z = F_sq(u) = GAP(u)                          (Eq. 2)
  s = F_ex(z) = sigmoid(W2 relu(W1 z))          (Eq. 3), W1: C -> C/r
  x~ = s * u                                    (Eq. 4)

Reading: as in the paper's released models and timm, both FC layers carry a
bias, r = 16, and the hidden width C/r is rounded to a multiple of 8
(`rd_divisor=8`, timm's rule) so `seresnet18/50` match timm's parameter counts;
`rd_divisor=1` gives exactly floor(C/r).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from flax_attn.attention.common import reduced_channels
from flax_attn.registry import register_attention


@register_attention('se')
class SqueezeExcite(nn.Module):
  """SE block: channel gates from globally pooled features.

  Attributes:
    reduction: r, the MLP's reduction ratio.
    rd_divisor: hidden width rounded to this multiple (1 = exact C // r).
    dtype: compute dtype.
  """
  reduction: float = 16
  rd_divisor: int = 8
  dtype: Any = jnp.float32

  # Our submodule -> timm's (`SEModule.fc1/fc2`, 1x1 convs with bias), for
  # flax_attn.weights.
  timm_names = {'fc1': 'fc1', 'fc2': 'fc2'}

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no batch statistics
    channels = x.shape[-1]
    hidden = reduced_channels(channels, self.reduction, self.rd_divisor)
    z = jnp.mean(x, axis=(1, 2), keepdims=True)
    s = nn.Dense(hidden, dtype=self.dtype, name='fc1')(z)
    s = nn.relu(s)
    s = nn.Dense(channels, dtype=self.dtype, name='fc2')(s)
    s = nn.sigmoid(s)
    self.sow('intermediates', 'channel_weights', s)
    return (x * s).astype(x.dtype)

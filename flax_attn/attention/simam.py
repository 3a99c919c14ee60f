"""SimAM: a simple, parameter-free attention module.

Yang, Zhang, Li, Xie, "SimAM: A Simple, Parameter-Free Attention Module for
Convolutional Neural Networks", ICML 2021.

Every neuron t of a channel gets the minimal energy of Eq. (5)

  e_t^* = 4 (sigma^2 + lambda) / ((t - mu)^2 + 2 sigma^2 + 2 lambda),

and the module scales the features by the inverse energy (Sec. 3.2):

  X~ = sigmoid(1 / E) * X,
  1 / e_t^* = (t - mu)^2 / (4 (sigma^2 + lambda)) + 1/2

where mu and sigma^2 are the mean and variance of the channel over its H x W
positions. Reading: as in the authors' code, sigma^2 = sum (t - mu)^2 / n
with n = H W - 1 (the paper's M - 1); for a 1 x 1 map n is taken as 1 so the
module stays finite (the official code divides by zero there).

lambda = 1e-4 is the default (the value of the authors' CIFAR checkpoints,
`param0.0001`); the authors' released ImageNet runs use 0.1
(`--attention_param 0.1` in their README), which the named ImageNet models
`simam_resnetN` adopt.

Placement: the contract's slot (after the block's last norm) when used as
`attn='simam'` on any backbone. The authors put it right after the block's
3x3 convolution, before that conv's BatchNorm; the blocks 'simam_basic' and
'simam_bottleneck' (flax_attn/models/zoo/comparators.py) do that and are what
the named models `simam_resnetN` use.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from flax_attn.registry import register_attention


@register_attention('simam')
class SimAM(nn.Module):
  """Parameter-free 3-D attention from the energy function's closed form.

  Attributes:
    e_lambda: lambda of Eq. (5), a regulariser of the channel variance.
    dtype: compute dtype.
  """
  e_lambda: float = 1e-4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no parameters, no statistics
    h, w = x.shape[1], x.shape[2]
    n = max(h * w - 1, 1)
    xc = x.astype(self.dtype)
    d = jnp.square(xc - jnp.mean(xc, axis=(1, 2), keepdims=True))
    variance = jnp.sum(d, axis=(1, 2), keepdims=True) / n
    inverse_energy = d / (4 * (variance + self.e_lambda)) + 0.5
    weights = nn.sigmoid(inverse_energy)
    self.sow('intermediates', 'weights', weights)
    return (xc * weights).astype(x.dtype)

"""Primitives every module computes with: convolution, BatchNorm arithmetic.

`Conv` is `nn.Conv` and `conv_general_dilated` is `lax.conv_general_dilated`;
`batch_norm_train` is training-mode BatchNorm arithmetic, differentiated by
JAX. So every JAX transformation works through them, on every backend. The
one exception is explicit: with `cpu_kernels` switched on (train.py and
eval.py do on CPU hosts, `config.cpu_kernels`), the convolution and
BatchNorm are computed by flax_attn/cpu_kernels.py instead. This module
imports nothing from flax_attn but that switch, so attention modules and
backbones can both use it.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from flax_attn import cpu_kernels

# The mesh axis a batch is sharded along (flax_attn.train's mesh).
BATCH_AXIS = 'data'


def conv_general_dilated(*args, **kwargs):
  """`lax.conv_general_dilated`; `cpu_kernels.conv_general_dilated` (same
  arguments and results) while the CPU kernels are on."""
  if cpu_kernels.active():
    return cpu_kernels.conv_general_dilated(*args, **kwargs)
  return lax.conv_general_dilated(*args, **kwargs)


# `nn.Conv` computing with `conv_general_dilated`: what every module's
# convolutions use, so that the CPU kernels, when on, reach all of them.
Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)


def batch_moments(xf, axes):
  """Batch statistics over `axes`, two-pass: (first mean, correction, var).

  The one-pass E[x^2] - E[x]^2 (nn.BatchNorm's default "fast variance")
  cancels catastrophically when |mean| >> std: float32 activations of mean
  1e3 and unit variance lose every digit of the variance. Here the first
  pass takes the mean m; the second, over c = x - m, sums c and c^2 (the
  corrected two-pass algorithm of Chan, Golub & LeVeque 1983): var =
  mean(c^2) - mean(c)^2 and the centred activations (x - m) - mean(c) are
  exact to float32 rounding even where m itself is rounded at 1e3's
  precision (6e-5). The mean is m + correction. The second pass costs one
  more read of the activations (benchmarks/bn_variance.py: a ResNet-20
  train step of 64 images on 2 shared CPU cores, +3.5% and +3.7% in two
  A/B runs).
  """
  first = jnp.mean(xf, axes)
  centred = xf - first
  correction = jnp.mean(centred, axes)
  var = jnp.maximum(0.0, jnp.mean(centred * centred, axes)
                    - correction * correction)
  return first, correction, var


def batch_norm_train(x, scale, bias, epsilon):
  """Training-mode BatchNorm over all axes but the last: (y, mean, var).

  Float32 statistics with a two-pass variance (`batch_moments`); y in
  float32 (or wider). `cpu_kernels.batch_norm_train` while the CPU kernels
  are on (same numbers, a closed-form backward pass).
  """
  if cpu_kernels.active():
    return cpu_kernels.batch_norm_train(x, scale, bias, epsilon)
  axes = tuple(range(x.ndim - 1))
  xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  first, correction, var = batch_moments(xf, axes)
  y = ((xf - first) - correction) * (lax.rsqrt(var + epsilon) * scale) + bias
  return y, first + correction, var

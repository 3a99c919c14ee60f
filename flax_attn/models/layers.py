"""Layer factories shared by backbones and heads."""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from flax_attn.ops import Conv

ModuleDef = Any

# torchvision's ResNet init: kaiming normal, fan_out, ReLU gain.
conv_kernel_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def make_conv(dtype: Any) -> Callable[..., nn.Conv]:
  """A bias-free conv factory with torchvision's symmetric padding.

  Flax's 'SAME' pads strided convolutions asymmetrically; PyTorch pads
  k // 2 on each side. Symmetric padding keeps outputs identical to the
  PyTorch models whose names (and weights) we share. The convolution is
  `ops.Conv`: XLA's own, but for faster CPU paths.
  """

  def conv(features: int, kernel_size: Tuple[int, int] = (3, 3),
           strides: Tuple[int, int] = (1, 1), dilation: int = 1,
           **kwargs) -> nn.Conv:
    pad = dilation * (kernel_size[0] // 2)
    kwargs.setdefault('padding', ((pad, pad), (pad, pad)))
    kwargs.setdefault('use_bias', False)
    kwargs.setdefault('kernel_init', conv_kernel_init)
    return Conv(features, kernel_size, strides,
                kernel_dilation=(dilation, dilation), dtype=dtype, **kwargs)

  return conv


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


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _batch_norm_train(x, scale, bias, epsilon):
  """Training-mode BatchNorm over all axes but the last: (y, mean, var).

  Float32 statistics with a two-pass variance (`batch_moments`); the
  backward pass is the closed form below, two passes over the activations
  where autodiff of the forward takes four or five.
  """
  return _batch_norm_train_fwd(x, scale, bias, epsilon)[0]


def _batch_norm_train_fwd(x, scale, bias, epsilon):
  axes = tuple(range(x.ndim - 1))
  xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  first, correction, var = batch_moments(xf, axes)
  rstd = lax.rsqrt(var + epsilon)
  y = ((xf - first) - correction) * (rstd * scale) + bias
  return (y, first + correction, var), (x, first, correction, rstd, scale)


def _batch_norm_train_bwd(epsilon, residuals, cotangents):
  del epsilon
  x, first, correction, rstd, scale = residuals
  dy, dmean, dvar = cotangents
  axes = tuple(range(x.ndim - 1))
  count = x.size // x.shape[-1]
  centred = (x.astype(first.dtype) - first) - correction
  xhat = centred * rstd
  dy = dy.astype(first.dtype)
  dbias = jnp.sum(dy, axes)
  dscale = jnp.sum(dy * xhat, axes)
  # d/dx of the normalised output, plus the (normally zero) cotangents of
  # the returned statistics, in one pass.
  dx = (scale * rstd) * (dy - (dbias + xhat * dscale) / count)
  dx = dx + (dmean + 2.0 * dvar * centred) / count
  return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias


_batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


class BatchNorm(nn.Module):
  """`nn.BatchNorm` over NHWC channels with a hand-written backward pass.

  Same variables (params 'scale', 'bias'; batch_stats 'mean', 'var'), same
  defaults and, to float32 rounding, the same numbers as
  `nn.BatchNorm(axis=-1, use_fast_variance=False)` (both two-pass); only the
  training-mode gradient is computed differently (`_batch_norm_train`), in
  fewer passes over memory. Statistics of a batch sharded by `jit` are global
  (XLA inserts the reductions); for `pmap` / `shard_map` axis names,
  `make_norm` uses `nn.BatchNorm` itself.
  """
  use_running_average: Optional[bool] = None
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Optional[Any] = None
  param_dtype: Any = jnp.float32
  scale_init: Callable = nn.initializers.ones
  bias_init: Callable = nn.initializers.zeros

  @nn.compact
  def __call__(self, x, use_running_average: Optional[bool] = None):
    use_running_average = nn.merge_param(
        'use_running_average', self.use_running_average, use_running_average)
    features = (x.shape[-1],)
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, features,
                            jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, features,
                           jnp.float32)
    scale = self.param('scale', self.scale_init, features, self.param_dtype)
    bias = self.param('bias', self.bias_init, features, self.param_dtype)
    if use_running_average:
      mul = lax.rsqrt(ra_var.value + self.epsilon) * scale
      y = (x - ra_mean.value) * mul + bias
    else:
      y, mean, var = _batch_norm_train(x, scale, bias, self.epsilon)
      if not self.is_initializing():
        ra_mean.value = (self.momentum * ra_mean.value
                         + (1 - self.momentum) * mean)
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    dtype = self.dtype or jnp.result_type(x, scale, bias)
    return jnp.asarray(y, dtype)


def make_norm(train: bool, dtype: Any, momentum: float = 0.9,
              epsilon: float = 1e-5, axis_name=None) -> Callable[..., nn.Module]:
  """BatchNorm factory; PyTorch's defaults (momentum 0.1 == flax 0.9).

  `BatchNorm` above (nn.BatchNorm's variables and numbers, a cheaper
  backward pass); `nn.BatchNorm` when statistics are averaged over a named
  mapped axis. Both compute a two-pass variance (`batch_moments`;
  `use_fast_variance=False`); attention modules' own nn.BatchNorm do too.
  """
  if axis_name is not None:
    return functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=momentum, epsilon=epsilon, dtype=dtype,
                             axis_name=axis_name, use_fast_variance=False)
  return functools.partial(BatchNorm, use_running_average=not train,
                           momentum=momentum, epsilon=epsilon, dtype=dtype)


def global_avg_pool(x: jnp.ndarray) -> jnp.ndarray:
  return jnp.mean(x, axis=(1, 2))

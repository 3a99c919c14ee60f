"""Layer factories shared by backbones and heads."""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

ModuleDef = Any

# torchvision's ResNet init: kaiming normal, fan_out, ReLU gain.
conv_kernel_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


# Bytes of im2col patches one step of the CPU weight-gradient loop builds:
# a few images at a time keeps them in cache (benchmarks/README.md).
_PATCH_BYTES_PER_CHUNK = 4 << 20


def _patches(x, kernel_size, strides, padding):
  """im2col of an NHWC batch: (N, Ho, Wo, kh * kw * C), tap-major."""
  (kh, kw), (sh, sw) = kernel_size, strides
  (pt, pb), (pl, pr) = padding
  n, h, w, c = x.shape
  ho = (h + pt + pb - kh) // sh + 1
  wo = (w + pl + pr - kw) // sw + 1
  if pt or pb or pl or pr:
    x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  taps = [lax.slice(x, (0, i, j, 0),
                    (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c),
                    (1, sh, sw, 1))
          for i in range(kh) for j in range(kw)]
  return taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)


def _kernel_grad_im2col(x, g, kernel_shape, strides, padding):
  """dL/dkernel of a stride/padding NHWC x HWIO convolution, as matmuls.

  sum over images of patches(x)^T @ g, a few images per loop step. XLA:CPU
  computes the same gradient as a convolution whose window is the whole
  output map, several times slower than this (up to 10x at 32 x 32).
  """
  kh, kw, ci, co = kernel_shape
  n = x.shape[0]
  ho, wo = g.shape[1], g.shape[2]
  per_image = ho * wo * kh * kw * ci * x.dtype.itemsize
  chunk = max(1, min(n, _PATCH_BYTES_PER_CHUNK // max(per_image, 1)))
  if kh == kw == 1:  # no patches to build: one matmul over the whole batch
    chunk = n
  while n % chunk:
    chunk -= 1

  # The narrower operand goes first: XLA:CPU's matmul runs this
  # contraction over the long (pixel) axis up to 2x faster that way round.
  g_first = co <= kh * kw * ci

  def chunk_grad(xc, gc):
    p = _patches(xc, (kh, kw), strides, padding).reshape(-1, kh * kw * ci)
    gc = gc.reshape(-1, co)
    lhs, rhs = (gc, p) if g_first else (p, gc)
    return lax.dot_general(lhs, rhs, (((0,), (0,)), ((), ())),
                           preferred_element_type=jnp.float32)

  if chunk == n:
    grad = chunk_grad(x, g)
  else:
    xs = x.reshape((n // chunk, chunk) + x.shape[1:])
    gs = g.reshape((n // chunk, chunk) + g.shape[1:])
    shape = (co, kh * kw * ci) if g_first else (kh * kw * ci, co)
    grad, _ = lax.scan(lambda acc, xg: (acc + chunk_grad(*xg), None),
                       jnp.zeros(shape, jnp.float32), (xs, gs))
  return (grad.T if g_first else grad).reshape(kernel_shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_nhwc(x, kernel, strides, padding):
  return lax.conv_general_dilated(x, kernel, strides, padding,
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _conv_nhwc_fwd(x, kernel, strides, padding):
  return _conv_nhwc(x, kernel, strides, padding), (x, kernel)


def _conv_nhwc_bwd(strides, padding, residuals, g):
  x, kernel = residuals
  xla_conv = functools.partial(lax.conv_general_dilated,
                               window_strides=strides, padding=padding,
                               dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  _, input_vjp = jax.vjp(lambda v: xla_conv(v, kernel), x)
  (dx,) = input_vjp(g)
  _, kernel_vjp = jax.vjp(lambda k: xla_conv(x, k), kernel)

  def xla_kernel_grad(x, g):
    return kernel_vjp(g)[0]

  def cpu_kernel_grad(x, g):
    return _kernel_grad_im2col(x, g, kernel.shape, strides,
                               padding).astype(kernel.dtype)

  dk = lax.platform_dependent(x, g, cpu=cpu_kernel_grad,
                              default=xla_kernel_grad)
  return dx, dk


_conv_nhwc.defvjp(_conv_nhwc_fwd, _conv_nhwc_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated` with a faster kernel gradient on CPU.

  Same arguments and results. A plain (undilated, ungrouped) 2-D NHWC x HWIO
  convolution with explicit padding gets its kernel gradient from
  `_kernel_grad_im2col` when compiled for CPU; on other backends, and for
  every other convolution, this is `lax.conv_general_dilated` itself.
  """
  plain = (lhs.ndim == 4 and feature_group_count == 1
           and batch_group_count == 1 and precision is None
           and preferred_element_type is None
           and not isinstance(padding, str)
           and all(d == 1 for d in (lhs_dilation or (1, 1)))
           and all(d == 1 for d in (rhs_dilation or (1, 1)))
           and _is_nhwc_hwio(dimension_numbers, lhs.ndim))
  if not plain:
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        batch_group_count=batch_group_count, precision=precision,
        preferred_element_type=preferred_element_type)
  return _conv_nhwc(lhs, rhs, tuple(window_strides),
                    tuple(tuple(p) for p in padding))


def _is_nhwc_hwio(dimension_numbers, ndim: int) -> bool:
  nhwc = lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim,
                                    ('NHWC', 'HWIO', 'NHWC'))
  if dimension_numbers is None:
    return False
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    return dimension_numbers == nhwc
  return tuple(dimension_numbers) == ('NHWC', 'HWIO', 'NHWC')


def make_conv(dtype: Any) -> Callable[..., nn.Conv]:
  """A bias-free conv factory with torchvision's symmetric padding.

  Flax's 'SAME' pads strided convolutions asymmetrically; PyTorch pads
  k // 2 on each side. Symmetric padding keeps outputs identical to the
  PyTorch models whose names (and weights) we share. The convolution is
  `conv_general_dilated` above: XLA's own, but for a faster kernel gradient
  on CPU.
  """

  def conv(features: int, kernel_size: Tuple[int, int] = (3, 3),
           strides: Tuple[int, int] = (1, 1), dilation: int = 1,
           **kwargs) -> nn.Conv:
    pad = dilation * (kernel_size[0] // 2)
    kwargs.setdefault('padding', ((pad, pad), (pad, pad)))
    kwargs.setdefault('use_bias', False)
    kwargs.setdefault('kernel_init', conv_kernel_init)
    kwargs.setdefault('conv_general_dilated', conv_general_dilated)
    return nn.Conv(features, kernel_size, strides,
                   kernel_dilation=(dilation, dilation), dtype=dtype,
                   **kwargs)

  return conv


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _batch_norm_train(x, scale, bias, epsilon):
  """Training-mode BatchNorm over all axes but the last: (y, mean, var).

  nn.BatchNorm's forward arithmetic (float32 statistics, E[x^2] - E[x]^2);
  the backward pass is the closed form below, two passes over the
  activations where autodiff of the forward takes four or five.
  """
  return _batch_norm_train_fwd(x, scale, bias, epsilon)[0]


def _batch_norm_train_fwd(x, scale, bias, epsilon):
  axes = tuple(range(x.ndim - 1))
  xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  mean = jnp.mean(xf, axes)
  var = jnp.maximum(0.0, jnp.mean(xf * xf, axes) - mean * mean)
  rstd = lax.rsqrt(var + epsilon)
  y = (xf - mean) * (rstd * scale) + bias
  return (y, mean, var), (x, mean, rstd, scale)


def _batch_norm_train_bwd(epsilon, residuals, cotangents):
  del epsilon
  x, mean, rstd, scale = residuals
  dy, dmean, dvar = cotangents
  axes = tuple(range(x.ndim - 1))
  count = x.size // x.shape[-1]
  centred = x.astype(mean.dtype) - mean
  xhat = centred * rstd
  dy = dy.astype(mean.dtype)
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
  defaults and the same numbers as `nn.BatchNorm(axis=-1)`; only the
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
  mapped axis.
  """
  if axis_name is not None:
    return functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=momentum, epsilon=epsilon, dtype=dtype,
                             axis_name=axis_name)
  return functools.partial(BatchNorm, use_running_average=not train,
                           momentum=momentum, epsilon=epsilon, dtype=dtype)


def global_avg_pool(x: jnp.ndarray) -> jnp.ndarray:
  return jnp.mean(x, axis=(1, 2))

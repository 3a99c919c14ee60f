"""Layer factories shared by backbones and heads."""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from flax_attn import ops
from flax_attn.errors import ConfigError
from flax_attn.ops import Conv

ModuleDef = Any

# torchvision's ResNet init: kaiming normal, fan_out, ReLU gain.
conv_kernel_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def make_conv(dtype: Any) -> Callable[..., nn.Conv]:
  """A bias-free conv factory with torchvision's symmetric padding.

  Flax's 'SAME' pads strided convolutions asymmetrically; PyTorch pads
  k // 2 on each side. Symmetric padding keeps outputs identical to the
  PyTorch models whose names (and weights) we share. The convolution is
  `ops.Conv` (`nn.Conv`; the CPU kernels' while they are on).
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


class BatchNorm(nn.Module):
  """`nn.BatchNorm` over NHWC channels, statistics by `ops.batch_moments`.

  Same variables (params 'scale', 'bias'; batch_stats 'mean', 'var'), same
  defaults and, to float32 rounding, the same numbers as
  `nn.BatchNorm(axis=-1, use_fast_variance=False)` (both two-pass); the
  training-mode arithmetic is `ops.batch_norm_train` (a closed-form
  backward pass while the CPU kernels are on). Statistics of a batch
  sharded by `jit` are global (XLA inserts the reductions); for `pmap` /
  `shard_map` axis names, `make_norm` uses `nn.BatchNorm` itself.
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
      y, mean, var = ops.batch_norm_train(x, scale, bias, self.epsilon)
      if not self.is_initializing():
        ra_mean.value = (self.momentum * ra_mean.value
                         + (1 - self.momentum) * mean)
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    dtype = self.dtype or jnp.result_type(x, scale, bias)
    return jnp.asarray(y, dtype)


def make_norm(train: bool, dtype: Any, momentum: float = 0.9,
              epsilon: float = 1e-5, axis_name=None) -> Callable[..., nn.Module]:
  """BatchNorm factory; PyTorch's defaults (momentum 0.1 == flax 0.9).

  `BatchNorm` above (nn.BatchNorm's variables and numbers); `nn.BatchNorm`
  when statistics are averaged over a named mapped axis. Both compute a
  two-pass variance (`ops.batch_moments`;
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


def start_backbone(backbone: nn.Module, x, train: bool):
  """How every backbone starts: images checked to be NHWC, cast to the
  backbone's dtype, and its conv and norm factories (`make_conv`,
  `make_norm` from its dtype and bn_* fields). Returns (x, conv, norm)."""
  if x.ndim != 4:
    raise ConfigError(f'expected images of shape (batch, height, width, '
                     f'channels), got shape {tuple(x.shape)}')
  conv = make_conv(backbone.dtype)
  norm = make_norm(train, backbone.dtype, backbone.bn_momentum,
                   backbone.bn_epsilon, backbone.bn_axis_name)
  return x.astype(backbone.dtype), conv, norm


def small_stem(x, conv, norm, act, width: int):
  """The CIFAR-sized stem: a 3x3 stride-1 conv ('conv_stem'), its norm
  ('bn_stem') and act. Called from a backbone's compact `__call__`."""
  return act(norm(name='bn_stem')(conv(width, (3, 3), name='conv_stem')(x)))


def with_dtype(factory: Optional[Callable[..., nn.Module]], dtype: Any):
  """An attention factory computing in `dtype` (None stays None)."""
  return None if factory is None else functools.partial(factory, dtype=dtype)

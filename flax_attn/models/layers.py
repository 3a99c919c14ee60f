"""Layer factories shared by backbones and heads."""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Tuple

import flax.linen as nn
import jax.numpy as jnp

ModuleDef = Any

# torchvision's ResNet init: kaiming normal, fan_out, ReLU gain.
conv_kernel_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def make_conv(dtype: Any) -> Callable[..., nn.Conv]:
  """A bias-free conv factory with torchvision's symmetric padding.

  Flax's 'SAME' pads strided convolutions asymmetrically; PyTorch pads
  k // 2 on each side. Symmetric padding keeps outputs identical to the
  PyTorch models whose names (and weights) we share.
  """

  def conv(features: int, kernel_size: Tuple[int, int] = (3, 3),
           strides: Tuple[int, int] = (1, 1), dilation: int = 1,
           **kwargs) -> nn.Conv:
    pad = dilation * (kernel_size[0] // 2)
    kwargs.setdefault('padding', ((pad, pad), (pad, pad)))
    kwargs.setdefault('use_bias', False)
    kwargs.setdefault('kernel_init', conv_kernel_init)
    return nn.Conv(features, kernel_size, strides,
                   kernel_dilation=(dilation, dilation), dtype=dtype,
                   **kwargs)

  return conv


def make_norm(train: bool, dtype: Any, momentum: float = 0.9,
              epsilon: float = 1e-5, axis_name=None) -> Callable[..., nn.Module]:
  """BatchNorm factory; PyTorch's defaults (momentum 0.1 == flax 0.9)."""
  return functools.partial(nn.BatchNorm, use_running_average=not train,
                           momentum=momentum, epsilon=epsilon, dtype=dtype,
                           axis_name=axis_name)


def global_avg_pool(x: jnp.ndarray) -> jnp.ndarray:
  return jnp.mean(x, axis=(1, 2))

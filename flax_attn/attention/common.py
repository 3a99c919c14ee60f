"""Small helpers shared by attention modules."""
from __future__ import annotations

import math

import jax.numpy as jnp


def make_divisible(value: float, divisor: int = 8, round_limit: float = 0.0
                   ) -> int:
  """Rounds `value` to a multiple of `divisor` (timm's `make_divisible`).

  With the default `round_limit=0` this is what timm uses for the reduced
  width of SE / CBAM MLPs, so named models match timm's parameter counts.
  """
  new = max(divisor, int(value + divisor / 2) // divisor * divisor)
  if new < round_limit * value:
    new += divisor
  return new


def reduced_channels(channels: int, reduction: float, divisor: int) -> int:
  """Hidden width C / r of a squeeze MLP, rounded to `divisor` (1 = exact)."""
  if divisor <= 1:
    return max(1, int(channels // reduction))
  return make_divisible(channels / reduction, divisor)


def channel_mean_max(x: jnp.ndarray) -> jnp.ndarray:
  """[mean over C; max over C] as a 2-channel NHWC map (CBAM Eq. 3 input)."""
  return jnp.concatenate([jnp.mean(x, axis=-1, keepdims=True),
                          jnp.max(x, axis=-1, keepdims=True)], axis=-1)


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
  """ECA's adaptive kernel size, Wang et al. 2020 Eq. 12: |log2(C)/g + b/g|_odd."""
  t = int(abs((math.log2(channels) + b) / gamma))
  return t if t % 2 else t + 1

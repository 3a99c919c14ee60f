"""A plain flax.linen ResNet-50, written the usual way, for comparison.

The structure of the flax examples' ImageNet ResNet (flax/examples/imagenet,
models.py): nn.Conv without bias, nn.BatchNorm (momentum 0.9, epsilon 1e-5,
the last BatchNorm of each bottleneck initialised to zero), ReLU, a 7x7/2
stem with 3x3/2 max pooling, bottleneck blocks with the stride on the 3x3
convolution (ResNet v1.5), global average pooling and a dense classifier.
He et al., "Deep Residual Learning for Image Recognition", Table 1
(50-layer column). No library code: benchmarks/tpu_fit.py compiles it with
flax_attn's train step beside flax_attn's own `resnet50`.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp


class Bottleneck(nn.Module):
  filters: int
  strides: int
  conv: Any
  norm: Any

  @nn.compact
  def __call__(self, x):
    residual = x
    y = nn.relu(self.norm()(self.conv(self.filters, (1, 1))(x)))
    y = self.conv(self.filters, (3, 3), self.strides)(y)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.filters * 4, (1, 1))(y)
    y = self.norm(scale_init=nn.initializers.zeros_init())(y)
    if residual.shape != y.shape:
      residual = self.conv(self.filters * 4, (1, 1), self.strides,
                           name='proj_conv')(residual)
      residual = self.norm(name='proj_bn')(residual)
    return nn.relu(residual + y)


class PlainResNet50(nn.Module):
  num_classes: int
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=0.9, epsilon=1e-5, dtype=self.dtype)
    x = conv(64, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name='stem')(x)
    x = nn.relu(norm(name='stem_bn')(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='SAME')
    for stage, blocks in enumerate(self.stage_sizes):
      for block in range(blocks):
        strides = (2, 2) if stage > 0 and block == 0 else (1, 1)
        x = Bottleneck(64 * 2 ** stage, strides, conv, norm)(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)

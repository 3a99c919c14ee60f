"""VGG (Simonyan & Zisserman 2015) in flax.linen, NHWC, torchvision's layout.

`vgg16` / `vgg16_bn` are torchvision's models of those names (configuration
D: 13 3x3 convs with bias in 5 stages of 2, 2, 3, 3, 3, each stage ending in
a 2x2 max-pool; `_bn` adds BatchNorm after every conv; adaptive average
pooling to 7x7 and a 25088 -> 4096 -> 4096 -> classes classifier): 138,357,544
and 138,365,992 parameters at 1000 classes, and their weights import with
`flax_attn.weights.import_torchvision_vgg`. The CIFAR variants
(`vgg16_cifar`, `vgg16_bn_cifar`) keep the 13 convs and end in the usual
512 -> classes linear layer after global average pooling (the 1x1 map of a
32x32 image).

Attention plugs in as in the ResNets, never by import of a particular module:
  * `attn`: a block attention applied at the end of every conv stage (after
    its last conv, norm and ReLU), before the max-pool;
  * `stage_attn`: a per-stage module (MGAN's multi-grained attention) after
    the stages named in `stage_attn_after` (1-based), after `attn`, before
    that stage's max-pool, as the ResNets apply it before the next stage's
    downsampling.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from flax_attn.errors import ConfigError
from flax_attn.models.heads import HEADS, LinearHead, apply_head
from flax_attn.models.layers import start_backbone, with_dtype
from flax_attn.ops import Conv

Factory = Optional[Callable[..., nn.Module]]

# Configuration D of the paper's Table 1 (VGG-16): convs per stage, widths.
VGG16_STAGES = (2, 2, 3, 3, 3)
VGG16_WIDTHS = (64, 128, 256, 512, 512)

# torchvision's conv init (VGG._initialize_weights): kaiming normal, fan_out.
_conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def adaptive_avg_pool_to(x: jnp.ndarray, size: int) -> jnp.ndarray:
  """PyTorch's AdaptiveAvgPool2d(size) of an NHWC map: bin i of an axis of
  length n averages [floor(i n / size), ceil((i + 1) n / size)); a map
  smaller than `size` repeats its pixels (a 1x1 map becomes 49 copies)."""

  def weights(n):
    w = np.zeros((size, n), np.float32)
    for i in range(size):
      start, end = (i * n) // size, -(-((i + 1) * n) // size)
      w[i, start:end] = 1.0 / (end - start)
    return jnp.asarray(w, x.dtype)

  if x.shape[1] == x.shape[2] == size:
    return x
  return jnp.einsum('ih,jw,nhwc->nijc', weights(x.shape[1]),
                    weights(x.shape[2]), x)


@HEADS.register('vgg')
class VGGHead(nn.Module):
  """torchvision's VGG classifier: AdaptiveAvgPool2d(7), flatten in PyTorch's
  channel-major (C, H, W) order, then Linear(25088, 4096), ReLU, Dropout,
  Linear(4096, 4096), ReLU, Dropout, Linear(4096, classes).

  Dropout (torchvision: p = 0.5) is `dropout_rate`, 0 by default because
  flax_attn's train step passes no 'dropout' rng; with a rate above 0,
  training needs `rngs={'dropout': key}`.
  """
  num_classes: int
  hidden: int = 4096
  pool_size: int = 7
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    pooled = adaptive_avg_pool_to(x, self.pool_size)
    # NHWC -> NCHW before flattening: torchvision's weight layout.
    y = jnp.transpose(pooled, (0, 3, 1, 2)).reshape(x.shape[0], -1)
    for i in range(2):
      y = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name=f'fc{i}')(y))
      if self.dropout_rate:
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='fc2')(y)
    return logits, {'pre_logits': y}


class VGG(nn.Module):
  """Plain conv stages (conv, [BN], ReLU) x n, then 2x2 max-pool, then a head.

  Attributes:
    stage_sizes: convs per stage ((2, 2, 3, 3, 3) for VGG-16).
    stage_widths: output channels of each stage's convs.
    num_classes: classifier outputs.
    batch_norm: BatchNorm after every conv (torchvision's `vgg16_bn`).
    attn: block attention factory applied at the end of every stage.
    stage_attn: per-stage attention factory (MGAN) after the stages named
      in `stage_attn_after` (1-based).
    head: classifier head factory (`VGGHead` for the ImageNet models,
      `LinearHead`, GAP + FC, for CIFAR).
    dtype: compute dtype (parameters and BN statistics stay float32).
    bn_momentum, bn_epsilon, bn_axis_name: BatchNorm settings (PyTorch's).
  """
  stage_sizes: Sequence[int] = VGG16_STAGES
  stage_widths: Sequence[int] = VGG16_WIDTHS
  num_classes: int = 1000
  batch_norm: bool = False
  attn: Factory = None
  stage_attn: Factory = None
  stage_attn_after: Sequence[int] = ()
  head: Callable[..., nn.Module] = VGGHead
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  bn_axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool = False, return_features: bool = False):
    if len(self.stage_widths) < len(self.stage_sizes):
      raise ConfigError(f'stage_widths {tuple(self.stage_widths)} need one '
                       f'entry per stage of {tuple(self.stage_sizes)}')
    # VGG's convs have biases and torchvision's init: its own, not `conv`.
    x, _, norm = start_backbone(self, x, train)
    attn = with_dtype(self.attn, self.dtype)
    stage_attn = with_dtype(self.stage_attn, self.dtype)
    features = {}
    for i, num_convs in enumerate(self.stage_sizes):
      stage = f'stage{i + 1}'
      for j in range(num_convs):
        x = Conv(self.stage_widths[i], (3, 3), padding=((1, 1), (1, 1)),
                 kernel_init=_conv_init, dtype=self.dtype,
                 name=f'{stage}_conv{j}')(x)
        if self.batch_norm:
          x = norm(name=f'{stage}_bn{j}')(x)
        x = nn.relu(x)
      if attn is not None:
        x = attn(name=f'{stage}_attn_block')(x, train=train)
      if stage_attn is not None and (i + 1) in self.stage_attn_after:
        x = stage_attn(name=f'{stage}_attn')(x, train=train)
      features[stage] = x
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    return apply_head(self, x, features, train, return_features)


def vgg16_kwargs(batch_norm: bool, cifar: bool = False, **kw):
  """create_model kwargs of VGG-16 (ImageNet head, or CIFAR's 512 -> K)."""
  return dict(model_cls=VGG, batch_norm=batch_norm,
              head=LinearHead if cifar else VGGHead, **kw)

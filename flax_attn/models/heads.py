"""Classifier heads. A head maps the last feature map to logits.

Contract: `head(num_classes=K, dtype=...)` builds the module; calling it as
`head(x, train)` returns `(logits, features)` where `features` is a dict of
named maps (always `pre_logits`; the FCN head adds `cam`).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from flax_attn.models.layers import global_avg_pool
from flax_attn.ops import Conv
from flax_attn.registry import Registry

HEADS = Registry('head')


def apply_head(backbone: nn.Module, x, features, train: bool,
               return_features: bool):
  """How every backbone ends: its `head` (submodule 'head') on the last map,
  float32 logits, and the head's named maps added to `features`. Called from
  the backbone's compact `__call__`; returns logits, or (logits, features)."""
  logits, head_features = backbone.head(num_classes=backbone.num_classes,
                                        dtype=backbone.dtype, name='head')(
                                            x, train=train)
  logits = logits.astype(jnp.float32)
  features.update(head_features)
  if return_features:
    return logits, features
  return logits


@HEADS.register('linear')
class LinearHead(nn.Module):
  """Global average pooling then a fully connected layer (GAP + FC)."""
  num_classes: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    pooled = global_avg_pool(x)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='fc')(pooled)
    return logits, {'pre_logits': pooled}


@HEADS.register('fcn')
class FCNHead(nn.Module):
  """1x1 convolution to the classes, then global average pooling.

  Du & Ma's "FCN-ResNet50" (Sec. 2.1): the pre-pool map is the class
  activation map (CAM), N x H x W x K, returned as `features['cam']`.
  Because pooling and the 1x1 conv commute, its logits equal GAP + FC with
  the same weights; what changes is that the CAM comes for free.
  """
  num_classes: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    cam = Conv(self.num_classes, (1, 1), dtype=self.dtype,
               name='classifier')(x)
    self.sow('intermediates', 'cam', cam)
    return global_avg_pool(cam), {'pre_logits': global_avg_pool(x), 'cam': cam}

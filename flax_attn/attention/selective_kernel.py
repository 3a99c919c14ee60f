"""Selective kernel (SK) convolution.

Li, Wang, Hu, Yang, "Selective Kernel Networks", CVPR 2019.

  Split:  U_m = ReLU(BN(conv_m(X))), one path per kernel size (3x3, 5x5)
  Fuse:   U = sum_m U_m                                              (Eq. 1)
          s = GAP(U)                                                 (Eq. 2)
          z = ReLU(BN(W s)),  W: C -> d,  d = max(C / r, L)          (Eq. 3, 4)
  Select: a_m = softmax_m(A_m z)  (softmax across paths, per channel) (Eq. 5)
          V = sum_m a_m * U_m                                        (Eq. 6)

The 5x5 path is a 3x3 convolution with dilation 2 (Sec. 3.1, "keep_3x3").
Defaults are the paper's SKNet-50 (M = 2, r = 16, L = 32, Sec. 3.2), with
timm's `rd_divisor` standing for L: d = make_divisible(C / r, L), which equals
max(C / r, L) at every width SKNet uses.

Reading (timm's `SelectiveKernel`, whose skresnet weights this layout
matches): W and A_m are bias-free 1x1 convs (here Dense layers on the pooled
vector), A is one layer of M*C outputs split path-major; with `split_input`
the input channels are divided evenly among the paths (timm's
parameter-saving variant used by skresnet18/34), each path still producing
all C outputs.

SK is a convolution, not a gate on a block's output, so it cannot fill the
block-attention slot: `create_model('resnet18', attn='sk')` fails with one
line pointing to the SK blocks. It is used through the blocks 'sk_basic'
(the first 3x3 conv of a basic block, timm's `SelectiveKernelBasic`) and
'sk_bottleneck' (the 3x3 conv of a bottleneck), registered in
flax_attn/models/zoo/comparators.py: `create_model('resnet18',
block='sk_basic')` is skresnet18; named models skresnet18, skresnet34,
skresnext50_32x4d.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from flax_attn.attention.common import make_divisible
from flax_attn.errors import ConfigError
from flax_attn.ops import Conv
from flax_attn.registry import register_attention


def _default_conv(dtype):
  """Bias-free conv with PyTorch's symmetric padding (as models.layers)."""

  def conv(features, kernel_size, strides=(1, 1), dilation=1, **kwargs):
    pad = dilation * (kernel_size[0] // 2)
    return Conv(features, kernel_size, strides,
                padding=((pad, pad), (pad, pad)),
                kernel_dilation=(dilation, dilation), use_bias=False,
                dtype=dtype, **kwargs)

  return conv


class SelectiveKernelConv(nn.Module):
  """SK unit: M conv-BN-ReLU paths fused by softmax attention over paths.

  Attributes:
    features: output channels C.
    strides: stride of every path.
    kernel_sizes: one path per size (3, 5) in the paper.
    keep_3x3: realise a k x k path as a 3x3 conv with dilation (k - 1) / 2.
    split_input: give each path an equal share of the input channels.
    groups: grouped convolution in each path (G = 32 in SKNet-50).
    rd_ratio: 1 / r, the fuse layer's reduction.
    rd_divisor: d rounded to a multiple of this, at least this (L).
    conv, norm, act: layer factories (a block passes its own; None builds
      bias-free convs and BatchNorm with PyTorch's constants).
    dtype: compute dtype.
  """
  features: int
  strides: int = 1
  kernel_sizes: Sequence[int] = (3, 5)
  keep_3x3: bool = True
  split_input: bool = False
  groups: int = 1
  rd_ratio: float = 1 / 16
  rd_divisor: int = 32
  conv: Optional[Callable[..., nn.Module]] = None
  norm: Optional[Callable[..., nn.Module]] = None
  act: Callable = nn.relu
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = self.conv or _default_conv(self.dtype)
    norm = self.norm or functools.partial(
        nn.BatchNorm, use_running_average=not train, momentum=0.9,
        epsilon=1e-5, dtype=self.dtype, use_fast_variance=False)
    for k in self.kernel_sizes:
      if k < 3 or k % 2 == 0:
        raise ConfigError(f'SK kernel size {k} must be odd and >= 3')
    num_paths = len(self.kernel_sizes)
    if self.keep_3x3:
      kernels = [3] * num_paths
      dilations = [(k - 1) // 2 for k in self.kernel_sizes]
    else:
      kernels, dilations = list(self.kernel_sizes), [1] * num_paths
    if self.split_input and x.shape[-1] % num_paths:
      raise ConfigError(f'SK split_input: {x.shape[-1]} input channels do not '
                        f'split into {num_paths} paths')
    inputs = (jnp.split(x, num_paths, axis=-1) if self.split_input
              else [x] * num_paths)

    paths = []
    for i, (inp, k, d) in enumerate(zip(inputs, kernels, dilations)):
      u = conv(self.features, (k, k), (self.strides, self.strides),
               dilation=d, feature_group_count=self.groups,
               name=f'path{i}_conv')(inp)
      paths.append(self.act(norm(name=f'path{i}_bn')(u)))
    stacked = jnp.stack(paths, axis=1)                 # (N, M, H, W, C)

    hidden = make_divisible(self.features * self.rd_ratio, self.rd_divisor,
                            round_limit=0.9)
    s = jnp.mean(jnp.sum(stacked, axis=1), axis=(1, 2))   # Eq. 1-2: (N, C)
    z = nn.Dense(hidden, use_bias=False, dtype=self.dtype,
                 name='fc_reduce')(s)
    z = self.act(norm(name='attn_bn')(z))
    logits = nn.Dense(self.features * num_paths, use_bias=False,
                      dtype=self.dtype, name='fc_select')(z)
    logits = logits.reshape(-1, num_paths, self.features)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=1)
    weights = weights.astype(stacked.dtype)
    self.sow('intermediates', 'path_weights', weights)
    return jnp.sum(stacked * weights[:, :, None, None, :], axis=1)


@register_attention('sk')
class SelectiveKernel(nn.Module):
  """Registry entry for SK; it names where SK goes and is not itself a gate.

  SK replaces a block's 3x3 convolution (see the module docstring), so the
  block-attention slot cannot hold it: `get_attention('sk')` (hence
  `create_model(..., attn='sk')`) raises `NotABlockAttentionError` with the
  one line below, and calling this module directly raises it as ValueError.
  """
  dtype: Any = jnp.float32

  # Read by `flax_attn.attention.get_attention` (a class attribute, not a
  # dataclass field).
  not_a_block_attention = (
      "attention 'sk' replaces a block's 3x3 convolution and cannot gate a "
      "block output; use block='sk_basic' or 'sk_bottleneck' (e.g. "
      "create_model('resnet18', block='sk_basic')) or the models "
      "skresnet18, skresnet34, skresnext50_32x4d")

  @nn.compact
  def __call__(self, x, train: bool = False):
    raise ConfigError(self.not_a_block_attention)

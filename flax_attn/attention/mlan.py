"""MLAN's attention modules: shared mask (SMA), SMAv2 and full mask (FMA).

Wang, Qin, Zhang, Wei, Gao, "MLAN: Multi-Level Attention Network",
IEEE Access 10, 2022, Sec. III-A and IV-A3/5.

Shared mask attention, SMA (Fig. 2):
  M_s^(i) = sigmoid(Conv^(i)(x)) in R^{1 x H x W},  i = 1..N       (Eq. 1)
  M_mean  = (1/N) sum_i M_s^(i)                                    (Eq. 2)
  O_SMA   = M_mean . x   (one mask broadcast over the C channels)  (Eq. 3)
SMAv2 (Fig. 6): x is first averaged over its channels, the N convolutions
act on that single channel.
FMA (Sec. IV-A3, "full mask"): each convolution maps C -> C, so the averaged
mask has the input's full C x H x W shape.

Readings taken:
  * Conv^(i) is a 3x3 convolution C -> 1 with a bias (PyTorch's default);
    N = 3 (Sec. IV: "N = 3 for each attention generation"). The N parallel
    convolutions are computed as one C -> N convolution, which has exactly
    their parameters (N (9C + 1)). Table 4's totals confirm C -> 1 3x3.
  * FMA uses N = 3 masks too: with N = 1 the MLAN-FMA totals of Table 4/12
    would be a third of the paper's, with N = 3 they are within 6%.
  * No normalisation inside the modules (the equations have none).
All three keep the attention contract, so 'sma', 'sma_v2' and 'fma' also
work as plain block attention in any backbone.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from flax_attn.ops import Conv
from flax_attn.registry import register_attention


def _mask_conv(features: int, kernel_size: int, use_bias: bool, dtype: Any,
               name: str) -> nn.Conv:
  pad = kernel_size // 2
  return Conv(features, (kernel_size, kernel_size),
              padding=((pad, pad), (pad, pad)), use_bias=use_bias,
              dtype=dtype, name=name)


@register_attention('sma')
class SharedMaskAttention(nn.Module):
  """SMA: N single-channel masks from C channels, averaged (Eq. 1-3).

  Attributes:
    num_masks: N, the parallel shared masks averaged in Eq. 2.
    kernel_size: side of each mask convolution (3).
    use_bias: biases in the mask convolutions.
    dtype: compute dtype.
  """
  num_masks: int = 3
  kernel_size: int = 3
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no batch statistics
    logits = _mask_conv(self.num_masks, self.kernel_size, self.use_bias,
                        self.dtype, 'mask_convs')(x)           # Eq. 1, N maps
    mask = jnp.mean(nn.sigmoid(logits), axis=-1, keepdims=True)  # Eq. 2
    self.sow('intermediates', 'mask', mask)
    return (x * mask).astype(x.dtype)                            # Eq. 3


@register_attention('sma_v2')
class SharedMaskAttentionV2(nn.Module):
  """SMAv2 (Fig. 6): channel mean first, then N 1 -> 1 mask convolutions.

  Attributes:
    num_masks: N.
    kernel_size: side of each mask convolution (3).
    use_bias: biases in the mask convolutions.
    dtype: compute dtype.
  """
  num_masks: int = 3
  kernel_size: int = 3
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    squeezed = jnp.mean(x, axis=-1, keepdims=True)
    logits = _mask_conv(self.num_masks, self.kernel_size, self.use_bias,
                        self.dtype, 'mask_convs')(squeezed)
    mask = jnp.mean(nn.sigmoid(logits), axis=-1, keepdims=True)
    self.sow('intermediates', 'mask', mask)
    return (x * mask).astype(x.dtype)


@register_attention('fma')
class FullMaskAttention(nn.Module):
  """FMA: N full C x H x W masks (convolutions C -> C), averaged.

  The N convolutions are one C -> N*C convolution; output channel
  `i * C + c` is channel c of mask i.

  Attributes:
    num_masks: N.
    kernel_size: side of each mask convolution (3).
    use_bias: biases in the mask convolutions.
    dtype: compute dtype.
  """
  num_masks: int = 3
  kernel_size: int = 3
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    channels = x.shape[-1]
    logits = _mask_conv(self.num_masks * channels, self.kernel_size,
                        self.use_bias, self.dtype, 'mask_convs')(x)
    logits = logits.reshape(*logits.shape[:-1], self.num_masks, channels)
    mask = jnp.mean(nn.sigmoid(logits), axis=-2)
    self.sow('intermediates', 'mask', mask)
    return (x * mask).astype(x.dtype)

"""Du & Ma's attention types for fine-grained classification: CA, SA, CSCA.

Du, Ma, "Multi-Attention Mechanism Fusion for Fine-Grained Image
Classification", Sec. 2.1: channel attention (CA), spatial
attention (SA) and channel-spatial "confusion" attention (CSCA), each
embedded in the residual units of ResNet-50 (CA-/SA-/CSCA-ResNet50).

The paper gives no equations. Readings taken:
  * CA is CBAM's channel attention (Woo et al. 2018, Eq. 2):
      Mc(F) = sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F))),  (N, 1, 1, C)
    shared MLP C -> C/r -> C with ReLU, r = 16, no biases; output Mc * F.
  * SA is CBAM's spatial attention (Woo et al. 2018, Eq. 3):
      Ms(F) = sigmoid(BN(f7x7([AvgPool_c(F); MaxPool_c(F)]))),  (N, H, W, 1)
    with the BatchNorm of CBAM's released code (`spatial_norm=False` drops
    it); output Ms * F.
  * CSCA computes Mc and Ms in parallel from the same input F and combines
    them into one C x H x W mask, the outer product
      M[h, w, c] = Ms[h, w] * Mc[c],   output M * F.
    Unlike CBAM, Ms is not computed from Mc * F, so neither branch waits for
    the other; the multiplication with F happens once, with the full mask.
All three are block attention (after the last norm of a residual unit,
before the residual addition) and reuse CBAM's gates, so their parameters
are CBAM's: CA 2 C^2 / r, SA 2 * 49 + 2 (conv + BN), CSCA both.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from flax_attn.attention.cbam import ChannelGate, SpatialGate
from flax_attn.registry import register_attention


@register_attention('ca')
class ChannelAttention(nn.Module):
  """CA: channel weights from avg- and max-pooled features (CBAM Eq. 2).

  Attributes:
    reduction: r of the shared MLP.
    rd_divisor: hidden width rounded to this multiple (1 = exact C // r).
    mlp_bias: biases in the MLP.
    dtype: compute dtype.
  """
  reduction: float = 16
  rd_divisor: int = 1
  mlp_bias: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    mc = ChannelGate(self.reduction, self.rd_divisor, self.mlp_bias,
                     dtype=self.dtype, name='channel')(x)
    self.sow('intermediates', 'channel_weights', mc)
    return (x * mc).astype(x.dtype)


@register_attention('sa')
class SpatialAttention(nn.Module):
  """SA: one H x W map from channel mean and max, 7x7 conv (CBAM Eq. 3).

  Attributes:
    kernel_size: side of the spatial convolution.
    spatial_norm: BatchNorm after the convolution.
    dtype: compute dtype.
  """
  kernel_size: int = 7
  spatial_norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    ms = SpatialGate(self.kernel_size, self.spatial_norm, dtype=self.dtype,
                     name='spatial')(x, train=train)
    self.sow('intermediates', 'spatial_map', ms)
    return (x * ms).astype(x.dtype)


@register_attention('csca')
class ChannelSpatialConfusionAttention(nn.Module):
  """CSCA: channel and spatial weights from the same input, one C x H x W mask.

  Attributes:
    reduction: r of the channel MLP.
    rd_divisor: hidden width rounded to this multiple (1 = exact C // r).
    mlp_bias: biases in the channel MLP.
    kernel_size: side of the spatial convolution.
    spatial_norm: BatchNorm after the spatial convolution.
    dtype: compute dtype.
  """
  reduction: float = 16
  rd_divisor: int = 1
  mlp_bias: bool = False
  kernel_size: int = 7
  spatial_norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    mc = ChannelGate(self.reduction, self.rd_divisor, self.mlp_bias,
                     dtype=self.dtype, name='channel')(x)     # (N, 1, 1, C)
    ms = SpatialGate(self.kernel_size, self.spatial_norm, dtype=self.dtype,
                     name='spatial')(x, train=train)          # (N, H, W, 1)
    mask = ms * mc                        # outer product, (N, H, W, C)
    self.sow('intermediates', 'channel_weights', mc)
    self.sow('intermediates', 'spatial_map', ms)
    return (x * mask).astype(x.dtype)

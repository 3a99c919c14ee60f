"""Hierarchical Global Attention (HGA).

Cao, Gao, Choi, Duan, "Learning a Hierarchical Global Attention for Image
Classification", Future Internet 12(11):178, 2020.

Three parts, no biases anywhere (Sec. 4):
  MFE  [F1, F3, F5, F7] = [F_in (x) f_1, ..., F_in (x) f_7]      (Eq. 1)
       F_MFE = Concat(F1, F3, F5, F7)                            (Eq. 2)
  HAP  [F_G1, F_G2, F_G4] = GAP_1/2/4(F_MFE), flattened, concat  (Eq. 3)
  EE   F_suppress = FC_{21C -> C/4}(F_G)                         (Eq. 4)
       F_excitation = FC_{C/4 -> C}(ReLU(F_suppress))            (Eq. 5)
       F_attention = sigmoid(F_excitation)                       (Eq. 6)
       F_out = F_in (.) F_attention, channel-wise                (Eq. 7)
  Param_HGA = (1 + 9 + 25 + 49) C + (11/2) C^2                   (Eq. 12)

Readings taken:
  * Each MFE branch is a grouped k x k conv C -> C/4 with C/4 groups (4 input
    channels per output channel, k*k*C weights), so the concatenation has C
    channels. This is the only reading consistent with Eq. 4 (21C inputs to
    the first FC) and Eq. 12; the text's "4C" contradicts both. Eq. 6 is read
    as sigma(F_excitation) and Eq. 7 as F_in (.) F_attention.
  * HAP pools with PyTorch's `adaptive_avg_pool2d` bin edges
    ([floor(i H / n), ceil((i + 1) H / n))), so 4 x 4 bins work on 7 x 7 maps.
    The pooled maps are flattened bin-major, channel-minor ((i, j, c) order)
    and concatenated 1x1, 2x2, 4x4: 21C values.
  * HGA(a, b, c) of Table 1 (projected form, `reduced_width=b=32`): a
    bias-free 1x1 conv a -> b, the HGA above computed on that b-channel map
    up to its b excitation logits (Eq. 5), a bias-free FC b -> c, sigmoid,
    multiplied with the block's c-channel input. 64c + 8320 parameters per
    block at b = 32. The projection exists "for dimension reduction"
    (Sec. 5.1), so a map with C <= b gets the plain HGA on its own C channels.
  * Ablations (Table 5): without MFE the pooled input is F_in (or its
    projection); without HAP only the 1x1 bin is pooled (C values); without EE
    a single FC maps the pooled vector to the C logits. All three off is the
    paper's vanilla row: use no attention at all. Table 6's kernel subsets
    keep each remaining branch as it is in the full module (C -> C/4), so F_MFE
    has len(kernel_sizes) * C / 4 channels and the first FC's input shrinks
    accordingly.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from flax_attn.errors import ConfigError
from flax_attn.ops import Conv
from flax_attn.registry import register_attention

# Channels each MFE output channel reads (the C/4 groups of C inputs).
MFE_GROUP_WIDTH = 4


def adaptive_pool_matrix(size: int, bins: int) -> np.ndarray:
  """(bins, size) averaging weights with PyTorch's adaptive-pool bin edges."""
  weights = np.zeros((bins, size), np.float32)
  for i in range(bins):
    start = (i * size) // bins
    end = -(-((i + 1) * size) // bins)  # ceil
    weights[i, start:end] = 1.0 / (end - start)
  return weights


def adaptive_avg_pool(x: jnp.ndarray, bins: int) -> jnp.ndarray:
  """Adaptive average pooling of an NHWC map to (N, bins, bins, C)."""
  if bins == 1:
    return jnp.mean(x, axis=(1, 2), keepdims=True)
  rows = jnp.asarray(adaptive_pool_matrix(x.shape[1], bins), x.dtype)
  cols = jnp.asarray(adaptive_pool_matrix(x.shape[2], bins), x.dtype)
  return jnp.einsum('ih,jw,nhwc->nijc', rows, cols, x)


def hierarchical_average_pool(x: jnp.ndarray, bins: Sequence[int]
                              ) -> jnp.ndarray:
  """HAP, Eq. 3: bin grids pooled, flattened, concatenated: (N, sum b^2 C)."""
  n = x.shape[0]
  return jnp.concatenate(
      [adaptive_avg_pool(x, b).reshape(n, -1) for b in bins], axis=-1)


class MultiScaleFeatureExploitation(nn.Module):
  """MFE, Eq. 1-2: grouped k x k convs C -> C/4 (C/4 groups), concatenated."""
  kernel_sizes: Sequence[int] = (1, 3, 5, 7)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    if channels % MFE_GROUP_WIDTH:
      raise ConfigError(f'HGA: MFE needs channels divisible by '
                        f'{MFE_GROUP_WIDTH}, got {channels}')
    branch_channels = channels // MFE_GROUP_WIDTH
    branches = []
    for k in self.kernel_sizes:
      branches.append(Conv(branch_channels, (k, k), padding=k // 2,
                           feature_group_count=branch_channels,
                           use_bias=False, dtype=self.dtype,
                           name=f'conv{k}x{k}')(x))
    return jnp.concatenate(branches, axis=-1)


class ExcitationExploration(nn.Module):
  """EE, Eq. 4-5: FC -> hidden, ReLU, FC -> features (bias-free); logits.

  With `use_hidden=False` (Table 5, "without EE") a single FC.
  """
  features: int
  hidden: int
  use_hidden: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pooled):
    if not self.use_hidden:
      return nn.Dense(self.features, use_bias=False, dtype=self.dtype,
                      name='fc')(pooled)
    suppressed = nn.Dense(self.hidden, use_bias=False, dtype=self.dtype,
                          name='suppress')(pooled)                   # Eq. 4
    return nn.Dense(self.features, use_bias=False, dtype=self.dtype,
                    name='excite')(nn.relu(suppressed))              # Eq. 5


@register_attention('hga')
class HierarchicalGlobalAttention(nn.Module):
  """HGA: MFE -> HAP -> EE channel gates (Eq. 1-7), Table 1's HGA(a, b, c).

  Attributes:
    kernel_sizes: MFE branch kernels (Table 6 ablates subsets).
    pool_bins: HAP grid sizes (1, 2, 4 -> 21 values per channel).
    use_mfe, use_hap, use_ee: Table 5 switches (see module docstring).
    reduction: EE's squeeze ratio (hidden = C / 4).
    reduced_width: b of HGA(a, b, c); None for the plain module on all C
      channels (Eq. 12's parameter count). Maps with C <= b use the plain
      module too.
    dtype: compute dtype.
  """
  kernel_sizes: Sequence[int] = (1, 3, 5, 7)
  pool_bins: Sequence[int] = (1, 2, 4)
  use_mfe: bool = True
  use_hap: bool = True
  use_ee: bool = True
  reduction: int = 4
  reduced_width: Optional[int] = 32
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no batch statistics
    self._check()
    channels = x.shape[-1]
    projected = self.reduced_width is not None and channels > self.reduced_width
    inner = x
    if projected:  # Table 1: shrink a -> b before the attention.
      inner = Conv(self.reduced_width, (1, 1), use_bias=False,
                   dtype=self.dtype, name='reduce')(x)
    width = inner.shape[-1]
    if self.use_mfe:
      inner = MultiScaleFeatureExploitation(self.kernel_sizes, self.dtype,
                                            name='mfe')(inner)
    pooled = hierarchical_average_pool(
        inner, self.pool_bins if self.use_hap else (1,))
    logits = ExcitationExploration(width, max(1, width // self.reduction),
                                   self.use_ee, self.dtype, name='ee')(pooled)
    if projected:  # Table 1: restore b -> c.
      logits = nn.Dense(channels, use_bias=False, dtype=self.dtype,
                        name='restore')(logits)
    weights = nn.sigmoid(logits)[:, None, None, :]                   # Eq. 6
    self.sow('intermediates', 'channel_weights', weights)
    return (x * weights).astype(x.dtype)                             # Eq. 7

  def _check(self):
    if not self.kernel_sizes or any(
        k < 1 or k % 2 == 0 for k in self.kernel_sizes):
      raise ConfigError(f'HGA: kernel_sizes must be odd positive integers, got '
                        f'{tuple(self.kernel_sizes)}; e.g. (1, 3, 5, 7)')
    if not self.pool_bins or any(b < 1 for b in self.pool_bins):
      raise ConfigError(f'HGA: pool_bins must be positive integers, got '
                        f'{tuple(self.pool_bins)}; e.g. (1, 2, 4)')
    if (self.use_mfe and self.reduced_width is not None
        and self.reduced_width % MFE_GROUP_WIDTH):
      raise ConfigError(f'HGA: reduced_width must be a multiple of '
                        f'{MFE_GROUP_WIDTH} or None, got {self.reduced_width}')

"""Multi-grained attention (MGAN): MSA, MCA and their fusion MA.

Wu & Tanprasert, "A Multi-Grained Attention Residual Network for Image
Classification", ECTI-CIT 17(2), 2023 (seed 000).

  MSA(I, K), Alg. 1 / Eq. 5:
    S = Conv2D(I, K)                      (depthwise K x K, W and b of Eq. 5)
    S_max, S_avg = max / mean of S across channels (two H x W maps)
    M = sigmoid(Conv2D(concat(S_max, S_avg), 1));  output M * I
  MCA(X), Alg. 2 / Eq. 6:
    Cw = sigmoid(MLP(maxpool_HW(X)) + MLP(avgpool_HW(X)))   (shared MLP,
         C -> C/16 -> C, ReLU; w0, w1 without biases as written)
    F_G = Conv1x1(X);  output Cw * F_G
  MA, Alg. 3 steps 1-8:
    S_i = MSA(I, K_i), i = 1..3;  F_i = Cw(S_i) = MCA(S_i);
    F_cat = concat(F_1, F_2, F_3)  (3C);  output Conv1x1(F_cat) -> C.
  Steps 9-12 (concat with Conv1x1 of the features, conv, max-pool, FC,
  softmax) are the classifier head `HEADS['mgan']` in models/zoo/mgan.py.

Readings taken (SPEC.md, seed 000):
  * MSA's first conv is depthwise K x K (C K^2 weights + C biases, Eq. 5
    writes W_i and b_i): a full C -> C conv would add millions of parameters
    at K = 7, against the paper's +0.01M. "Conv2D(., 1)" in Alg. 1 step 5 is
    read as a 1 x 1 conv 2 -> 1 (Alg. 1 step 2 uses the same Conv2D(input,
    kernel) signature); `spatial_kernel_size` changes it.
  * "F_i = Cw(S_i)" (Alg. 3 steps 5-7) applies the channel attention of
    Alg. 2 to each MSA branch, with one shared MCA (one MLP, one Conv1x1):
    the text says the spatial attention output "is input to the channel
    attention unit in the MCA structure".
  * MA ends with a 1 x 1 conv 3C -> C (with bias) so the backbone continues
    with C channels; no residual is added around the module.
  * All three MSA branches run in every MA (K1, K2, K3 = 3, 5, 7; Table 4's
    S-para1..4 change the set). Table 1's labels "Attention(K_i=3/5/7)" after
    conv2_x / conv3_x / conv4_x are read as naming that module, not as one
    kernel per stage.
  * The module sits after stages conv2_x, conv3_x, conv4_x (Table 1): use it
    as ResNet's `stage_attn` with `stage_attn_after=(1, 2, 3)`.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from flax_attn.ops import Conv
from flax_attn.registry import register_attention


class MultiGrainSpatialAttention(nn.Module):
  """MSA, Alg. 1: depthwise K x K conv, channel max/mean, conv, sigmoid.

  Returns `(M * I, M)` with the (N, H, W, 1) spatial map M.
  """
  kernel_size: int = 3
  spatial_kernel_size: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    k, sk = self.kernel_size, self.spatial_kernel_size
    s = Conv(channels, (k, k), padding=k // 2,
             feature_group_count=channels, dtype=self.dtype,
             name='depthwise')(x)                                    # step 2
    pooled = jnp.concatenate([jnp.max(s, axis=-1, keepdims=True),    # step 3
                              jnp.mean(s, axis=-1, keepdims=True)],  # step 4
                             axis=-1)
    mask = nn.sigmoid(Conv(1, (sk, sk), padding=sk // 2, dtype=self.dtype,
                           name='mask_conv')(pooled))                # step 5
    return x * mask, mask                                            # step 6


class MultiGrainChannelAttention(nn.Module):
  """MCA, Alg. 2 / Eq. 6: Cw * Conv1x1(X). Returns `(output, Cw)`."""
  reduction: float = 16
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    hidden = max(1, int(channels // self.reduction))
    w0 = nn.Dense(hidden, use_bias=False, dtype=self.dtype, name='w0')
    w1 = nn.Dense(channels, use_bias=False, dtype=self.dtype, name='w1')
    mlp = lambda v: w1(nn.relu(w0(v)))                             # steps 3-4
    weights = nn.sigmoid(mlp(jnp.max(x, axis=(1, 2), keepdims=True)) +
                         mlp(jnp.mean(x, axis=(1, 2), keepdims=True)))  # Eq. 6
    global_features = Conv(channels, (1, 1), dtype=self.dtype,
                           name='global_conv')(x)                    # step 6
    return weights * global_features, weights                        # step 7


class MultiGrainedFeatures(nn.Module):
  """Alg. 3 steps 1-8: F_cat = concat_i MCA(MSA(I, K_i)), len(K) C channels."""
  kernel_sizes: Sequence[int] = (3, 5, 7)
  reduction: float = 16
  spatial_kernel_size: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if not self.kernel_sizes or any(
        k < 1 or k % 2 == 0 for k in self.kernel_sizes):
      raise ValueError(f'MGAN: kernel_sizes must be odd positive integers, '
                       f'got {tuple(self.kernel_sizes)}; e.g. (3, 5, 7)')
    channel_attention = MultiGrainChannelAttention(self.reduction, self.dtype,
                                                   name='mca')
    branches = []
    for i, k in enumerate(self.kernel_sizes):
      spatial, mask = MultiGrainSpatialAttention(
          k, self.spatial_kernel_size, self.dtype, name=f'msa{i}')(x)
      branch, weights = channel_attention(spatial)
      self.sow('intermediates', f'spatial_map{i}', mask)
      self.sow('intermediates', f'channel_weights{i}', weights)
      branches.append(branch)
    return jnp.concatenate(branches, axis=-1)


@register_attention('mgan')
class MultiGrainedAttention(nn.Module):
  """MA (Alg. 3 steps 1-8) as a per-stage attention: N,H,W,C -> N,H,W,C.

  Attributes:
    kernel_sizes: K1, K2, K3 of the MSA branches (Table 4 S-para1..4).
    reduction: r of MCA's shared MLP.
    spatial_kernel_size: kernel of MSA's 2 -> 1 conv (Alg. 1 step 5).
    dtype: compute dtype.
  """
  kernel_sizes: Sequence[int] = (3, 5, 7)
  reduction: float = 16
  spatial_kernel_size: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no batch statistics
    fused = MultiGrainedFeatures(self.kernel_sizes, self.reduction,
                                 self.spatial_kernel_size, self.dtype,
                                 name='features')(x)
    out = Conv(x.shape[-1], (1, 1), dtype=self.dtype, name='fuse')(fused)
    return out.astype(x.dtype)

"""Multi-grained attention (MGAN): MSA, MCA and their fusion MA.

Wu & Tanprasert, "A Multi-Grained Attention Residual Network for Image
Classification", ECTI-CIT 17(2), 2023.

  MSA(I, K), Alg. 1 / Eq. 5:
    S = Conv2D(I, K)                      (depthwise K x K, W and b of Eq. 5)
    S_max, S_avg = max / mean of S across channels (two H x W maps)
    M = sigmoid(Conv2D(concat(S_max, S_avg), 1));  output M * I
  MCA(X), Alg. 2 / Eq. 6:
    Cw = sigmoid(MLP(maxpool_HW(X)) + MLP(avgpool_HW(X)))   (shared MLP
         w1(w0(.)), C -> C/16 -> C; w0, w1 without biases as written)
    F_G = Conv1x1(X);  output F_channel = Cw * F_G          (steps 6-7)
  MA, Alg. 3 steps 1-8: three MSA branches with K1, K2, K3, channel
    attention on each, concatenated (3C), then a 1x1 conv back to C.
  Steps 9-12 (concat with Conv1x1 of the features, conv, max-pool, FC,
  softmax) are the classifier head `HEADS['mgan']` in models/zoo/mgan.py.

Two readings of how Alg. 3 feeds MCA (`channel_input`):
  * 'branch' (default, our first reading): F_i = MCA(S_i), the channel
    attention of Alg. 2 on each MSA output S_i = M_i * I, one shared MCA
    (one MLP, one Conv1x1); the text says the spatial attention output "is
    input to the channel attention unit in the MCA structure".
  * 'input' (Alg. 2/3 read literally): Alg. 3 step 4 computes MCA once,
    from I: Cw from I's pooled vectors and F_G = Conv1x1(I) (Alg. 2 step 6
    applies the conv to I), F_channel = Cw * F_G; steps 5-7 "F_i = Cw(S_i)"
    gate it with branch i's spatial map: F_i = M_i * F_channel.
  Both have the same parameters (one MLP, one Conv1x1), so the counts of
  Tables 2, 3 and 5 cannot tell them apart.
  `mlp_relu=False` drops the MLP's ReLU: Alg. 2 steps 3-4 write w1(w0(.))
  with none (CBAM, which Eq. 6 follows, has one; a parameter-free change).

Other readings taken:
  * MSA's first conv is depthwise K x K (C K^2 weights + C biases, Eq. 5
    writes W_i and b_i): a full C -> C conv would add millions of parameters
    at K = 7. "Conv2D(., 1)" in Alg. 1 step 5 is a 1 x 1 conv 2 -> 1
    (`spatial_kernel_size` changes it).
  * The branches are combined (`combine`) by concatenation and a 1 x 1 conv
    len(K) C -> C with bias ('conv', default), so the backbone continues
    with C channels, or by their mean ('mean', no parameters). No residual
    is added around the module.
  * The module sits after stages conv2_x, conv3_x, conv4_x (Table 1): use it
    as ResNet's `stage_attn` with `stage_attn_after=(1, 2, 3)`. Table 1's
    "Attention(K_i=3 / 5 / 7)" labels are read as naming one module with
    all three kernels, as Alg. 3 steps 1-3 run them (Sec. 4.4's "In Table
    1, we set the three convolutional kernel sizes ... K1 = 3, K2 = 5, and
    K3 = 7" fits either reading); the other, one kernel per stage, is ResNet's
    `stage_attn_per_stage=({'kernel_sizes': (3,)}, {'kernel_sizes': (5,)},
    {'kernel_sizes': (7,)})` (models/zoo/mgan.py `MGAN_READINGS`).

Parameter counts (python -m flax_attn.report --readings): no reading
reproduces both published figures. Any reading with Alg. 2's C -> C
Conv1x1 adds at least 0.086M to ResNet-18 (sum of C^2 over stages 64, 128,
256), against Table 2's +0.01M (11.69M -> 11.70M); MGAN-Res2Net-50's 28.6M
(Table 3) needs about 2.1 sum(C^2) over stages 256, 512, 1024, which the
one-kernel-per-stage reading gives (28.69M). The default ('branch', three
kernels, 'conv') adds 4.125 C^2 per stage: ResNet-18 +0.394M, Res2Net-50
31.53M. models/zoo/mgan.py has the table and why the default stays.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from flax_attn.errors import ConfigError
from flax_attn.ops import Conv
from flax_attn.registry import register_attention

CHANNEL_INPUTS = ('branch', 'input')
COMBINES = ('conv', 'mean')


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
  """MCA, Alg. 2 / Eq. 6: Cw * Conv1x1(X). Returns `(output, Cw)`.

  `mlp_relu`: ReLU between w0 and w1 (False: w1(w0(.)) as Alg. 2 writes).
  """
  reduction: float = 16
  mlp_relu: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    hidden = max(1, int(channels // self.reduction))
    w0 = nn.Dense(hidden, use_bias=False, dtype=self.dtype, name='w0')
    w1 = nn.Dense(channels, use_bias=False, dtype=self.dtype, name='w1')
    act = nn.relu if self.mlp_relu else (lambda v: v)
    mlp = lambda v: w1(act(w0(v)))                                 # steps 3-4
    weights = nn.sigmoid(mlp(jnp.max(x, axis=(1, 2), keepdims=True)) +
                         mlp(jnp.mean(x, axis=(1, 2), keepdims=True)))  # Eq. 6
    global_features = Conv(channels, (1, 1), dtype=self.dtype,
                           name='global_conv')(x)                    # step 6
    return weights * global_features, weights                        # step 7


def _check_options(kernel_sizes, channel_input, combine='conv'):
  if not kernel_sizes or any(k < 1 or k % 2 == 0 for k in kernel_sizes):
    raise ConfigError(f'MGAN: kernel_sizes must be odd positive integers, '
                      f'got {tuple(kernel_sizes)}; e.g. (3, 5, 7)')
  if channel_input not in CHANNEL_INPUTS:
    raise ConfigError(f'MGAN: unknown channel_input {channel_input!r}; '
                      f'valid: {", ".join(CHANNEL_INPUTS)}')
  if combine not in COMBINES:
    raise ConfigError(f'MGAN: unknown combine {combine!r}; valid: '
                      f'{", ".join(COMBINES)}')


class MultiGrainedFeatures(nn.Module):
  """Alg. 3 steps 1-8: the len(K) branches F_i, concatenated (len(K) C).

  `channel_input='branch'`: F_i = MCA(S_i); 'input': F_i = M_i * MCA(I)
  (module docstring).
  """
  kernel_sizes: Sequence[int] = (3, 5, 7)
  reduction: float = 16
  spatial_kernel_size: int = 1
  channel_input: str = 'branch'
  mlp_relu: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    _check_options(self.kernel_sizes, self.channel_input)
    channel_attention = MultiGrainChannelAttention(
        self.reduction, self.mlp_relu, self.dtype, name='mca')
    if self.channel_input == 'input':
      channel_features, weights = channel_attention(x)         # Alg. 3 step 4
    branches = []
    for i, k in enumerate(self.kernel_sizes):
      spatial, mask = MultiGrainSpatialAttention(
          k, self.spatial_kernel_size, self.dtype, name=f'msa{i}')(x)
      if self.channel_input == 'branch':
        branch, weights = channel_attention(spatial)
      else:
        branch = mask * channel_features                       # steps 5-7
      self.sow('intermediates', f'spatial_map{i}', mask)
      self.sow('intermediates', f'channel_weights{i}', weights)
      branches.append(branch)
    return jnp.concatenate(branches, axis=-1)                  # step 8


@register_attention('mgan')
class MultiGrainedAttention(nn.Module):
  """MA (Alg. 3 steps 1-8) as a per-stage attention: N,H,W,C -> N,H,W,C.

  Attributes:
    kernel_sizes: K1, K2, K3 of the MSA branches (Table 4 S-para1..4); one
      kernel, e.g. (5,), for the one-kernel-per-stage reading of Table 1.
    reduction: r of MCA's shared MLP.
    spatial_kernel_size: kernel of MSA's 2 -> 1 conv (Alg. 1 step 5).
    channel_input: 'branch' (MCA on each MSA output) or 'input' (MCA once
      on I, Alg. 3 step 4 literally).
    mlp_relu: ReLU inside MCA's MLP (False: Alg. 2 step 3's w1(w0(.))).
    combine: 'conv' (concat + 1x1 conv len(K) C -> C) or 'mean'.
    dtype: compute dtype.
  """
  kernel_sizes: Sequence[int] = (3, 5, 7)
  reduction: float = 16
  spatial_kernel_size: int = 1
  channel_input: str = 'branch'
  mlp_relu: bool = True
  combine: str = 'conv'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no batch statistics
    _check_options(self.kernel_sizes, self.channel_input, self.combine)
    fused = MultiGrainedFeatures(self.kernel_sizes, self.reduction,
                                 self.spatial_kernel_size, self.channel_input,
                                 self.mlp_relu, self.dtype,
                                 name='features')(x)
    if self.combine == 'mean':
      out = jnp.mean(fused.reshape(*fused.shape[:-1], len(self.kernel_sizes),
                                   x.shape[-1]), axis=-2)
    else:
      out = Conv(x.shape[-1], (1, 1), dtype=self.dtype, name='fuse')(fused)
    return out.astype(x.dtype)

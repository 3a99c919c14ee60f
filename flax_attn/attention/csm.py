"""Channel and spatial (position) attention module (CSM).

Yang, Zhang, Yang, "Research on classification algorithms for attention
mechanism".

  F_1 = M_c(F_in) (x) F_in,  F_out = M_s(F_1) (x) F_1              (Eq. 1-2)
  channel:  F_avg = GAP(F_in)                                       (Eq. 3)
            M_c = sigmoid(W_2 ReLU(W_1 F_avg)), W_1: C -> C/r      (Eq. 4)
  position: B, C, D = 1x1 convs of A; S = softmax(B^T C) over
            positions (HW x HW); output D S                        (Eq. 5)

Readings taken:
  * Channel attention: r = 16, hidden width floor(C / r), no biases (Eq. 4
    writes only W_1, W_2).
  * Position attention as DANet's position attention module (Fu et al. 2019),
    which Fig. 3 reproduces: B and C map to C/8 channels, D to C (1x1 convs
    with biases, as DANet); for each position i, S_ij = softmax_j(B_i . C_j)
    without scaling; output `gamma * sum_j S_ij D_j + A` with a learnable
    scalar gamma initialised to 0, so a pretrained backbone starts unchanged.
    Eq. 5's normalisation index is garbled in the text; DANet's is taken.
  * Computed by `flax_attn.position_attention.attend_positions(scale=1)`:
      - `implementation='blockwise'` (default, every backend): blocks of
        queries and keys with an online softmax and a backward pass that
        recomputes the probabilities, B and C at their C/8 channels; the
        HW x HW matrix is never built (issue 21: the gradient at
        1 x 56 x 56 x 256 needs less than one such matrix of temporaries).
      - 'xla' or None (the previous path, `jax.nn.dot_product_attention`):
        B and C are zero-padded to C channels (dot products unchanged), one
        head; XLA materialises HW x HW matrices (the B^T C product then costs
        HW^2 C instead of HW^2 C/8 multiply-adds).
      - 'cudnn' (GPU, bf16/fp16): D is split into C/(C/8) heads of C/8
        channels that all share B and C (cuDNN's head-width limit); it
        cannot train a 7 x 7 map (sequence length 49).
  * Order (Sec. III-B, Table I): 'channel_first' (default, Eq. 1-2),
    'spatial_first', 'channel_only' (CAM), 'spatial_only' (SAM).
  * Where position attention runs (it costs HW^2 per image, 9.8M scores at
    56 x 56) is configurable on the module, since a block-level attention
    does not receive its stage:
      - `position_stages`: 1-based stages, e.g. (3, 4). The stage is read
        from the name of the enclosing ResNet block ('stage3_block0'), found
        in the module's path; outside such a block this option is an error.
      - `max_positions`: run only where H * W <= max_positions (any backbone;
        depends on the input size: 196 keeps stages 3-4 of a ResNet at 224).
    Where position attention is skipped, the block gets channel attention
    only ('spatial_only' then leaves the map unchanged) and holds no
    position-attention parameters.
"""
from __future__ import annotations

import re
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from flax_attn.errors import ConfigError
from flax_attn.ops import Conv
from flax_attn.position_attention import attend_positions, check_implementation
from flax_attn.registry import register_attention

MODES = ('channel_first', 'spatial_first', 'channel_only', 'spatial_only')
_STAGE_NAME = re.compile(r'^stage(\d+)_')


class ChannelAttention(nn.Module):
  """CSM channel attention M_c, Eq. 3-4. Returns the (N, 1, 1, C) weights."""
  reduction: float = 16
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    hidden = max(1, int(channels // self.reduction))
    pooled = jnp.mean(x, axis=(1, 2), keepdims=True)                 # Eq. 3
    h = nn.relu(nn.Dense(hidden, use_bias=False, dtype=self.dtype,
                         name='fc1')(pooled))
    return nn.sigmoid(nn.Dense(channels, use_bias=False, dtype=self.dtype,
                               name='fc2')(h))                       # Eq. 4


class PositionAttention(nn.Module):
  """CSM position attention (Eq. 5, DANet's PAM): gamma * (D S) + A."""
  qk_reduction: int = 8
  implementation: Optional[str] = 'blockwise'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, a):
    n, h, w, channels = a.shape
    width = max(1, channels // self.qk_reduction)
    conv = lambda f, name: Conv(f, (1, 1), dtype=self.dtype, name=name)(a)
    b = conv(width, 'query').reshape(n, h * w, width)
    c = conv(width, 'key').reshape(n, h * w, width)
    d = conv(channels, 'value').reshape(n, h * w, channels)
    gamma = self.param('gamma', nn.initializers.zeros, (1,), jnp.float32)
    out = attend_positions(b, c, d, scale=1.0,
                           implementation=self.implementation).reshape(a.shape)
    return (jnp.asarray(gamma, self.dtype) * out + a).astype(a.dtype)


@register_attention('csm')
class ChannelSpatialModule(nn.Module):
  """CSM: channel attention (Eq. 3-4) and position attention (Eq. 5).

  Attributes:
    mode: 'channel_first' (CSM), 'spatial_first', 'channel_only' (CAM),
      'spatial_only' (SAM).
    reduction: r of the channel MLP.
    qk_reduction: B and C have C / qk_reduction channels (DANet: 8).
    position_stages: 1-based ResNet stages that get position attention
      (None = all); read from the enclosing block's name.
    max_positions: position attention only where H * W <= this (None = no
      limit).
    implementation: 'blockwise' (default; flax_attn.position_attention) or
      `jax.nn.dot_product_attention`'s 'xla', 'cudnn', None.
    dtype: compute dtype.
  """
  mode: str = 'channel_first'
  reduction: float = 16
  qk_reduction: int = 8
  position_stages: Optional[Sequence[int]] = None
  max_positions: Optional[int] = None
  implementation: Optional[str] = 'blockwise'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no batch statistics
    if self.mode not in MODES:
      raise ConfigError(f'CSM: unknown mode {self.mode!r}; valid: '
                        f'{", ".join(MODES)}')
    check_implementation(self.implementation, 'CSM')
    use_channel = self.mode != 'spatial_only'
    use_position = self.mode != 'channel_only' and self._position_here(x)
    order = (('position', 'channel') if self.mode == 'spatial_first' else
             ('channel', 'position'))
    y = x
    for part in order:
      if part == 'channel' and use_channel:                      # Eq. 1
        weights = ChannelAttention(self.reduction, self.dtype,
                                   name='channel')(y)
        self.sow('intermediates', 'channel_weights', weights)
        y = y * weights
      elif part == 'position' and use_position:                  # Eq. 2, 5
        y = PositionAttention(self.qk_reduction, self.implementation,
                              self.dtype, name='position')(y)
    return y.astype(x.dtype)

  def _position_here(self, x) -> bool:
    if self.max_positions is not None and (
        x.shape[1] * x.shape[2] > self.max_positions):
      return False
    if self.position_stages is None:
      return True
    for name in reversed(self.path[:-1] if self.path else ()):
      match = _STAGE_NAME.match(str(name))
      if match:
        return int(match.group(1)) in tuple(self.position_stages)
    raise ConfigError(
        f'CSM: position_stages={tuple(self.position_stages)} needs the module '
        f'inside a block named stage<i>_block<j> (ResNet), but its path is '
        f'{"/".join(map(str, self.path or ())) or "<top level>"}; use '
        f'max_positions instead')

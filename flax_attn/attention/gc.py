"""Global context (GC) block.

Cao, Xu, Lin, Wei, Hu, "GCNet: Non-local Networks Meet Squeeze-Excitation
Networks and Beyond", ICCV Workshops 2019 (arXiv:1904.11492).

  z_i = x_i + W_v2 ReLU(LN(W_v1 sum_j alpha_j x_j)),
  alpha_j = exp(W_k x_j) / sum_m exp(W_k x_m)            (the GC block, Sec. 4)

(a) context modelling: a 1x1 conv C -> 1 (W_k) and a softmax over the H W
positions weight a global attention pooling of x; (b) transform: a bottleneck
1x1 conv C -> C/r, LayerNorm, ReLU, 1x1 conv C/r -> C (r = 16);
(c) fusion: broadcast addition (default) or, as in the paper's fusion
ablation ("scale"), a sigmoid gate multiplying x.

Reading, from the authors' code (mmcv `ContextBlock`): every 1x1 conv has a
bias (W_k's bias does not change the softmax but is counted as a
parameter); C/r is int(C / r); LayerNorm normalises the C/r values of the
pooled vector with an element-wise affine, eps 1e-5; the last conv of the
transform is zero-initialised, so with 'add' fusion the block starts as the
identity.

timm's `GlobalContext` (its 'gca' attention, gcresnet50t) differs in
constants only: r = 8, C/r rounded to the nearest integer
(`make_divisible(C / 8, 1)`), LayerNorm eps 1e-6; the named model
gcresnet50t passes `reduction=8, rd_divisor=1, ln_epsilon=1e-6`.

Placement: after the last norm of a residual block, before the residual
addition (the ablation's "after 1x1" position). The authors apply it to
every block of stages c3-c5 (res3-res5; mmdetection's `r16_gcb_c3-c5` configs,
`stages=(False, True, True, True)`); the named model `gc_resnet50` does that.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from flax_attn.attention.common import make_divisible
from flax_attn.errors import ConfigError
from flax_attn.ops import Conv
from flax_attn.registry import register_attention

FUSIONS = ('add', 'scale')


@register_attention('gc')
class GlobalContext(nn.Module):
  """GC block: softmax attention pooling -> bottleneck transform -> fusion.

  Attributes:
    reduction: r, the transform's bottleneck ratio (C/r hidden channels).
    fusion: 'add' (z = x + t) or 'scale' (z = x * sigmoid(t)).
    rd_divisor: None: C/r is int(C / r) (the authors' code); an int: C/r
      rounded to the nearest multiple of it (timm's make_divisible, 1 there).
    ln_epsilon: the LayerNorm's epsilon (authors 1e-5, timm 1e-6).
    dtype: compute dtype.
  """
  reduction: float = 16
  fusion: str = 'add'
  rd_divisor: Optional[int] = None
  ln_epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @property
  def timm_names(self):
    """Our submodule -> timm's `GlobalContext` submodule (flax_attn.weights);
    timm names the transform after the fusion it feeds."""
    mlp = 'mlp_add' if self.fusion == 'add' else 'mlp_scale'
    return {'conv_mask': 'conv_attn', 'transform_conv1': f'{mlp}.fc1',
            'transform_ln': f'{mlp}.norm', 'transform_conv2': f'{mlp}.fc2'}

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # LayerNorm has no running statistics
    if self.fusion not in FUSIONS:
      raise ConfigError(f'GC fusion {self.fusion!r} is not one of '
                        f'{", ".join(FUSIONS)}')
    n, h, w, channels = x.shape
    if self.rd_divisor is None:
      hidden = max(1, int(channels / self.reduction))
    else:
      hidden = make_divisible(channels / self.reduction, self.rd_divisor)
    xc = x.astype(self.dtype)
    # (a) Context modelling: one logit per position, softmax over positions.
    logits = Conv(1, (1, 1), dtype=self.dtype, name='conv_mask',
                  kernel_init=nn.initializers.kaiming_normal())(xc)
    alpha = jax.nn.softmax(logits.reshape(n, h * w).astype(jnp.float32),
                           axis=-1).astype(self.dtype)
    context = jnp.einsum('np,npc->nc', alpha, xc.reshape(n, h * w, channels))
    self.sow('intermediates', 'context_weights', alpha.reshape(n, h, w, 1))
    # (b) Transform: 1x1 conv -> LayerNorm -> ReLU -> 1x1 conv.
    t = nn.Dense(hidden, dtype=self.dtype, name='transform_conv1')(context)
    t = nn.LayerNorm(epsilon=self.ln_epsilon, dtype=self.dtype,
                     name='transform_ln')(t)
    t = nn.relu(t)
    t = nn.Dense(channels, dtype=self.dtype, name='transform_conv2',
                 kernel_init=nn.initializers.zeros)(t)
    t = t[:, None, None, :]
    # (c) Fusion.
    if self.fusion == 'add':
      return (xc + t).astype(x.dtype)
    return (xc * nn.sigmoid(t)).astype(x.dtype)

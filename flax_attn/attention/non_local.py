"""Non-local block, embedded Gaussian version.

Wang, Girshick, Gupta, He, "Non-local Neural Networks", CVPR 2018.

  y_i = 1/C(x) sum_j f(x_i, x_j) g(x_j)                              (Eq. 1)
  f(x_i, x_j) = exp(theta(x_i)^T phi(x_j)),  C(x) = sum_j f          (Eq. 3)
    i.e. y = softmax(theta(x)^T phi(x)) g(x)
  z_i = W_z y_i + x_i                                                 (Eq. 6)

theta, phi, g are 1x1 convs C -> C/2 and W_z a 1x1 conv C/2 -> C (Sec. 3.3,
"bottleneck"), followed by BatchNorm whose scale is initialised to zero, so
the block starts as the identity (Sec. 4, implementation details).

Reading, from the authors' released code (facebookresearch/video-nonlocal-net,
`nonlocal_helper.py` with the default config): the 1x1 convs have biases and
N(0, 0.01) initial weights; phi and g see the input max-pooled 2x2 (the
"subsampling trick" of Sec. 3.3, `USE_MAXPOOL`); the affinities are scaled by
(C/2)^-1/2 before the softmax (`USE_SCALE`, not written in Eq. 3); BN
momentum 0.9 (Flax convention, = Caffe2's), eps 1e-5. Odd maps are pooled
with -inf padding (ceil), so any H, W >= 1 works. `subsample=False` and
`scale_logits=False` give Eq. 3 exactly as printed.

The product softmax(theta^T phi) g is
`flax_attn.position_attention.attend_positions`: by default
(`implementation='blockwise'`) blocks of queries and keys with an online
softmax and a recomputing backward pass, so the HW x HW/4 matrix is never
built on any backend (issue 21); 'xla', 'cudnn' or None is the previous path,
`jax.nn.dot_product_attention` with one head. For the same reason no
attention map is sown.

Placement: the paper adds whole non-local blocks *between* residual blocks
(z = W_z y + x around the block output). Its 5-block ResNet-50 (Table 2c:
"5 blocks: 3 to res4 and 2 to res3, to every other residual block"; code:
`LAYER_MOD = 2`, a block after residual blocks 1, 3 of res3 and 1, 3, 5 of
res4, 0-based) is the named model `nl_resnet50`, built from the blocks
'nl_bottleneck' / 'nl_basic' (flax_attn/models/zoo/comparators.py).
Used as `attn='nonlocal'` it is applied in the contract's slot (inside every
block, before the residual addition), which is not the paper's placement.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from flax_attn.ops import Conv
from flax_attn.position_attention import attend_positions, check_implementation
from flax_attn.registry import register_attention


@register_attention('nonlocal')
class NonLocalBlock(nn.Module):
  """Embedded-Gaussian non-local block with its own residual (Eq. 6).

  Attributes:
    reduction: inner width C / reduction for theta, phi, g (2 in the paper).
    subsample: max-pool phi and g by 2x2 (the paper's subsampling trick).
    scale_logits: divide theta^T phi by sqrt(C / reduction) (authors' code).
    use_bias: biases on the 1x1 convs (authors' code).
    bn_momentum, bn_epsilon: the BatchNorm after W_z.
    implementation: 'blockwise' (default) or `jax.nn.dot_product_attention`'s
      'xla', 'cudnn', None.
    dtype: compute dtype.
  """
  reduction: int = 2
  subsample: bool = True
  scale_logits: bool = True
  use_bias: bool = True
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  implementation: Optional[str] = 'blockwise'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    check_implementation(self.implementation, 'nonlocal')
    n, h, w, channels = x.shape
    inner = max(1, channels // self.reduction)
    xc = x.astype(self.dtype)
    init = nn.initializers.normal(0.01)
    conv = lambda features, name: Conv(
        features, (1, 1), use_bias=self.use_bias, kernel_init=init,
        dtype=self.dtype, name=name)
    theta = conv(inner, 'theta')(xc)
    pooled = xc
    if self.subsample:
      pooled = nn.max_pool(xc, (2, 2), strides=(2, 2), padding='SAME')
    phi = conv(inner, 'phi')(pooled)
    g = conv(inner, 'g')(pooled)
    as_sequence = lambda t: t.reshape(n, -1, inner)
    scale = inner ** -0.5 if self.scale_logits else 1.0
    y = attend_positions(as_sequence(theta), as_sequence(phi),
                         as_sequence(g), scale=scale,
                         implementation=self.implementation)
    y = y.reshape(n, h, w, inner)
    z = conv(channels, 'w_z')(y)
    z = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                     epsilon=self.bn_epsilon, dtype=self.dtype,
                     use_fast_variance=False,
                     scale_init=nn.initializers.zeros, name='bn')(z)
    return (z + xc).astype(x.dtype)

"""MGAN networks and classifier head (Wu & Tanprasert 2023).

Named models: `mgan_resnet18/34/50/101` and `mgan_res2net18/34/50/101`
(Table 1; Res2Net-50/101 are res2net50_26w_4s-style, Res2Net-18/34 use the
'res2net_basic' block). The multi-grained attention `MA` ('mgan') follows
stages conv2_x, conv3_x and conv4_x (`stage_attn_after=(1, 2, 3)`); Table 4's
kernel sets are `stage_attn_kwargs=dict(kernel_sizes=(3, 3, 3))` etc.

Stem (Sec. 4.1: "7x7 or 3x3, depending on the size of the images"): the
models default to the 7 x 7 / stride-2 stem with max-pool ('imagenet', for
84 x 84 Mini-ImageNet and larger); for 32 x 32 CIFAR images pass
`stem='small'` (3 x 3 / stride-1 conv, no pool), e.g.
`create_model('mgan_resnet18', num_classes=10, stem='small')`.

The head `HEADS['mgan']` is Alg. 3 steps 9-12, optional (`head='mgan'`).

Readings (`MGAN_READINGS`, `create_model('mgan_resnet18', reading=...)`;
attention/mgan.py says what each option means):
  'branch'            MCA on each MSA output, K = (3, 5, 7) after every
                      stage, 1x1 conv 3C -> C (default, our first reading)
  'input'             Alg. 3 step 4 literally: Cw and Conv1x1 once, from I
  'input_linear'      'input' with Alg. 2 step 3's w1(w0(.)) (no ReLU)
  'branch_per_stage'  Table 1 read as one kernel per stage: K = 3 after
                      conv2_x, 5 after conv3_x, 7 after conv4_x (1x1 C -> C)
  'input_per_stage'   both literal readings; one branch, so no fusion conv
Parameters at 1000 classes (python -m flax_attn.report --readings; the
paper does not state its setting, its baselines are the 1000-class counts):

  reading             MGAN-ResNet-18      MGAN-Res2Net-50
  branch (default)    12.084M (+0.394M)   31.534M (+5.835M)
  input, input_linear 12.084M (+0.394M)   31.534M (+5.835M)
  branch_per_stage    11.890M (+0.200M)   28.694M (+2.995M)
  input_per_stage     11.804M (+0.114M)   27.316M (+1.617M)
  paper               11.70M (+0.01M, T2) 28.6M (T3), 28.2M (T5)

No reading reproduces both tables. Every reading with Alg. 2's C -> C
Conv1x1 adds at least sum(C^2) = 86,016 parameters to ResNet-18 (stages 64,
128, 256), nine times Table 2's +0.01M; even without it, depthwise K x K
convs (one per stage) and the r = 16 MLP alone add 27,529 (11.72M). Table
3's 28.6M is 2.9M over timm's Res2Net-50, about 2.1 sum(C^2) over stages
256, 512, 1024: 'branch_per_stage' (2.125 C^2 a stage) is within 0.3% of it,
1.8% over Table 5's 28.2M and 1.6% over Table 2's total, so it is the
reading closest to all three tables; Table 1's per-stage labels and Sec.
4.4 ("In Table 1, we set the three convolutional kernel sizes ... K1 = 3,
K2 = 5, and K3 = 7") support it too, while Alg. 3 steps 1-3 run all three
MSA branches in one module. Since neither reading reproduces both Table 2
and Table 3, the default stays 'branch' (round 1's reading, Alg. 3 as
written); 'branch_per_stage' is one option away.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from flax_attn.attention.mgan import MultiGrainedFeatures
from flax_attn.errors import ConfigError
from flax_attn.models.builders import imagenet_resnet, res2net
from flax_attn.models.heads import HEADS
from flax_attn.ops import Conv
from flax_attn.registry import register_model

# Table 1: an attention module after conv2_x, conv3_x and conv4_x.
MGAN_STAGES = (1, 2, 3)


@HEADS.register('mgan')
class MGANHead(nn.Module):
  """MGAN classifier, Alg. 3 steps 9-12, on the last feature map F.

    F_cat = MA steps 1-8 on F            (len(kernel_sizes) * C channels)
    F_new = concat(F_cat, Conv1x1(F))    (step 9; Conv1x1 keeps C)
    F_pool = MaxPool(Conv2D(F_new, K))   (step 10; global max-pool)
    F_c = FC(flatten(F_pool))            (step 11; logits, softmax in the loss)

  Alg. 3 leaves K and the widths open. Reading: K = `conv_kernel_size` (1 by
  default, so the head stays near the attention's own size), the K x K conv
  maps to `width` channels (None = C), max-pooling is global so the FC input
  does not depend on the image size; convs and FC carry biases.

  Attributes:
    num_classes: classifier outputs.
    kernel_sizes, reduction, spatial_kernel_size, channel_input, mlp_relu:
      as in `MultiGrainedAttention`.
    conv_kernel_size: K of step 10.
    width: output channels of step 10's conv (None = C).
    dtype: compute dtype.
  """
  num_classes: int
  kernel_sizes: Sequence[int] = (3, 5, 7)
  reduction: float = 16
  spatial_kernel_size: int = 1
  channel_input: str = 'branch'
  mlp_relu: bool = True
  conv_kernel_size: int = 1
  width: Optional[int] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    channels = x.shape[-1]
    fused = MultiGrainedFeatures(self.kernel_sizes, self.reduction,
                                 self.spatial_kernel_size, self.channel_input,
                                 self.mlp_relu, self.dtype,
                                 name='features')(x)                # steps 1-8
    projected = Conv(channels, (1, 1), dtype=self.dtype,
                     name='feature_conv')(x)
    combined = jnp.concatenate([fused, projected], axis=-1)          # step 9
    k = self.conv_kernel_size
    y = Conv(self.width or channels, (k, k), padding=k // 2,
             dtype=self.dtype, name='conv')(combined)                # step 10
    pooled = jnp.max(y, axis=(1, 2))
    logits = nn.Dense(self.num_classes, dtype=self.dtype,
                      name='fc')(pooled)                              # step 11
    return logits, {'pre_logits': pooled}


_PER_STAGE = tuple({'kernel_sizes': (k,)} for k in (3, 5, 7))

# reading -> (MA options, per-stage MA options for MGAN_STAGES).
MGAN_READINGS = {
    'branch': ({}, ()),
    'input': ({'channel_input': 'input'}, ()),
    'input_linear': ({'channel_input': 'input', 'mlp_relu': False}, ()),
    'branch_per_stage': ({}, _PER_STAGE),
    'input_per_stage': ({'channel_input': 'input', 'combine': 'mean'},
                        _PER_STAGE),
}


def _mgan(kw, reading: str = 'branch'):
  if reading not in MGAN_READINGS:
    raise ConfigError(f'unknown MGAN reading {reading!r}; valid: '
                      f'{", ".join(MGAN_READINGS)}')
  options, per_stage = MGAN_READINGS[reading]
  return dict(kw, stage_attn='mgan', stage_attn_kwargs=dict(options),
              stage_attn_after=MGAN_STAGES, stage_attn_per_stage=per_stage)


for _depth in (18, 34, 50, 101):
  register_model(f'mgan_resnet{_depth}')(
      lambda reading='branch', _depth=_depth: _mgan(imagenet_resnet(_depth),
                                                    reading))
  register_model(f'mgan_res2net{_depth}')(
      lambda base_width=26, scale=4, reading='branch', _depth=_depth: _mgan(
          res2net(_depth, base_width=base_width, scale=scale), reading))

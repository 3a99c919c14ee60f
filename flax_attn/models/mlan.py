"""MLAN, the multi-level attention network (a model family of its own).

Wang, Qin, Zhang, Wei, Gao, "MLAN: Multi-Level Attention Network",
IEEE Access 10, 2022, Sec. III and Fig. 1-3.

Levels (Sec. IV-A): a layer is one 3x3 convolution of a basic block, a block
is a basic block, a group is a stage. Attention is built bottom-up:
  * layer attention: the attention module (SMA by default, Eq. 1-3) applied
    to each conv layer's output;
  * block attention, LA (Eq. 4-5): X_l = Cat(x_l^(1..p)), O_LA = SMA(X_l);
  * group attention, BA (Eq. 6-7): X_b = Cat(x_b^(1..q)), O_BA = SMA(X_b);
and fused with the backbone output x_O and the residual x_R of its level:
  plus           x_O + x_A + x_R                                 (Eq. 8)
  concatenation  Conv3x3(Cat(x_O, x_A, x_R)), 3C -> C            (Eq. 9)
  1x1 conv       Conv1x1(Cat(x_O, x_A, x_R)), 3C -> C            (Eq. 10)
  weighted plus  w1 x_O + w2 x_A + w3 x_R,                       (Eq. 11)
                 w = sigmoid(Linear(AvgPool(Cat(x_O, x_A, x_R)))).

Readings taken (the text gives the levels, residuals and fusions; where the
paper leaves the wiring open, its parameter Tables 4-6, 9, 12, 13 decide):
  * Layer attention is a side branch: the backbone runs unchanged
    (conv-BN-ReLU-conv-BN) and each layer's output (after its norm, and
    ReLU for the first layer) also feeds an attention module. Only so does
    the single-level variant (Sec. IV-A2: "layer attention and block
    residual fused") fuse three different things.
  * The first block of every group (Fig. 1's "D block", which down-samples
    in groups 2 and 3; the caption sets it apart from a group's "normal
    blocks") is a plain residual block; the other q - 1 normal blocks carry
    layer attention, LA and the block-level fusion, and BA aggregates their
    q - 1 block attentions (`attend_first_block=True` gives every block
    attention). The tables grow with q - 1, not q: the FMA totals of Tables
    4 and 12 fit 108 (q - 1)^2 sum(C^2) + O(q), the 3 C -> C masks of
    FMA on BA's 2 (q - 1) C channels.
  * `aggregation='project'` (default) takes Eq. 5 and 7 literally: SMA's
    output O_LA = M . X_l keeps all p C channels and is the block attention
    that BA concatenates (so BA sees (q - 1) p C channels); a bias-free 1x1
    convolution maps each aggregated attention back to C channels for its
    fusion. With these two readings the SMA, SMAv2 and FMA totals of Tables
    4, 6, 9 and 12 and the fusion totals of Tables 5 and 13 are all matched
    within 7% (SMA within 2%; see tests/test_mlan.py); SMAv2's totals, which
    carry almost no attention parameters, need the 4 C^2 per normal block
    of the two projections.
  * `aggregation='mean'` is our first reading: the mask multiplies the mean
    of the p (or q) attentions, a parameter-free C-channel result. It is the
    same structure with fewer parameters: against Table 4 (ResNet14..32)
    -12% to -17%, or 0% / -8% / -11% / -13% with `attend_first_block=True`
    (more than 10% below the paper at depths 26 and 32), which is why it is
    not the default.
  * Residuals: block residual = block input (identity inside a group);
    group residual = the group's input, projected by a 1x1 conv + BN with the
    group's stride when the shape changes (our reading).
  * Every fusion is followed by the activation, as the residual addition of
    a basic block is; the concatenation / 1x1 fusion convolutions have no
    bias and no norm (Eq. 9-10 have none). The weighted-plus weights are
    three per example from the pooled 3C concatenation.
  * Single-level variant (`multi_level=False`, Table 3/11): no LA, no BA, no
    group residual; each normal block fuses x_O, the mean of its layer
    attentions and its residual.
The attention used at each level is any registered attention name (CBAM,
SE, triplet, GC in the same structure are Table 6 / 9's comparators).

Tables 6 and 9 (CBAM, SE, GC "with the same multi-level structure"): one
module per attention generation at the usual r = 16 counts 24-51% fewer
parameters than the paper's rows, growing with depth (ResNet14 -24%,
ResNet32 -50%; SE 52,536 / 156,138 on CIFAR-10 against 0.07M / 0.31M).
The gap is quadratic in the channels the attention sees: subtracting the
SMA rows (same structure) leaves about 1.45 K^2 per attention on K channels
(layers C, LA 2C, BA 2(q - 1)C), where an r = 16 MLP has 2K^2 / 16. The
reading that fits is `attn_copies=3` with reduction 4: each attention
generation has N = 3 parallel modules, averaged like SMA's N = 3 masks
(Sec. IV: "N = 3 for each attention generation"), each an MLP K -> K/4 -> K
(SE with `rd_divisor=1`). It gives, ResNet14 / 20 / 26 / 32:
  Table 6 (width 8):   SE  71,902 / 139,242 / 222,710 / 322,306
                       (paper 0.07 / 0.13 / 0.21 / 0.31M, +3..+7%)
                       CBAM +2..+6%, GC +2..+5%
  Table 9 (width 16):  SE 288,524 / 554,916 / 885,820 / 1,281,236
                       (paper 0.28 / 0.53 / 0.86 / 1.24M, +3..+5%)
                       CBAM +2..+3%, GC +3..+4%
within 7% like the SMA / FMA rows. N = 3 at r = 16 gives -15..-40%; one
module at r = 2 about -7..-17%, at r = 1 about +10..+21%; with one module
and any r in {1, 2, 4, 8, 16} chosen per level (layer, LA, BA), the best
choice still misses some SE row by 0.025M. Reduction 4 is fitted, not
stated (any attention of about 1.5 K^2 parameters fits as well), so it is an
option, not the default. Triplet attention (no C^2 parameters) fits with one
module (-13..0%) or three (-1..+9%). `python -m flax_attn.report --readings
mlan` prints these counts.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from flax_attn.attention import get_attention
from flax_attn.errors import ConfigError
from flax_attn.models.heads import LinearHead, apply_head
from flax_attn.models.layers import ModuleDef, small_stem, start_backbone
from flax_attn.models.resnet import BasicBlock, Shortcut

Factory = Optional[Callable[..., nn.Module]]

FUSIONS = ('plus', 'concat', 'conv1x1', 'weighted_plus')
AGGREGATIONS = ('project', 'mean')


class Fusion(nn.Module):
  """F(x_O, x_A, x_R) of Eq. 8-11; returns C channels (before activation).

  Attributes:
    kind: one of FUSIONS.
    conv: conv factory (bias-free, see layers.make_conv).
    dtype: compute dtype.
  """
  kind: str
  conv: ModuleDef
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_o, x_a, x_r):
    channels = x_o.shape[-1]
    if self.kind == 'plus':                                       # Eq. 8
      return x_o + x_a + x_r
    stacked = jnp.concatenate([x_o, x_a, x_r], axis=-1)
    if self.kind == 'concat':                                     # Eq. 9
      return self.conv(channels, (3, 3), name='conv')(stacked)
    if self.kind == 'conv1x1':                                    # Eq. 10
      return self.conv(channels, (1, 1), name='conv')(stacked)
    if self.kind == 'weighted_plus':                              # Eq. 11
      pooled = jnp.mean(stacked, axis=(1, 2))
      w = nn.sigmoid(nn.Dense(3, dtype=self.dtype, name='weights')(pooled))
      w = w[:, None, None, :]
      return w[..., 0:1] * x_o + w[..., 1:2] * x_a + w[..., 2:3] * x_r
    raise ConfigError(f'unknown fusion {self.kind!r}; valid: '
                      f'{", ".join(FUSIONS)}')


class ParallelAttention(nn.Module):
  """`copies` parallel instances of one attention type, outputs averaged.

  SMA's N shared masks (Eq. 2: M_mean = (1/N) sum_i M_s^(i)) applied to
  any attention type: for a gating attention (SE, CBAM) the mean of the N
  gated maps is the input times the mean of the N gates. Sec. IV: "N = 3
  for each attention generation" (MLAN's `attn_copies`).

  Attributes:
    attn: attention factory.
    copies: N.
  """
  attn: Callable[..., nn.Module]
  copies: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    outs = [self.attn(name=f'copy{i}')(x, train=train)
            for i in range(self.copies)]
    return (sum(outs) / self.copies).astype(x.dtype)


class AttentionAggregation(nn.Module):
  """LA (Eq. 4-5) or BA (Eq. 6-7): attention over concatenated attentions.

  Returns `(for_fusion, passed_up)`: the C-channel attention fused at this
  level, and the attention the next level concatenates (see the module
  docstring for the two `aggregation` readings).

  Attributes:
    attn: attention factory (SMA by default).
    features: C, the channels of this level's fusion.
    aggregation: 'project' or 'mean'.
    conv: conv factory for the 1x1 projection.
  """
  attn: Callable[..., nn.Module]
  features: int
  aggregation: str
  conv: ModuleDef

  @nn.compact
  def __call__(self, maps: Sequence[jnp.ndarray], train: bool = False
               ) -> Tuple[jnp.ndarray, jnp.ndarray]:
    stacked = jnp.concatenate(list(maps), axis=-1)                # Eq. 4 / 6
    attended = self.attn(name='attn')(stacked, train=train)       # Eq. 5 / 7
    if self.aggregation == 'project':
      projected = self.conv(self.features, (1, 1), name='project')(attended)
      return projected, attended
    if self.aggregation == 'mean':
      parts = attended.reshape(*attended.shape[:-1], -1, self.features)
      mean = jnp.mean(parts, axis=-2)
      return mean, mean
    raise ConfigError(f'unknown aggregation {self.aggregation!r}; valid: '
                      f'{", ".join(AGGREGATIONS)}')


class MLANBlock(nn.Module):
  """A normal block: basic block + layer attention (+ LA) + block fusion.

  Returns `(output, block_attention)`; block_attention is None in the
  single-level variant.
  """
  filters: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  layer_attn: Callable[..., nn.Module]
  block_attn: Callable[..., nn.Module]
  fusion: str = 'plus'
  aggregation: str = 'project'
  multi_level: bool = True
  act: Callable = nn.relu
  shortcut: str = 'B'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    h1 = self.conv(self.filters, (3, 3), (self.strides, self.strides),
                   name='conv1')(x)
    h1 = self.act(self.norm(name='bn1')(h1))
    h2 = self.conv(self.filters, (3, 3), name='conv2')(h1)
    h2 = self.norm(name='bn2')(h2)                                # x_O
    layer_attention = [
        self.layer_attn(name=f'layer_attn{i + 1}')(h, train=train)
        for i, h in enumerate((h1, h2))]
    residual = Shortcut(self.filters, self.strides, self.conv, self.norm,
                        self.shortcut, name='shortcut')(x)        # x_R
    if self.multi_level:
      x_a, block_attention = AttentionAggregation(
          self.block_attn, self.filters, self.aggregation, self.conv,
          name='layer_aggregation')(layer_attention, train=train)
    else:
      x_a, block_attention = sum(layer_attention) / len(layer_attention), None
    fused = Fusion(self.fusion, self.conv, self.dtype, name='fusion')(
        h2, x_a, residual)
    return self.act(fused), block_attention


class MLAN(nn.Module):
  """Multi-level attention network on a CIFAR-style ResNet backbone.

  Same call contract as `ResNet`: `model(x, train=False,
  return_features=False)` gives logits, or `(logits, features)` with
  features 'stem', 'stage1'.. (after each group's fusion), 'pre_logits'.

  Attributes:
    stage_sizes: q, the blocks of each group, e.g. (3, 3, 3) for ResNet20.
    num_classes: classifier outputs.
    stage_widths: C of each group (8, 16, 32 on CIFAR-10, Table 1).
    stage_strides: stride of each group's first ("D") block.
    stem_width: channels of the 3x3 stem conv.
    attn: attention factory used at every level (SMA by default).
    block_attn, group_attn: another attention (a registered name or a
      factory) for LA / BA; None uses `attn`.
    block_attn_kwargs, group_attn_kwargs: options of those names.
    fusion: one of FUSIONS, used at block and group level.
    aggregation: one of AGGREGATIONS (see the module docstring).
    multi_level: False gives the single-level variant (Table 3).
    attend_first_block: give the first block of each group attention too.
    attn_copies: N parallel instances of the attention at every level,
      outputs averaged (`ParallelAttention`; Table 6 / 9 comparators).
    shortcut: projection kind of the first blocks' shortcuts ('B' or 'A').
    stage_attn: unused by MLAN (its group attention is BA); must be None.
    head: classifier head factory.
    act: activation.
    dtype: compute dtype (parameters and BN statistics stay float32).
    bn_momentum, bn_epsilon, bn_axis_name: BatchNorm settings.
  """
  stage_sizes: Sequence[int]
  num_classes: int = 10
  stage_widths: Sequence[int] = (8, 16, 32)
  stage_strides: Sequence[int] = (1, 2, 2)
  stem_width: int = 8
  attn: Factory = None
  block_attn: Any = None
  group_attn: Any = None
  block_attn_kwargs: Optional[Mapping[str, Any]] = None
  group_attn_kwargs: Optional[Mapping[str, Any]] = None
  fusion: str = 'plus'
  aggregation: str = 'project'
  multi_level: bool = True
  attend_first_block: bool = False
  attn_copies: int = 1
  shortcut: str = 'B'
  stage_attn: Factory = None
  head: Callable[..., nn.Module] = LinearHead
  act: Callable = nn.relu
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  bn_axis_name: Optional[str] = None

  def _check(self):
    if self.attn is None:
      raise ConfigError('MLAN needs an attention type for its levels, got '
                        'None; use cifar_resnetN for the plain backbone')
    if self.stage_attn is not None:
      raise ConfigError('MLAN has no per-stage attention (its group attention '
                        'is BA); set group_attn instead of stage_attn')
    if self.fusion not in FUSIONS:
      raise ConfigError(f'unknown fusion {self.fusion!r}; valid: '
                        f'{", ".join(FUSIONS)}')
    if not isinstance(self.attn_copies, int) or self.attn_copies < 1:
      raise ConfigError(f'attn_copies must be a positive integer, got '
                        f'{self.attn_copies!r}')
    if self.aggregation not in AGGREGATIONS:
      raise ConfigError(f'unknown aggregation {self.aggregation!r}; valid: '
                        f'{", ".join(AGGREGATIONS)}')
    if len(self.stage_widths) < len(self.stage_sizes) or len(
        self.stage_strides) < len(self.stage_sizes):
      raise ConfigError(f'stage_widths {tuple(self.stage_widths)} and '
                        f'stage_strides {tuple(self.stage_strides)} need one '
                        f'entry per group of {tuple(self.stage_sizes)}')

  def _level_attn(self, spec, kwargs) -> Callable[..., nn.Module]:
    factory = self.attn if spec is None else get_attention(spec, kwargs)
    if factory is None:
      raise ConfigError(f'MLAN level attention {spec!r} resolves to none')
    factory = functools.partial(factory, dtype=self.dtype)
    if self.attn_copies > 1:
      return functools.partial(ParallelAttention, attn=factory,
                               copies=self.attn_copies)
    return factory

  @nn.compact
  def __call__(self, x, train: bool = False, return_features: bool = False):
    self._check()
    x, conv, norm = start_backbone(self, x, train)
    layer_attn = self._level_attn(None, None)
    block_attn = self._level_attn(self.block_attn, self.block_attn_kwargs)
    group_attn = self._level_attn(self.group_attn, self.group_attn_kwargs)
    features: Dict[str, Any] = {}

    x = small_stem(x, conv, norm, self.act, self.stem_width)
    features['stem'] = x

    for i, num_blocks in enumerate(self.stage_sizes):
      width = self.stage_widths[i]
      group_input = x
      block_attention = []
      for j in range(num_blocks):
        strides = self.stage_strides[i] if j == 0 else 1
        name = f'stage{i + 1}_block{j}'
        if j == 0 and not self.attend_first_block:   # the plain "D block"
          x = BasicBlock(width, strides, conv=conv, norm=norm, act=self.act,
                         shortcut=self.shortcut, name=name)(x, train=train)
          continue
        x, attention = MLANBlock(
            width, strides, conv, norm, layer_attn, block_attn, self.fusion,
            self.aggregation, self.multi_level, self.act, self.shortcut,
            self.dtype, name=name)(x, train=train)
        block_attention.append(attention)
      if self.multi_level and block_attention:
        x_a, _ = AttentionAggregation(
            group_attn, width, self.aggregation, conv,
            name=f'stage{i + 1}_block_aggregation')(block_attention,
                                                    train=train)
        x_r = Shortcut(width, self.stage_strides[i], conv, norm, 'B',
                       name=f'stage{i + 1}_group_shortcut')(group_input)
        x = self.act(Fusion(self.fusion, conv, self.dtype,
                            name=f'stage{i + 1}_group_fusion')(x, x_a, x_r))
      features[f'stage{i + 1}'] = x

    return apply_head(self, x, features, train, return_features)

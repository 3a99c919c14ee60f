"""ResNet family in flax.linen, NHWC: ResNet, ResNeXt, Res2Net, WideResNet.

The architectures are torchvision's / timm's where they define a model of the
same name (stride on the 3x3 conv of bottlenecks, "ResNet v1.5"), so
parameter counts match theirs exactly and their weights can be imported.

Attention plugs in two places, never by import of a particular module:
  * `attn`: a factory called inside every residual block, applied after the
    last norm of the main path and before the residual addition;
  * `stage_attn`: a factory applied after each stage named in
    `stage_attn_after` (1-based), for modules that act on a whole stage.
The classifier head is a factory too (`head`, GAP + FC by default).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from flax_attn.errors import ConfigError
from flax_attn.models.heads import LinearHead, apply_head
from flax_attn.models.layers import (ModuleDef, small_stem, start_backbone,
                                     with_dtype)

Factory = Optional[Callable[..., nn.Module]]


class Shortcut(nn.Module):
  """The residual branch: identity, or a projection when the shape changes.

  `kind='B'`: 1x1 conv (with stride) + norm (torchvision, timm).
  `kind='D'`: 2x2 average pool with the stride, then 1x1 conv + norm: the
  "ResNet-D" shortcut of He et al. 2019 ("Bag of Tricks", Sec. 4.1), timm's
  `avg_down` (AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False):
  on odd sizes the last window holds what is left and averages only that).
  `kind='A'`: stride-subsample and zero-pad the new channels, no parameters
  (He et al. 2016's CIFAR ResNets, Sec. 4.2).
  """
  features: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  kind: str = 'B'

  @nn.compact
  def __call__(self, x):
    if x.shape[-1] == self.features and self.strides == 1:
      return x
    if self.kind == 'A':
      x = x[:, ::self.strides, ::self.strides, :]
      extra = self.features - x.shape[-1]
      return jnp.pad(x, ((0, 0), (0, 0), (0, 0),
                         (extra // 2, extra - extra // 2)))
    strides = self.strides
    if self.kind == 'D' and strides > 1:
      h, w = x.shape[1:3]
      x = nn.avg_pool(x, (2, 2), (strides, strides),
                      padding=((0, h % 2), (0, w % 2)),
                      count_include_pad=False)
      strides = 1
    x = self.conv(self.features, (1, 1), (strides, strides), name='conv')(x)
    return self.norm(name='bn')(x)


class ResidualParts:
  """What the residual blocks share; a mixin for blocks with the fields
  filters, strides, conv, norm, act, attn, shortcut and zero_init_last.

  `spatial_conv` is the block's 3x3 convolution with its norm and act: a
  block variant that changes that convolution (selective kernels)
  overrides it alone. Called from a block's compact `__call__`.
  """

  def spatial_conv(self, y, features: int, strides: int, groups: int,
                   index: int, train: bool):
    del train  # the norm factory already knows the mode
    y = self.conv(features, (3, 3), (strides, strides),
                  feature_group_count=groups, name=f'conv{index}')(y)
    return self.act(self.norm(name=f'bn{index}')(y))

  def last_norm(self, y, name: str):
    """The main path's last norm: zero-initialised scale if zero_init_last."""
    init = (nn.initializers.zeros if self.zero_init_last
            else nn.initializers.ones)
    return self.norm(name=name, scale_init=init)(y)

  def attend(self, y, train: bool):
    return y if self.attn is None else self.attn(name='attn')(y, train=train)

  def add_shortcut(self, x, y, features: int):
    """act(shortcut(x) + y), the block's output."""
    residual = Shortcut(features, self.strides, self.conv, self.norm,
                        self.shortcut, name='shortcut')(x)
    return self.act(residual + y)


class BasicBlock(ResidualParts, nn.Module):
  """3x3 -> 3x3 residual block (expansion 1)."""
  filters: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable = nn.relu
  attn: Factory = None
  shortcut: str = 'B'
  zero_init_last: bool = False
  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    y = self.spatial_conv(x, self.filters, self.strides, 1, 1, train)
    y = self.conv(self.filters, (3, 3), name='conv2')(y)
    y = self.attend(self.last_norm(y, 'bn2'), train)
    return self.add_shortcut(x, y, self.filters)


class Bottleneck(ResidualParts, nn.Module):
  """1x1 -> 3x3 (stride, groups) -> 1x1 residual block (expansion 4).

  Inner width `int(filters * base_width / 64) * groups` covers ResNet
  (1, 64), ResNeXt (32, 4 or 8) and wide ResNets (1, 128).
  """
  filters: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable = nn.relu
  attn: Factory = None
  shortcut: str = 'B'
  zero_init_last: bool = False
  groups: int = 1
  base_width: int = 64
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool = False):
    width = int(self.filters * (self.base_width / 64.0)) * self.groups
    out = self.filters * self.expansion
    y = self.conv(width, (1, 1), name='conv1')(x)
    y = self.act(self.norm(name='bn1')(y))
    y = self.spatial_conv(y, width, self.strides, self.groups, 2, train)
    y = self.conv(out, (1, 1), name='conv3')(y)
    y = self.attend(self.last_norm(y, 'bn3'), train)
    return self.add_shortcut(x, y, out)


class MultiScaleConv(nn.Module):
  """Res2Net's hierarchical 3x3 convolution (Gao et al. 2021, Eq. 1).

  The input is split into `scale` groups of `width` channels. Following
  timm's `Bottle2neck`: y_i = K_i(x_i + y_{i-1}) for i < scale (K = conv, BN,
  ReLU), the last split passes through; in the first block of a stage
  (`is_first`) the splits are not added and the last one is average pooled
  with the stride instead.
  """
  width: int
  scale: int
  strides: int
  is_first: bool
  conv: ModuleDef
  norm: ModuleDef
  act: Callable = nn.relu
  groups: int = 1

  @nn.compact
  def __call__(self, x):
    splits = jnp.split(x, self.scale, axis=-1)
    outs = []
    y = None
    for i in range(self.scale - 1):
      inp = splits[i] if (i == 0 or self.is_first) else y + splits[i]
      y = self.conv(self.width, (3, 3), (self.strides, self.strides),
                    feature_group_count=self.groups, name=f'convs_{i}')(inp)
      y = self.act(self.norm(name=f'bns_{i}')(y))
      outs.append(y)
    last = splits[-1]
    if self.is_first:
      # AvgPool2d(3, stride, padding=1) with count_include_pad=True.
      last = nn.avg_pool(last, (3, 3), (self.strides, self.strides),
                         padding=((1, 1), (1, 1)), count_include_pad=True)
    outs.append(last)
    return jnp.concatenate(outs, axis=-1)


class Res2NetBottleneck(ResidualParts, nn.Module):
  """Res2Net bottleneck (timm `Bottle2neck`): 1x1 -> multi-scale 3x3 -> 1x1."""
  filters: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable = nn.relu
  attn: Factory = None
  shortcut: str = 'B'
  zero_init_last: bool = False
  groups: int = 1
  base_width: int = 26
  scale: int = 4
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool = False):
    width = int(math.floor(self.filters * (self.base_width / 64.0))) * self.groups
    out = self.filters * self.expansion
    is_first = self.strides > 1 or x.shape[-1] != out
    y = self.conv(width * self.scale, (1, 1), name='conv1')(x)
    y = self.act(self.norm(name='bn1')(y))
    y = MultiScaleConv(width, self.scale, self.strides, is_first, self.conv,
                       self.norm, self.act, self.groups, name='multiscale')(y)
    y = self.conv(out, (1, 1), name='conv3')(y)
    y = self.attend(self.last_norm(y, 'bn3'), train)
    return self.add_shortcut(x, y, out)


class Res2NetBasicBlock(ResidualParts, nn.Module):
  """Basic-block Res2Net (Res2Net-18/34, as MGAN uses them).

  Res2Net's paper defines only the bottleneck form; no reference
  implementation of the basic form exists in torchvision or timm. Reading
  taken: the block's second 3x3 conv becomes the multi-scale 3x3 of
  `MultiScaleConv` over `scale` splits of `filters // scale` channels,
  followed by a 1x1 conv + BN that fuses the splits (the bottleneck's conv3),
  so the block keeps 18/34 weight layers' worth of depth and the attention
  still sees the output of a norm:
    3x3 conv(stride) -> BN -> ReLU -> multi-scale 3x3 -> 1x1 conv -> BN.
  """
  filters: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable = nn.relu
  attn: Factory = None
  shortcut: str = 'B'
  zero_init_last: bool = False
  scale: int = 4
  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.filters % self.scale:
      raise ConfigError(f'Res2Net basic block: filters {self.filters} not '
                        f'divisible by scale {self.scale}')
    is_first = self.strides > 1 or x.shape[-1] != self.filters
    y = self.spatial_conv(x, self.filters, self.strides, 1, 1, train)
    y = MultiScaleConv(self.filters // self.scale, self.scale, 1, is_first,
                       self.conv, self.norm, self.act, name='multiscale')(y)
    y = self.conv(self.filters, (1, 1), name='conv3')(y)
    y = self.attend(self.last_norm(y, 'bn3'), train)
    return self.add_shortcut(x, y, self.filters)


BLOCKS: Dict[str, Any] = {
    'basic': BasicBlock,
    'bottleneck': Bottleneck,
    'res2net_bottleneck': Res2NetBottleneck,
    'res2net_basic': Res2NetBasicBlock,
}

STEMS = ('imagenet', 'small')
# timm's `stem_type` of the ImageNet stem: '' one 7x7 conv of stem_width;
# 'deep' three 3x3 convs of widths (w, w, 2w); 'deep_tiered'
# (3 (w // 4), w, 2w).
STEM_TYPES = ('', 'deep', 'deep_tiered')
STEM_POOLS = ('max', '')


class ResNet(nn.Module):
  """A residual network of stages of blocks, with pluggable attention.

  Attributes:
    stage_sizes: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
    block: one of `BLOCKS`' names ('basic', 'bottleneck', ...).
    num_classes: classifier outputs.
    stage_widths: the `filters` of each stage (before block expansion).
    stage_strides: stride of each stage's first block.
    stem: 'imagenet' (7x7/2 conv + 3x3/2 max-pool) or 'small' (3x3/1 conv,
      no pool) for 32x32 / small images.
    stem_width: channels of the stem conv; of a deep stem's first convs
      (it ends with 2 * stem_width channels, as timm's).
    stem_type: the ImageNet stem, timm's `stem_type`: '' (one 7x7/2 conv),
      'deep' (3x3/2, 3x3, 3x3 convs of stem_width, stem_width,
      2 stem_width channels, each but the last followed by BN + act; timm's
      ResNet-C/D stem) or 'deep_tiered' (widths 3 (stem_width // 4),
      stem_width, 2 stem_width; timm's '-T' models).
    stem_pool: 'max' (3x3/2 max-pool after the stem) or '' (no pool; the
      stem's last conv strides 2 instead, as timm's ByobNet stems do).
    widen_factor: multiplies `stage_widths` (WRN-28-10, CSM's WRN-18 x1.5).
    block_kwargs: extra block fields (groups, base_width, scale).
    shortcut: 'B' projection, 'D' average pool + projection (ResNet-D) or
      'A' zero-pad (CIFAR ResNets of He 2016).
    avg_down: timm's name for shortcut='D': projection shortcuts
      average-pool before their stride-1 1x1 conv (ResNet-D).
    zero_init_last: zero-initialise the last BN scale of each block.
    attn: block attention factory or None.
    stage_attn: per-stage attention factory or None.
    stage_attn_after: 1-based stages followed by `stage_attn`.
    stage_attn_per_stage: optional options of `stage_attn` for each entry of
      `stage_attn_after`, in order (e.g. one kernel set per stage); empty =
      the same module after every stage.
    head: classifier head factory, called with num_classes and dtype.
    act: activation.
    dtype: compute dtype (parameters and BN statistics stay float32).
    bn_momentum, bn_epsilon: BatchNorm constants (PyTorch's by default).
    bn_axis_name: mesh/pmap axis for cross-device BN statistics, if needed.
  """
  stage_sizes: Sequence[int]
  block: str = 'basic'
  num_classes: int = 1000
  stage_widths: Sequence[int] = (64, 128, 256, 512)
  stage_strides: Sequence[int] = (1, 2, 2, 2)
  stem: str = 'imagenet'
  stem_width: int = 64
  stem_type: str = ''
  stem_pool: str = 'max'
  widen_factor: float = 1.0
  block_kwargs: Dict[str, Any] = None
  shortcut: str = 'B'
  avg_down: bool = False
  zero_init_last: bool = False
  attn: Factory = None
  stage_attn: Factory = None
  stage_attn_after: Sequence[int] = ()
  stage_attn_per_stage: Sequence[Mapping[str, Any]] = ()
  head: Callable[..., nn.Module] = LinearHead
  act: Callable = nn.relu
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  bn_axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool = False, return_features: bool = False):
    self._check_options()
    if len(self.stage_widths) < len(self.stage_sizes) or len(
        self.stage_strides) < len(self.stage_sizes):
      raise ConfigError(f'stage_widths {tuple(self.stage_widths)} and '
                        f'stage_strides {tuple(self.stage_strides)} need one '
                        f'entry per stage of {tuple(self.stage_sizes)}')
    if self.stage_attn_per_stage and len(self.stage_attn_per_stage) != len(
        self.stage_attn_after):
      raise ConfigError(f'stage_attn_per_stage needs one entry per stage of '
                        f'stage_attn_after {tuple(self.stage_attn_after)}, got '
                        f'{len(self.stage_attn_per_stage)}')
    block_cls = BLOCKS[self.block]
    x, conv, norm = start_backbone(self, x, train)
    attn = with_dtype(self.attn, self.dtype)
    stage_attn = with_dtype(self.stage_attn, self.dtype)
    features = {}
    shortcut = 'D' if self.avg_down else self.shortcut

    if self.stem == 'imagenet':
      x = self._imagenet_stem(x, conv, norm)
      features['stem'] = x
      if self.stem_pool == 'max':
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    else:
      x = small_stem(x, conv, norm, self.act, self.stem_width)
      features['stem'] = x

    for i, num_blocks in enumerate(self.stage_sizes):
      width = int(self.stage_widths[i] * self.widen_factor)
      for j in range(num_blocks):
        strides = self.stage_strides[i] if j == 0 else 1
        x = block_cls(width, strides, conv=conv, norm=norm, act=self.act,
                      attn=attn, shortcut=shortcut,
                      zero_init_last=self.zero_init_last,
                      **(self.block_kwargs or {}),
                      name=f'stage{i + 1}_block{j}')(x, train=train)
      if stage_attn is not None and (i + 1) in self.stage_attn_after:
        options = (dict(self.stage_attn_per_stage[
            list(self.stage_attn_after).index(i + 1)])
                   if self.stage_attn_per_stage else {})
        x = stage_attn(name=f'stage{i + 1}_attn', **options)(x, train=train)
      features[f'stage{i + 1}'] = x

    return apply_head(self, x, features, train, return_features)

  def _check_options(self):
    """Unknown stem / shortcut options fail in one line naming the valid."""
    for field, value, valid in (('stem', self.stem, STEMS),
                                ('stem_type', self.stem_type, STEM_TYPES),
                                ('stem_pool', self.stem_pool, STEM_POOLS),
                                ('shortcut', self.shortcut, ('A', 'B', 'D'))):
      if value not in valid:
        raise ConfigError(f'unknown {field} {value!r}; valid: '
                          f'{", ".join(map(repr, valid))}')
    if self.stem == 'small' and (self.stem_type or self.stem_pool != 'max'):
      raise ConfigError(f'stem_type {self.stem_type!r} / stem_pool '
                        f'{self.stem_pool!r} need stem=\'imagenet\'; the '
                        'small stem is one 3x3 conv')
    if self.avg_down and self.shortcut == 'A':
      raise ConfigError(f'avg_down needs projection shortcuts '
                        f"(shortcut='B'), not {self.shortcut!r}")

  def _imagenet_stem(self, x, conv, norm):
    """conv(s) + norm + act: 7x7/2, or timm's deep 3x3 stack.

    Deep stems name their first two convs conv_stem1/2 (bn_stem1/2); the
    last conv and norm are conv_stem / bn_stem, as in the 7x7 stem. Without
    a pool the last conv strides 2 (total stride 4 either way).
    """
    last_strides = (1, 1) if self.stem_pool == 'max' else (2, 2)
    if not self.stem_type:
      if self.stem_pool != 'max':
        raise ConfigError("stem_pool='' needs a deep stem_type ('deep' or "
                          "'deep_tiered')")
      x = conv(self.stem_width, (7, 7), (2, 2), name='conv_stem')(x)
      return self.act(norm(name='bn_stem')(x))
    first = (3 * (self.stem_width // 4) if self.stem_type == 'deep_tiered'
             else self.stem_width)
    for i, (width, strides) in enumerate(((first, (2, 2)),
                                          (self.stem_width, (1, 1)))):
      x = conv(width, (3, 3), strides, name=f'conv_stem{i + 1}')(x)
      x = self.act(norm(name=f'bn_stem{i + 1}')(x))
    x = conv(2 * self.stem_width, (3, 3), last_strides, name='conv_stem')(x)
    return self.act(norm(name='bn_stem')(x))

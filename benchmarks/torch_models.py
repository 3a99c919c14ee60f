"""The benchmarked networks in PyTorch, written for `benchmarks/speed.py`.

Each class mirrors the flax_attn module of the same role closely enough that
the parameter counts are equal (speed.py checks this) and the work per step
is the same: the same convolutions, norms and attention arithmetic. They are
written the way a PyTorch user would write them (NCHW semantics; the tensors
are channels_last in memory), not translated op by op, except where the
flax_attn reading of a paper fixes an order or a shape. Benchmark-only code:
nothing in flax_attn imports torch.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def make_divisible(value: float, divisor: int = 8) -> int:
  """timm's make_divisible (flax_attn.attention.common.make_divisible)."""
  return max(divisor, int(value + divisor / 2) // divisor * divisor)


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
  t = int(abs((math.log2(channels) + b) / gamma))
  return t if t % 2 else t + 1


# ---------------------------------------------------------------------------
# Attention modules: constructor(channels), forward(x) -> same shape.
# ---------------------------------------------------------------------------


class SqueezeExcite(nn.Module):
  """SE (flax_attn 'se'): FCs with bias, hidden make_divisible(C / 16, 8)."""

  def __init__(self, channels: int):
    super().__init__()
    hidden = make_divisible(channels / 16, 8)
    self.fc1 = nn.Linear(channels, hidden)
    self.fc2 = nn.Linear(hidden, channels)

  def forward(self, x):
    s = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))
    return x * s[:, :, None, None]


class CBAM(nn.Module):
  """CBAM (flax_attn 'cbam'): bias-free MLP C // 16, 7x7 conv + BN."""

  def __init__(self, channels: int):
    super().__init__()
    hidden = max(1, channels // 16)
    self.fc1 = nn.Linear(channels, hidden, bias=False)
    self.fc2 = nn.Linear(hidden, channels, bias=False)
    self.conv = nn.Conv2d(2, 1, 7, padding=3, bias=False)
    self.bn = nn.BatchNorm2d(1)

  def forward(self, x):
    mlp = lambda v: self.fc2(F.relu(self.fc1(v)))
    mc = torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))
    x = x * mc[:, :, None, None]
    pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
    return x * torch.sigmoid(self.bn(self.conv(pooled)))


class ECA(nn.Module):
  """ECA (flax_attn 'eca'): bias-free k-tap conv1d over pooled channels."""

  def __init__(self, channels: int):
    super().__init__()
    k = eca_kernel_size(channels)
    self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

  def forward(self, x):
    y = self.conv(x.mean((2, 3))[:, None, :])[:, 0]
    return x * torch.sigmoid(y)[:, :, None, None]


class HGA(nn.Module):
  """HGA(C, 32, C) (flax_attn 'hga'): projected for C > 32, no biases.

  MFE: grouped k x k convs width -> width / 4 (width / 4 groups), k = 1..7;
  HAP: adaptive average pools 1, 2, 4, flattened bin-major; EE: FC
  21 width -> width / 4 -> width; restore FC width -> C.
  """

  def __init__(self, channels: int, reduced_width: int = 32):
    super().__init__()
    self.projected = channels > reduced_width
    width = reduced_width if self.projected else channels
    self.reduce = (nn.Conv2d(channels, width, 1, bias=False)
                   if self.projected else None)
    quarter = width // 4
    self.mfe = nn.ModuleList(
        nn.Conv2d(width, quarter, k, padding=k // 2, groups=quarter,
                  bias=False) for k in (1, 3, 5, 7))
    self.suppress = nn.Linear(21 * width, max(1, width // 4), bias=False)
    self.excite = nn.Linear(max(1, width // 4), width, bias=False)
    self.restore = (nn.Linear(width, channels, bias=False)
                    if self.projected else None)

  def forward(self, x):
    inner = self.reduce(x) if self.projected else x
    inner = torch.cat([conv(inner) for conv in self.mfe], 1)
    n = inner.shape[0]
    pooled = torch.cat([F.adaptive_avg_pool2d(inner, b).permute(0, 2, 3, 1)
                        .reshape(n, -1) for b in (1, 2, 4)], 1)
    logits = self.excite(F.relu(self.suppress(pooled)))
    if self.projected:
      logits = self.restore(logits)
    return x * torch.sigmoid(logits)[:, :, None, None]


class _MultiGrainSpatial(nn.Module):

  def __init__(self, channels: int, k: int):
    super().__init__()
    self.depthwise = nn.Conv2d(channels, channels, k, padding=k // 2,
                               groups=channels)
    self.mask_conv = nn.Conv2d(2, 1, 1)

  def forward(self, x):
    s = self.depthwise(x)
    pooled = torch.cat([s.amax(1, keepdim=True), s.mean(1, keepdim=True)], 1)
    return x * torch.sigmoid(self.mask_conv(pooled))


class MGAN(nn.Module):
  """MGAN's MA (flax_attn 'mgan'): 3 MSA branches, one shared MCA, fuse."""

  def __init__(self, channels: int, kernel_sizes: Sequence[int] = (3, 5, 7)):
    super().__init__()
    hidden = max(1, channels // 16)
    self.msa = nn.ModuleList(_MultiGrainSpatial(channels, k)
                             for k in kernel_sizes)
    self.w0 = nn.Linear(channels, hidden, bias=False)
    self.w1 = nn.Linear(hidden, channels, bias=False)
    self.global_conv = nn.Conv2d(channels, channels, 1)
    self.fuse = nn.Conv2d(len(kernel_sizes) * channels, channels, 1)

  def _mca(self, x):
    mlp = lambda v: self.w1(F.relu(self.w0(v)))
    w = torch.sigmoid(mlp(x.amax((2, 3))) + mlp(x.mean((2, 3))))
    return w[:, :, None, None] * self.global_conv(x)

  def forward(self, x):
    return self.fuse(torch.cat([self._mca(msa(x)) for msa in self.msa], 1))


class CSM(nn.Module):
  """CSM (flax_attn 'csm'): channel attention, then DANet position attention.

  Position attention as DANet's code: energy = Q^T K over the HW positions
  (Q, K of C / 8 channels), softmax over keys, out = V S^T, gamma * out + x.
  """

  def __init__(self, channels: int):
    super().__init__()
    hidden = max(1, channels // 16)
    width = max(1, channels // 8)
    self.fc1 = nn.Linear(channels, hidden, bias=False)
    self.fc2 = nn.Linear(hidden, channels, bias=False)
    self.query = nn.Conv2d(channels, width, 1)
    self.key = nn.Conv2d(channels, width, 1)
    self.value = nn.Conv2d(channels, channels, 1)
    self.gamma = nn.Parameter(torch.zeros(1))

  def forward(self, x):
    w = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))
    a = x * w[:, :, None, None]
    n, c, h, wd = a.shape
    q = self.query(a).reshape(n, -1, h * wd).transpose(1, 2)     # N, L, d
    k = self.key(a).reshape(n, -1, h * wd)                        # N, d, L
    v = self.value(a).reshape(n, c, h * wd)                       # N, C, L
    attention = torch.softmax(torch.bmm(q, k), dim=-1)            # N, L, L
    out = torch.bmm(v, attention.transpose(1, 2)).reshape(n, c, h, wd)
    return self.gamma * out + a


class SharedMaskAttention(nn.Module):
  """MLAN's SMA (flax_attn 'sma'): 3x3 conv C -> 3 masks, mean, multiply."""

  def __init__(self, channels: int, num_masks: int = 3):
    super().__init__()
    self.conv = nn.Conv2d(channels, num_masks, 3, padding=1)

  def forward(self, x):
    return x * torch.sigmoid(self.conv(x)).mean(1, keepdim=True)


ATTENTION = {
    'se': SqueezeExcite, 'cbam': CBAM, 'eca': ECA, 'hga': HGA, 'csm': CSM,
    'sma': SharedMaskAttention, 'mgan': MGAN,
}


# ---------------------------------------------------------------------------
# Backbones (flax_attn.models.resnet).
# ---------------------------------------------------------------------------


class Shortcut(nn.Module):
  """Identity, 'A' (subsample + zero-pad channels) or 'B' (1x1 conv + BN)."""

  def __init__(self, cin: int, cout: int, stride: int, kind: str):
    super().__init__()
    self.identity = cin == cout and stride == 1
    self.kind, self.stride, self.extra = kind, stride, cout - cin
    if not self.identity and kind == 'B':
      self.conv = nn.Conv2d(cin, cout, 1, stride, bias=False)
      self.bn = nn.BatchNorm2d(cout)

  def forward(self, x):
    if self.identity:
      return x
    if self.kind == 'A':
      x = x[:, :, ::self.stride, ::self.stride]
      e = self.extra
      return F.pad(x, (0, 0, 0, 0, e // 2, e - e // 2))
    return self.bn(self.conv(x))


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, cin, planes, stride, shortcut, attn: Optional[Callable]):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.attn = attn(planes) if attn else None
    self.shortcut = Shortcut(cin, planes, stride, shortcut)

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    if self.attn is not None:
      y = self.attn(y)
    return F.relu(self.shortcut(x) + y)


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, cin, planes, stride, shortcut, attn: Optional[Callable]):
    super().__init__()
    out = planes * 4
    self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(out)
    self.attn = attn(out) if attn else None
    self.shortcut = Shortcut(cin, out, stride, shortcut)

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = F.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    if self.attn is not None:
      y = self.attn(y)
    return F.relu(self.shortcut(x) + y)


class ResNet(nn.Module):
  """flax_attn.models.resnet.ResNet: blocks, block attention, stage attention."""

  def __init__(self, stage_sizes, block, widths, strides, stem, stem_width,
               shortcut, num_classes, attn=None, stage_attn=None,
               stage_attn_after=()):
    super().__init__()
    if stem == 'imagenet':
      self.stem = nn.Sequential(
          nn.Conv2d(3, stem_width, 7, 2, 3, bias=False),
          nn.BatchNorm2d(stem_width), nn.ReLU(inplace=True),
          nn.MaxPool2d(3, 2, 1))
    else:
      self.stem = nn.Sequential(
          nn.Conv2d(3, stem_width, 3, 1, 1, bias=False),
          nn.BatchNorm2d(stem_width), nn.ReLU(inplace=True))
    layers, cin = [], stem_width
    for i, (n, width, stride) in enumerate(zip(stage_sizes, widths, strides)):
      for j in range(n):
        layers.append(block(cin, width, stride if j == 0 else 1, shortcut,
                            attn))
        cin = width * block.expansion
      if stage_attn is not None and (i + 1) in stage_attn_after:
        layers.append(stage_attn(cin))
    self.layers = nn.Sequential(*layers)
    self.fc = nn.Linear(cin, num_classes)

  def forward(self, x):
    return self.fc(self.layers(self.stem(x)).mean((2, 3)))


class MLANBlock(nn.Module):
  """flax_attn.models.mlan.MLANBlock with SMA, 'plus' fusion, 'project'."""

  def __init__(self, width):
    super().__init__()
    self.conv1 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(width)
    self.layer_attn1 = SharedMaskAttention(width)
    self.layer_attn2 = SharedMaskAttention(width)
    self.aggregate = SharedMaskAttention(2 * width)
    self.project = nn.Conv2d(2 * width, width, 1, bias=False)

  def forward(self, x):
    h1 = F.relu(self.bn1(self.conv1(x)))
    h2 = self.bn2(self.conv2(h1))
    attended = self.aggregate(torch.cat([self.layer_attn1(h1),
                                         self.layer_attn2(h2)], 1))
    return F.relu(h2 + self.project(attended) + x), attended


class MLAN(nn.Module):
  """flax_attn.models.mlan.MLAN (mlan_resnetN defaults): plain first block
  of each group, multi-level SMA, group fusion with a 'B' group shortcut."""

  def __init__(self, stage_sizes, width, num_classes):
    super().__init__()
    self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False),
                              nn.BatchNorm2d(width), nn.ReLU(inplace=True))
    self.groups = nn.ModuleList()
    cin = width
    for i, n in enumerate(stage_sizes):
      c, stride = width * 2 ** i, (1, 2, 2)[i]
      group = nn.Module()
      group.first = BasicBlock(cin, c, stride, 'B', None)
      group.blocks = nn.ModuleList(MLANBlock(c) for _ in range(n - 1))
      group.aggregate = SharedMaskAttention(2 * c * (n - 1))
      group.project = nn.Conv2d(2 * c * (n - 1), c, 1, bias=False)
      group.shortcut = Shortcut(cin, c, stride, 'B')
      self.groups.append(group)
      cin = c
    self.fc = nn.Linear(cin, num_classes)

  def forward(self, x):
    x = self.stem(x)
    for group in self.groups:
      group_input = x
      x = group.first(x)
      attentions = []
      for block in group.blocks:
        x, attention = block(x)
        attentions.append(attention)
      x_a = group.project(group.aggregate(torch.cat(attentions, 1)))
      x = F.relu(x + x_a + group.shortcut(group_input))
    return self.fc(x.mean((2, 3)))


def build(backbone: str, attn: str, num_classes: int) -> nn.Module:
  """The PyTorch twin of speed.py's `jax_model(backbone, attn)`."""
  block_attn = None if attn in ('none', 'mgan', 'mlan') else ATTENTION[attn]
  stage_attn = MGAN if attn == 'mgan' else None
  if backbone == 'tiny':
    return ResNet((1, 1, 1), BasicBlock, (4, 8, 16), (1, 2, 2), 'small', 4,
                  'A', num_classes, block_attn, stage_attn, (1, 2))
  if backbone == 'resnet20':
    if attn == 'mlan':
      return MLAN((3, 3, 3), 16, num_classes)
    return ResNet((3, 3, 3), BasicBlock, (16, 32, 64), (1, 2, 2), 'small', 16,
                  'A', num_classes, block_attn, stage_attn, (1, 2))
  if backbone == 'resnet18':
    return ResNet((2, 2, 2, 2), BasicBlock, (64, 128, 256, 512),
                  (1, 2, 2, 2), 'small', 64, 'B', num_classes, block_attn,
                  stage_attn, (1, 2, 3))
  if backbone == 'resnet50':
    return ResNet((3, 4, 6, 3), Bottleneck, (64, 128, 256, 512),
                  (1, 2, 2, 2), 'imagenet', 64, 'B', num_classes, block_attn,
                  stage_attn, (1, 2, 3))
  raise ValueError(f'unknown backbone {backbone!r}; valid: tiny, resnet20, '
                   'resnet18, resnet50')

"""Compact PyTorch ResNet family for the weight-import tests.

Written after torchvision.models.resnet (BasicBlock, Bottleneck, ResNet:
ResNet v1.5, stride on the 3x3 conv; ResNeXt and wide ResNets through
`groups` / `width_per_group`) and timm (models/res2net.py `Bottle2neck`;
layers/squeeze_excite.py `SEModule` as used by `seresnet50`), with the same
module names, so `state_dict()` has their keys. Independent of flax_attn: the
tests compare our models against these. torchvision is not installed here.
"""
import math

import torch
from torch import nn


def make_divisible(v, divisor=8, min_value=None, round_limit=0.0):
  """timm.layers.make_divisible."""
  min_value = min_value or divisor
  new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
  if new_v < round_limit * v:
    new_v += divisor
  return new_v


class SEModule(nn.Module):
  """timm SEModule: 1x1 convs with bias, rd = make_divisible(C / 16, 8)."""

  def __init__(self, channels, rd_ratio=1.0 / 16):
    super().__init__()
    rd = make_divisible(channels * rd_ratio, 8)
    self.fc1 = nn.Conv2d(channels, rd, 1, bias=True)
    self.act = nn.ReLU(inplace=True)
    self.fc2 = nn.Conv2d(rd, channels, 1, bias=True)

  def forward(self, x):
    s = x.mean((2, 3), keepdim=True)
    s = self.fc2(self.act(self.fc1(s)))
    return x * s.sigmoid()


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1,
               base_width=64, se=False):
    super().__init__()
    del groups, base_width
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU(inplace=True)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.se = SEModule(planes) if se else None
    self.downsample = downsample

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    if self.se is not None:
      out = self.se(out)
    identity = x if self.downsample is None else self.downsample(x)
    return self.relu(out + identity)


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1,
               base_width=64, se=False):
    super().__init__()
    width = int(planes * (base_width / 64.0)) * groups
    self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups,
                           bias=False)
    self.bn2 = nn.BatchNorm2d(width)
    self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.se = SEModule(planes * 4) if se else None
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    if self.se is not None:
      out = self.se(out)
    identity = x if self.downsample is None else self.downsample(x)
    return self.relu(out + identity)


class Bottle2neck(nn.Module):
  """timm res2net.Bottle2neck (scale splits, hierarchical 3x3 convs)."""
  expansion = 4

  def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1,
               base_width=26, scale=4, se=False):
    super().__init__()
    self.scale = scale
    self.is_first = stride > 1 or downsample is not None
    self.num_scales = max(1, scale - 1)
    width = int(math.floor(planes * (base_width / 64.0))) * groups
    self.width = width
    outplanes = planes * 4
    self.conv1 = nn.Conv2d(inplanes, width * scale, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width * scale)
    self.convs = nn.ModuleList([
        nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        for _ in range(self.num_scales)])
    self.bns = nn.ModuleList([nn.BatchNorm2d(width)
                              for _ in range(self.num_scales)])
    self.pool = (nn.AvgPool2d(3, stride, 1) if self.is_first else None)
    self.conv3 = nn.Conv2d(width * scale, outplanes, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(outplanes)
    self.se = SEModule(outplanes) if se else None
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    spx = torch.split(out, self.width, 1)
    spo = []
    sp = spx[0]
    for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
      sp = spx[i] if (i == 0 or self.is_first) else sp + spx[i]
      sp = self.relu(bn(conv(sp)))
      spo.append(sp)
    if self.scale > 1:
      spo.append(self.pool(spx[-1]) if self.pool is not None else spx[-1])
    out = self.bn3(self.conv3(torch.cat(spo, 1)))
    if self.se is not None:
      out = self.se(out)
    identity = x if self.downsample is None else self.downsample(x)
    return self.relu(out + identity)


class ResNet(nn.Module):
  """torchvision / timm ResNet: 7x7 stem, max-pool, 4 stages, GAP, fc."""

  def __init__(self, block, layers, num_classes=1000, **block_kwargs):
    super().__init__()
    self.inplanes = 64
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
      setattr(self, f'layer{i + 1}', self._make_layer(
          block, planes, n, 1 if i == 0 else 2, block_kwargs))
    self.fc = nn.Linear(512 * block.expansion, num_classes)

  def _make_layer(self, block, planes, blocks, stride, block_kwargs):
    downsample = None
    if stride != 1 or self.inplanes != planes * block.expansion:
      downsample = nn.Sequential(
          nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride,
                    bias=False),
          nn.BatchNorm2d(planes * block.expansion))
    layers = [block(self.inplanes, planes, stride, downsample, **block_kwargs)]
    self.inplanes = planes * block.expansion
    layers += [block(self.inplanes, planes, **block_kwargs)
               for _ in range(1, blocks)]
    return nn.Sequential(*layers)

  def forward(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return self.fc(torch.flatten(x.mean((2, 3)), 1))


# Names as torchvision / timm spell them.
MODELS = {
    'resnet18': lambda **kw: ResNet(BasicBlock, [2, 2, 2, 2], **kw),
    'resnet34': lambda **kw: ResNet(BasicBlock, [3, 4, 6, 3], **kw),
    'resnet50': lambda **kw: ResNet(Bottleneck, [3, 4, 6, 3], **kw),
    'resnet101': lambda **kw: ResNet(Bottleneck, [3, 4, 23, 3], **kw),
    'resnet152': lambda **kw: ResNet(Bottleneck, [3, 8, 36, 3], **kw),
    'resnext50_32x4d': lambda **kw: ResNet(
        Bottleneck, [3, 4, 6, 3], groups=32, base_width=4, **kw),
    'resnext101_32x8d': lambda **kw: ResNet(
        Bottleneck, [3, 4, 23, 3], groups=32, base_width=8, **kw),
    'wide_resnet50_2': lambda **kw: ResNet(
        Bottleneck, [3, 4, 6, 3], base_width=128, **kw),
    'wide_resnet101_2': lambda **kw: ResNet(
        Bottleneck, [3, 4, 23, 3], base_width=128, **kw),
    'res2net50_26w_4s': lambda **kw: ResNet(
        Bottle2neck, [3, 4, 6, 3], base_width=26, scale=4, **kw),
    'seresnet50': lambda **kw: ResNet(Bottleneck, [3, 4, 6, 3], se=True,
                                      **kw),
}


def randomize(model, seed=0, batch=2, size=64):
  """Random weights and non-trivial BN statistics, then eval mode.

  The BN affine parameters are drawn away from (1, 0); the running
  statistics are those of a random batch through the network (cumulative
  average), so activations stay well scaled through the depth, then
  perturbed per channel: every imported quantity matters to the output.
  """
  gen = torch.Generator().manual_seed(seed)
  norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
  with torch.no_grad():
    for m in model.modules():  # the conv / linear weights, reproducibly
      if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear)):
        bound = 1.0 / math.sqrt(m.weight[0].numel())
        m.weight.copy_((torch.rand(m.weight.shape, generator=gen) * 2 - 1)
                       * bound)
        if m.bias is not None:
          m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
    for m in model.modules():  # GC's LayerNorm: affine away from (1, 0)
      if isinstance(m, nn.LayerNorm):
        m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
        m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
    for m in norms:
      c = m.num_features
      m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
      m.bias.copy_(0.1 * torch.randn(c, generator=gen))
      m.momentum = None
      m.reset_running_stats()
    model.train()
    model(torch.randn(batch, 3, size, size, generator=gen))
    for m in norms:
      c = m.num_features
      m.running_var.mul_(0.8 + 0.4 * torch.rand(c, generator=gen))
      m.running_mean.add_(0.1 * torch.randn(c, generator=gen)
                          * m.running_var.sqrt())
  return model.eval()

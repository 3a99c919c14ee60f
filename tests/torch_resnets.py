"""Compact PyTorch ResNet family for the weight-import tests.

Written after torchvision.models.resnet (BasicBlock, Bottleneck, ResNet:
ResNet v1.5, stride on the 3x3 conv; ResNeXt and wide ResNets through
`groups` / `width_per_group`) and timm (models/res2net.py `Bottle2neck`;
layers/squeeze_excite.py `SEModule` as used by `seresnet50`), with the same
module names, so `state_dict()` has their keys. Independent of flax_attn: the
tests compare our models against these. torchvision is not installed here.

timm's attention ResNets (timm 1.0.31; timm needs torchvision, which has no
build for this torch here, so they are rewritten from timm's source):
models/resnet.py's deep stems (`stem_type` 'deep' / 'deep_tiered') and
`downsample_avg` shortcuts, layers/eca.py `EcaModule`, models/sknet.py's
selective-kernel blocks over layers/selective_kernel.py, and
models/byobnet.py's gcresnet50t (tiered stem without pool, bottlenecks with
layers/global_context.py `GlobalContext` after the 3x3 conv). Checked once
against timm itself (state-dict keys and shapes identical; logits of the
same random weights equal to float32 rounding).
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


class EcaModule(nn.Module):
  """timm EcaModule: k = max(odd(int(|log2 C + 1| / 2)), 3), bias-free
  Conv1d across the pooled channels, sigmoid gate."""

  def __init__(self, channels):
    super().__init__()
    t = int(abs(math.log(channels, 2) + 1) / 2)
    k = max(t if t % 2 else t + 1, 3)
    self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

  def forward(self, x):
    y = self.conv(x.mean((2, 3)).view(x.shape[0], 1, -1))
    return x * y.sigmoid().view(x.shape[0], -1, 1, 1)


def attention(kind, channels):
  """timm's `create_attn` for the kinds used here (None: no attention)."""
  return {None: lambda c: None, 'se': SEModule, 'eca': EcaModule}[kind](
      channels)


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1,
               base_width=64, se=False, attn=None):
    super().__init__()
    del groups, base_width
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU(inplace=True)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.se = attention('se' if se else attn, planes)
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
               base_width=64, se=False, attn=None):
    super().__init__()
    width = int(planes * (base_width / 64.0)) * groups
    self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups,
                           bias=False)
    self.bn2 = nn.BatchNorm2d(width)
    self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.se = attention('se' if se else attn, planes * 4)
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
  """torchvision / timm ResNet: 7x7 stem, max-pool, 4 stages, GAP, fc.

  timm's options: `stem_type` 'deep' (conv1 = 3x3/2, 3x3, 3x3 convs of
  stem_width, stem_width, 2 stem_width with BN + ReLU between) or
  'deep_tiered' (first width 3 (stem_width // 4)); `avg_down` shortcuts
  (AvgPool2d(2, stride, ceil_mode, count_include_pad=False), 1x1 conv, BN).
  """

  def __init__(self, block, layers, num_classes=1000, stem_type='',
               stem_width=64, avg_down=False, **block_kwargs):
    super().__init__()
    self.avg_down = avg_down
    self.inplanes = 2 * stem_width if stem_type else 64
    if stem_type:
      first = (3 * (stem_width // 4) if stem_type == 'deep_tiered'
               else stem_width)
      self.conv1 = nn.Sequential(
          nn.Conv2d(3, first, 3, 2, 1, bias=False), nn.BatchNorm2d(first),
          nn.ReLU(inplace=True),
          nn.Conv2d(first, stem_width, 3, 1, 1, bias=False),
          nn.BatchNorm2d(stem_width), nn.ReLU(inplace=True),
          nn.Conv2d(stem_width, self.inplanes, 3, 1, 1, bias=False))
    else:
      self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(self.inplanes)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
      setattr(self, f'layer{i + 1}', self._make_layer(
          block, planes, n, 1 if i == 0 else 2, block_kwargs))
    self.fc = nn.Linear(512 * block.expansion, num_classes)

  def _make_layer(self, block, planes, blocks, stride, block_kwargs):
    downsample = None
    out = planes * block.expansion
    if self.avg_down and (stride != 1 or self.inplanes != out):
      pool = (nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
              if stride != 1 else nn.Identity())
      downsample = nn.Sequential(
          pool, nn.Conv2d(self.inplanes, out, 1, bias=False),
          nn.BatchNorm2d(out))
    elif stride != 1 or self.inplanes != out:
      downsample = nn.Sequential(
          nn.Conv2d(self.inplanes, out, 1, stride, bias=False),
          nn.BatchNorm2d(out))
    layers = [block(self.inplanes, planes, stride, downsample, **block_kwargs)]
    self.inplanes = planes * block.expansion
    layers += [block(self.inplanes, planes, **block_kwargs)
               for _ in range(1, blocks)]
    return nn.Sequential(*layers)

  def forward(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return self.fc(torch.flatten(x.mean((2, 3)), 1))


class ConvNormAct(nn.Module):
  """timm ConvNormAct: conv (bias-free, 'same' padding for odd kernels) ->
  BN -> optional ReLU; keys conv.*, bn.*."""

  def __init__(self, cin, cout, kernel=1, stride=1, dilation=1, groups=1,
               act=True):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, kernel, stride,
                          dilation * (kernel - 1) // 2, dilation, groups,
                          bias=False)
    self.bn = nn.BatchNorm2d(cout)
    self.act = nn.ReLU(inplace=True) if act else nn.Identity()

  def forward(self, x):
    return self.act(self.bn(self.conv(x)))


class SelectiveKernelAttn(nn.Module):
  """timm SelectiveKernelAttn: sum paths, GAP, 1x1 -> BN -> ReLU -> 1x1 to
  paths x C, softmax over paths."""

  def __init__(self, channels, num_paths, attn_channels):
    super().__init__()
    self.num_paths = num_paths
    self.fc_reduce = nn.Conv2d(channels, attn_channels, 1, bias=False)
    self.bn = nn.BatchNorm2d(attn_channels)
    self.act = nn.ReLU(inplace=True)
    self.fc_select = nn.Conv2d(attn_channels, channels * num_paths, 1,
                               bias=False)

  def forward(self, x):
    x = self.act(self.bn(self.fc_reduce(x.sum(1).mean((2, 3), keepdim=True))))
    x = self.fc_select(x)
    b, c, h, w = x.shape
    return torch.softmax(x.view(b, self.num_paths, c // self.num_paths, h, w),
                         dim=1)


class SelectiveKernel(nn.Module):
  """timm SelectiveKernel with kernels (3, 5) kept as 3x3 (dilation 1, 2);
  `split_input` gives each path half the input channels."""

  def __init__(self, cin, cout, stride=1, groups=1, rd_ratio=1 / 16,
               rd_divisor=8, split_input=True):
    super().__init__()
    self.split_input = split_input
    self.cin = cin
    path_in = cin // 2 if split_input else cin
    self.paths = nn.ModuleList([
        ConvNormAct(path_in, cout, 3, stride, d, min(cout, groups))
        for d in (1, 2)])
    rd = make_divisible(cout * rd_ratio, rd_divisor, round_limit=0.9)
    self.attn = SelectiveKernelAttn(cout, 2, rd)

  def forward(self, x):
    inputs = (torch.split(x, self.cin // 2, 1) if self.split_input
              else [x, x])
    x = torch.stack([p(i) for p, i in zip(self.paths, inputs)], dim=1)
    return torch.sum(x * self.attn(x), dim=1)


class SelectiveKernelBasic(nn.Module):
  """timm sknet.SelectiveKernelBasic: SK conv (stride) -> 3x3 conv + BN."""
  expansion = 1

  def __init__(self, inplanes, planes, stride=1, downsample=None,
               sk_kwargs=None):
    super().__init__()
    self.conv1 = SelectiveKernel(inplanes, planes, stride, **sk_kwargs)
    self.conv2 = ConvNormAct(planes, planes, 3, act=False)
    self.act = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x):
    out = self.conv2(self.conv1(x))
    identity = x if self.downsample is None else self.downsample(x)
    return self.act(out + identity)


class SelectiveKernelBottleneck(nn.Module):
  """timm sknet.SelectiveKernelBottleneck: 1x1 -> SK conv (stride, groups)
  -> 1x1 + BN."""
  expansion = 4

  def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1,
               base_width=64, sk_kwargs=None):
    super().__init__()
    width = int(math.floor(planes * (base_width / 64))) * groups
    self.conv1 = ConvNormAct(inplanes, width, 1)
    self.conv2 = SelectiveKernel(width, width, stride, groups, **sk_kwargs)
    self.conv3 = ConvNormAct(width, planes * 4, 1, act=False)
    self.act = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x):
    out = self.conv3(self.conv2(self.conv1(x)))
    identity = x if self.downsample is None else self.downsample(x)
    return self.act(out + identity)


class LayerNorm2d(nn.LayerNorm):
  """timm LayerNorm2d: LayerNorm over the channels of NCHW, eps 1e-6."""

  def __init__(self, channels):
    super().__init__(channels, eps=1e-6)

  def forward(self, x):
    return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvMlp(nn.Module):
  """timm ConvMlp with a norm: 1x1 (bias) -> norm -> ReLU -> 1x1 (bias)."""

  def __init__(self, channels, hidden):
    super().__init__()
    self.fc1 = nn.Conv2d(channels, hidden, 1)
    self.norm = LayerNorm2d(hidden)
    self.act = nn.ReLU()
    self.fc2 = nn.Conv2d(hidden, channels, 1)

  def forward(self, x):
    return self.fc2(self.act(self.norm(self.fc1(x))))


class GlobalContext(nn.Module):
  """timm GlobalContext as 'gca': softmax attention pooling, then
  x + mlp_add(context), hidden = round(C / 8)."""

  def __init__(self, channels):
    super().__init__()
    self.conv_attn = nn.Conv2d(channels, 1, 1)
    self.mlp_add = ConvMlp(channels, make_divisible(channels / 8, 1))

  def forward(self, x):
    b, c, h, w = x.shape
    attn = torch.softmax(self.conv_attn(x).reshape(b, 1, h * w), dim=-1)
    context = (x.reshape(b, 1, c, h * w) @ attn.unsqueeze(3)).view(b, c, 1, 1)
    return x + self.mlp_add(context)


class ByobBottleneck(nn.Module):
  """timm byobnet.BottleneckBlock as gcresnet50t builds it: 1x1 -> 3x3
  (stride) -> GC -> 1x1, 1x1-conv projection shortcut when the shape
  changes."""

  def __init__(self, cin, cout, stride):
    super().__init__()
    mid = cout // 4
    self.shortcut = (ConvNormAct(cin, cout, 1, stride, act=False)
                     if cin != cout or stride != 1 else nn.Identity())
    self.conv1_1x1 = ConvNormAct(cin, mid, 1)
    self.conv2_kxk = ConvNormAct(mid, mid, 3, stride)
    self.attn = GlobalContext(mid)
    self.conv3_1x1 = ConvNormAct(mid, cout, 1, act=False)
    self.act = nn.ReLU(inplace=True)

  def forward(self, x):
    y = self.conv3_1x1(self.attn(self.conv2_kxk(self.conv1_1x1(x))))
    return self.act(y + self.shortcut(x))


class ClassifierHead(nn.Module):
  """timm ClassifierHead: GAP -> fc."""

  def __init__(self, channels, num_classes):
    super().__init__()
    self.fc = nn.Linear(channels, num_classes)

  def forward(self, x):
    return self.fc(x.mean((2, 3)))


class GCResNet50T(nn.Module):
  """timm byobnet 'gcresnet50t': tiered stem 24-32-64 whose third conv
  strides 2 (no pool), four stages of ByobBottleneck, head.fc."""

  def __init__(self, num_classes=1000, layers=(3, 4, 6, 3)):
    super().__init__()
    self.stem = nn.Sequential()
    for i, (cin, cout, stride) in enumerate(((3, 24, 2), (24, 32, 1),
                                             (32, 64, 2))):
      self.stem.add_module(f'conv{i + 1}', ConvNormAct(cin, cout, 3, stride))
    stages, cin = [], 64
    for i, (depth, cout) in enumerate(zip(layers, (256, 512, 1024, 2048))):
      blocks = []
      for j in range(depth):
        blocks.append(ByobBottleneck(cin, cout, 2 if i and not j else 1))
        cin = cout
      stages.append(nn.Sequential(*blocks))
    self.stages = nn.Sequential(*stages)
    self.head = ClassifierHead(2048, num_classes)

  def forward(self, x):
    return self.head(self.stages(self.stem(x)))


def _resnet_d(layers, stem_type='deep', **kw):
  return ResNet(Bottleneck, layers, stem_type=stem_type, stem_width=32,
                avg_down=True, **kw)


_SK_BASIC = dict(rd_ratio=1 / 8, rd_divisor=16, split_input=True)
_SK_BOTTLENECK = dict(rd_ratio=1 / 16, rd_divisor=32, split_input=False)


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
    # timm's ResNet-D / -T attention networks.
    'resnet26d': lambda **kw: _resnet_d([2, 2, 2, 2], **kw),
    'resnet50d': lambda **kw: _resnet_d([3, 4, 6, 3], **kw),
    'resnet101d': lambda **kw: _resnet_d([3, 4, 23, 3], **kw),
    'seresnext26d_32x4d': lambda **kw: _resnet_d(
        [2, 2, 2, 2], groups=32, base_width=4, attn='se', **kw),
    'seresnext50_32x4d': lambda **kw: ResNet(
        Bottleneck, [3, 4, 6, 3], groups=32, base_width=4, attn='se', **kw),
    'ecaresnet26t': lambda **kw: _resnet_d(
        [2, 2, 2, 2], 'deep_tiered', attn='eca', **kw),
    'ecaresnet50d': lambda **kw: _resnet_d([3, 4, 6, 3], attn='eca', **kw),
    'ecaresnet50t': lambda **kw: _resnet_d(
        [3, 4, 6, 3], 'deep_tiered', attn='eca', **kw),
    'ecaresnet101d': lambda **kw: _resnet_d([3, 4, 23, 3], attn='eca', **kw),
    'skresnet18': lambda **kw: ResNet(
        SelectiveKernelBasic, [2, 2, 2, 2], sk_kwargs=_SK_BASIC, **kw),
    'skresnet34': lambda **kw: ResNet(
        SelectiveKernelBasic, [3, 4, 6, 3], sk_kwargs=_SK_BASIC, **kw),
    'skresnext50_32x4d': lambda **kw: ResNet(
        SelectiveKernelBottleneck, [3, 4, 6, 3], groups=32, base_width=4,
        sk_kwargs=_SK_BOTTLENECK, **kw),
    'gcresnet50t': GCResNet50T,
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

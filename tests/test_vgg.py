"""VGG-16 (flax_attn/models/vgg.py): torchvision's parameter counts, logits
equal to a PyTorch VGG with torchvision's layout and key names under the same
weights (imported by weights.import_torchvision_vgg), attention plugged in."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn as tnn

import flax_attn
from flax_attn import report, weights
from flax_attn.errors import CheckpointError
from flax_attn.attention.se import reduced_channels
from flax_attn.models.vgg import adaptive_avg_pool_to


@pytest.mark.parametrize('name, params', [('vgg16', 138_357_544),
                                          ('vgg16_bn', 138_365_992)])
def test_torchvision_parameter_counts_and_macs(name, params):
  model = flax_attn.create_model(name, num_classes=1000)
  assert report.count_params(model, 32) == params       # eval_shape only
  # torchvision's table: 15.47 GFLOPS (multiply-adds).
  assert report.count_macs(model, 224) == pytest.approx(15.47e9, rel=1e-3)


class TorchVGG(tnn.Module):
  """torchvision.models.VGG's layout and state-dict keys (torchvision is not
  a test dependency): features.N, avgpool, classifier.0/3/6."""

  def __init__(self, batch_norm, hidden, num_classes):
    super().__init__()
    layers, cin = [], 3
    for convs, width in zip((2, 2, 3, 3, 3), (64, 128, 256, 512, 512)):
      for _ in range(convs):
        layers.append(tnn.Conv2d(cin, width, 3, padding=1))
        if batch_norm:
          layers.append(tnn.BatchNorm2d(width))
        layers.append(tnn.ReLU(inplace=True))
        cin = width
      layers.append(tnn.MaxPool2d(2, 2))
    self.features = tnn.Sequential(*layers)
    self.avgpool = tnn.AdaptiveAvgPool2d((7, 7))
    self.classifier = tnn.Sequential(
        tnn.Linear(512 * 7 * 7, hidden), tnn.ReLU(True), tnn.Dropout(),
        tnn.Linear(hidden, hidden), tnn.ReLU(True), tnn.Dropout(),
        tnn.Linear(hidden, num_classes))

  def forward(self, x):
    x = self.avgpool(self.features(x))
    return self.classifier(torch.flatten(x, 1))


@pytest.mark.parametrize('name, size', [
    ('vgg16', 32),      # a 1x1 map, repeated 49 times by the 7x7 pool
    ('vgg16_bn', 80)])  # a 2x2 map: overlapping adaptive bins
def test_logits_equal_torchvision_layout(name, size):
  torch.manual_seed(0)
  net = TorchVGG(name.endswith('_bn'), hidden=64, num_classes=10)
  with torch.no_grad():
    for module in net.modules():
      if isinstance(module, tnn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.2, 0.2)
        module.running_mean.uniform_(-0.2, 0.2)
        module.running_var.uniform_(0.5, 1.5)
  net.eval()
  images = np.random.default_rng(0).standard_normal(
      (2, 3, size, size)).astype(np.float32)
  with torch.no_grad():
    want = net(torch.from_numpy(images)).numpy()
  variables, imported = weights.import_torchvision_vgg(
      name, net.state_dict(), hidden=64)
  assert not imported.fresh and not imported.unused
  model = flax_attn.create_model(name, num_classes=10, hidden=64)
  got = jax.jit(model.apply)(variables, images.transpose(0, 2, 3, 1))
  np.testing.assert_allclose(got, want, rtol=1e-4,
                             atol=1e-4 * np.abs(want).max())


def test_adaptive_pool_matches_torch():
  x = np.random.default_rng(1).standard_normal((2, 5, 3, 4)).astype(
      np.float32)
  want = torch.nn.functional.adaptive_avg_pool2d(
      torch.from_numpy(x.transpose(0, 3, 1, 2)), 7).numpy()
  np.testing.assert_allclose(adaptive_avg_pool_to(jnp.asarray(x), 7),
                             want.transpose(0, 2, 3, 1), rtol=1e-6,
                             atol=1e-6)


def test_cifar_variant_takes_block_and_stage_attention():
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  count = lambda **kw: report.count_params(
      flax_attn.create_model('vgg16_bn_cifar', 10, **kw), 32)
  plain = count()
  assert plain == 14_728_266      # 13 convs + 13 BN + 512 -> 10
  # SE (r = 16, hidden rounded to 8s, biases) after each of the 5 stages.
  hidden = lambda c: reduced_channels(c, 16, 8)
  assert hidden(64) == 8 and hidden(512) == 32
  se = sum(2 * c * hidden(c) + hidden(c) + c for c in (64, 128, 256, 512, 512))
  assert count(attn='se') - plain == se
  model = flax_attn.create_model('vgg16_bn_cifar', 10, attn='se',
                                 stage_attn='mgan', stage_attn_after=(1, 2))
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert {'stage1_attn', 'stage2_attn', 'stage5_attn_block'} <= set(
      variables['params'])
  assert 'stage3_attn' not in variables['params']
  logits = jax.eval_shape(model.apply, variables, x)
  chex.assert_shape(logits, (2, 10))


def test_cifar_variant_takes_the_convolutions():
  """torchvision's ImageNet file for the CIFAR variant: all of `features`,
  a fresh GAP + FC head (left to the training run with init_fresh=False)."""
  net = TorchVGG(batch_norm=True, hidden=8, num_classes=1000)
  variables, imported = weights.import_torchvision_vgg(
      'vgg16_bn_cifar', net.state_dict(), num_classes=10, init_fresh=False)
  assert imported.fresh == ('params/head/fc/bias', 'params/head/fc/kernel')
  assert len(imported.loaded) == 13 * 2 + 13 * 4
  assert all(k.startswith('classifier.') for k in imported.unused)
  np.testing.assert_array_equal(
      variables['params']['stage5_conv2']['kernel'],
      net.features[40].weight.detach().numpy().transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
      variables['batch_stats']['stage5_bn2']['var'],
      net.features[41].running_var.numpy())


def test_import_errors_name_the_key():
  net_keys = weights.import_torchvision_vgg
  with pytest.raises(CheckpointError, match='not a VGG'):
    net_keys('resnet18', {'classifier.6.weight': np.zeros((10, 4))})
  with pytest.raises(CheckpointError,
                     match="no key 'features.0.weight'"):
    net_keys('vgg16_cifar', {}, num_classes=10)

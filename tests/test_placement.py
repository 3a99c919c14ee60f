"""Where a block attention sits, shown with numbers (SPEC.md: after the last
norm of the main path, before the residual addition).

A recording attention defined only here (never registered) sows its input
and multiplies it by a learned per-channel gate, so a misplaced module
changes the block's output. Each block runs in eval mode with random
parameters and BatchNorm statistics; the recorded input and the block's
output are compared with a NumPy forward pass written from the block's
definition (torchvision / timm), using the same parameters.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numpy_reference as npr
from flax_attn.models.layers import make_conv, make_norm
from flax_attn.models.resnet import (BasicBlock, Bottleneck,
                                     Res2NetBasicBlock, Res2NetBottleneck)


class RecordingGate(nn.Module):
  """x * g with a per-channel parameter g; records x."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    self.sow('intermediates', 'input', x)
    gate = self.param('gate', nn.initializers.ones, (x.shape[-1],))
    return (x * gate).astype(x.dtype)


def random_variables(module, x, seed=0):
  abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), x))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = str(path[-1])
    if 'var' in name or 'scale' in name or 'gate' in name:
      value = rng.uniform(0.5, 1.5, leaf.shape)
    elif len(leaf.shape) >= 2:
      value = rng.normal(0, 1 / np.sqrt(np.prod(leaf.shape[:-1])), leaf.shape)
    else:
      value = rng.normal(0, 0.3, leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def conv_bn(x, p, s, conv, bn, stride=1, groups=1):
  return npr.batch_norm(npr.conv(x, p[conv]['kernel'], stride=stride,
                                 groups=groups), p[bn], s[bn])


def shortcut(x, p, s, stride):
  if 'shortcut' not in p:
    return x
  return conv_bn(x, p['shortcut'], s['shortcut'], 'conv', 'bn', stride)


def multiscale(y, p, s, scale, stride, is_first):
  """Res2Net's hierarchical 3x3 (timm Bottle2neck): y_i = K_i(x_i +
  y_{i-1}); the last split passes (avg-pooled with the stride if first)."""
  splits = np.split(y, scale, axis=-1)
  outs, prev = [], None
  for i in range(scale - 1):
    inp = splits[i] if (i == 0 or is_first) else prev + splits[i]
    prev = npr.relu(conv_bn(inp, p, s, f'convs_{i}', f'bns_{i}', stride))
    outs.append(prev)
  outs.append(npr.avg_pool_3x3(splits[-1], stride) if is_first
              else splits[-1])
  return np.concatenate(outs, axis=-1)


def basic_main_path(x, p, s, stride):
  h = npr.relu(conv_bn(x, p, s, 'conv1', 'bn1', stride))
  return conv_bn(h, p, s, 'conv2', 'bn2')


def bottleneck_main_path(groups):
  def main_path(x, p, s, stride):
    h = npr.relu(conv_bn(x, p, s, 'conv1', 'bn1'))
    h = npr.relu(conv_bn(h, p, s, 'conv2', 'bn2', stride, groups))
    return conv_bn(h, p, s, 'conv3', 'bn3')
  return main_path


def res2net_main_path(scale, is_first):
  def main_path(x, p, s, stride):
    h = npr.relu(conv_bn(x, p, s, 'conv1', 'bn1'))
    h = multiscale(h, p['multiscale'], s['multiscale'], scale, stride,
                   is_first)
    return conv_bn(h, p, s, 'conv3', 'bn3')
  return main_path


def res2net_basic_main_path(scale, is_first):
  def main_path(x, p, s, stride):
    h = npr.relu(conv_bn(x, p, s, 'conv1', 'bn1', stride))
    h = multiscale(h, p['multiscale'], s['multiscale'], scale, 1, is_first)
    return conv_bn(h, p, s, 'conv3', 'bn3')
  return main_path


CASES = {
    # name: (block class, fields, input shape, stride, NumPy main path)
    'basic': (BasicBlock, dict(filters=8), (2, 6, 6, 4), 2, basic_main_path),
    'bottleneck': (Bottleneck, dict(filters=4), (2, 6, 6, 8), 2,
                   bottleneck_main_path(1)),
    'resnext': (Bottleneck, dict(filters=16, groups=4, base_width=8),
                (2, 5, 5, 32), 1, bottleneck_main_path(4)),
    'res2net_first': (Res2NetBottleneck, dict(filters=8, scale=4),
                      (2, 6, 6, 16), 2, res2net_main_path(4, True)),
    'res2net': (Res2NetBottleneck, dict(filters=8, scale=4), (2, 5, 5, 32),
                1, res2net_main_path(4, False)),
    'res2net_basic': (Res2NetBasicBlock, dict(filters=8, scale=4),
                      (2, 5, 5, 8), 1, res2net_basic_main_path(4, False)),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_attention_gets_last_norm_output_and_precedes_residual(case):
  block_cls, fields, shape, stride, main_path = CASES[case]
  block = block_cls(strides=stride, conv=make_conv(jnp.float32),
                    norm=make_norm(False, jnp.float32), attn=RecordingGate,
                    **fields)
  x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
  variables = random_variables(block, x)
  out, state = jax.jit(lambda v, y: block.apply(
      v, y, mutable=['intermediates']))(variables, x)
  p = jax.tree_util.tree_map(np.asarray, variables['params'])
  s = jax.tree_util.tree_map(np.asarray, variables['batch_stats'])
  xd = x.astype(np.float64)

  main = main_path(xd, p, s, stride)                 # up to the last norm
  recorded = np.asarray(state['intermediates']['attn']['input'][0])
  np.testing.assert_allclose(recorded, main, atol=1e-4, rtol=1e-4)
  expected = npr.relu(shortcut(xd, p, s, stride) + main * p['attn']['gate'])
  np.testing.assert_allclose(out, expected, atol=1e-4, rtol=1e-4)
  # The gate matters: without it (or after the addition) the output differs.
  assert not np.allclose(out, npr.relu(shortcut(xd, p, s, stride) + main),
                         atol=1e-3)

"""CSM (Yang, Zhang, Yang): channel attention (Eq. 3-4) and DANet-style
position attention (Eq. 5) against a NumPy transcription; orders, stage
selection, dot_product_attention layouts, counts, bf16."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flax_attn
from flax_attn.attention.csm import ChannelSpatialModule, attend_positions
from helpers import (model_param_count, param_count, random_variables,
                     sigmoid, to_numpy)


def ref_channel(x, p):
  """Eq. 3-4: M_c = sigmoid(W2 ReLU(W1 GAP(x))); M_c * x."""
  avg = x.mean(axis=(1, 2))
  weights = sigmoid(np.maximum(avg @ p['fc1']['kernel'], 0) @ p['fc2']['kernel'])
  return x * weights[:, None, None, :]


def ref_softmax_attend(q, k, v):
  scores = q @ np.swapaxes(k, 1, 2)                       # (N, L, L): B_i . C_j
  scores = np.exp(scores - scores.max(-1, keepdims=True))
  s = scores / scores.sum(-1, keepdims=True)              # softmax over j
  return s @ v


def ref_position(a, p):
  """Eq. 5 as DANet: gamma * sum_j softmax_j(B_i . C_j) D_j + A."""
  n, h, w, c = a.shape
  conv = lambda name: (a @ p[name]['kernel'][0, 0] + p[name]['bias']).reshape(
      n, h * w, -1)
  out = ref_softmax_attend(conv('query'), conv('key'), conv('value'))
  return p['gamma'][0] * out.reshape(a.shape) + a


def ref_csm(x, p, mode):
  if mode == 'channel_first':
    return ref_position(ref_channel(x, p['channel']), p['position'])
  if mode == 'spatial_first':
    return ref_channel(ref_position(x, p['position']), p['channel'])
  if mode == 'channel_only':
    return ref_channel(x, p['channel'])
  return ref_position(x, p['position'])


def csm_param_count(c, channel=True, position=True):
  d = c // 8
  return (2 * c * (c // 16) if channel else 0) + (
      2 * (c * d + d) + c * c + c + 1 if position else 0)


class CSMValueTest(chex.TestCase):

  @chex.variants(with_jit=True)
  def test_channel_first_matches_equations(self):
    module = ChannelSpatialModule()
    variables, x = random_variables(module, (2, 5, 5, 32))
    out = self.variant(module.apply)(variables, x)
    chex.assert_shape(out, x.shape)
    chex.assert_trees_all_close(
        np.asarray(out), ref_csm(np.asarray(x), to_numpy(variables['params']),
                                 'channel_first'), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('mode', ['spatial_first', 'channel_only',
                                  'spatial_only'])
def test_table1_orders_match_equations_and_counts(mode):
  module = ChannelSpatialModule(mode=mode)
  variables, x = random_variables(module, (2, 4, 4, 32))
  chex.assert_trees_all_close(
      np.asarray(jax.jit(module.apply)(variables, x)),
      ref_csm(np.asarray(x), to_numpy(variables['params']), mode),
      atol=1e-4, rtol=1e-4)
  assert param_count(variables['params']) == csm_param_count(
      32, channel=mode != 'spatial_only', position=mode != 'channel_only')


@pytest.mark.parametrize('channels,qk_reduction', [(16, 8), (10, 3)])
@pytest.mark.parametrize('layout', ['padded', 'heads'])
def test_dot_product_attention_layouts(channels, qk_reduction, layout):
  # 'heads' is the cuDNN layout (value split into heads sharing q, k), here
  # run by XLA; (10, 3) needs value padding to 4 heads of width 3.
  rng = np.random.RandomState(0)
  width = channels // qk_reduction
  q, k = rng.randn(2, 12, width), rng.randn(2, 12, width)
  v = rng.randn(2, 12, channels)
  out = attend_positions(jnp.asarray(q, jnp.float32), jnp.asarray(k, jnp.float32),
                         jnp.asarray(v, jnp.float32), implementation='xla',
                         layout=layout)
  chex.assert_trees_all_close(np.asarray(out), ref_softmax_attend(q, k, v),
                              atol=1e-5, rtol=1e-5)


def test_gamma_starts_at_zero_so_position_attention_is_identity():
  module = ChannelSpatialModule(mode='spatial_only')
  x = jnp.asarray(np.random.RandomState(0).randn(2, 4, 4, 16), jnp.float32)
  variables = jax.jit(module.init)(jax.random.key(0), x)
  assert float(variables['params']['position']['gamma'][0]) == 0.0
  chex.assert_trees_all_close(module.apply(variables, x), x)


def test_max_positions_skips_large_maps():
  module = ChannelSpatialModule(max_positions=16)
  small = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 4, 4, 32)))
  large = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 5, 4, 32)))
  assert 'position' in small['params'] and 'position' not in large['params']
  assert 'channel' in large['params']


def test_position_stages_selects_resnet_stages():
  shape = (1, 32, 32, 3)
  model = flax_attn.create_model('csm_resnet18', 100, stem='small',
                                 attn_kwargs=dict(position_stages=(3, 4)))
  params = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                             jnp.zeros(shape)))['params']
  for stage in (1, 2, 3, 4):
    for block in (0, 1):
      attn = params[f'stage{stage}_block{block}']['attn']
      assert ('position' in attn) == (stage >= 3), (stage, block)
      assert 'channel' in attn
  base = model_param_count(flax_attn.create_model('resnet18', 100,
                                                  stem='small'), shape)
  widths = (64, 128, 256, 512)
  assert param_count(params) - base == sum(
      2 * csm_param_count(c, position=i >= 2) for i, c in enumerate(widths))


def test_position_stages_outside_a_stage_is_an_error():
  with pytest.raises(ValueError, match='max_positions instead'):
    ChannelSpatialModule(position_stages=(3,)).init(jax.random.key(0),
                                                    jnp.zeros((1, 4, 4, 16)))


def test_named_models_counts():
  shape = (1, 32, 32, 3)
  for name, base_name, kwargs, widths in [
      ('csm_resnet18', 'resnet18', {}, (64, 128, 256, 512)),
      ('csm_wrn18', 'resnet18', dict(widen_factor=1.5), (96, 192, 384, 768))]:
    base = model_param_count(flax_attn.create_model(base_name, **kwargs), shape)
    ours = model_param_count(flax_attn.create_model(name), shape)
    assert ours - base == sum(2 * csm_param_count(c) for c in widths), name
  assert {'csm_resnet34', 'csm_resnet50'} <= set(flax_attn.list_models('csm_*'))


def test_bf16_compute_keeps_fp32_params():
  module = ChannelSpatialModule()
  variables, x = random_variables(module, (2, 4, 4, 32))
  module16 = ChannelSpatialModule(dtype=jnp.bfloat16)
  shapes16 = jax.eval_shape(module16.init, jax.random.key(0), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(shapes16))
  out16 = jax.jit(module16.apply)(variables, x)
  assert out16.dtype == jnp.float32
  ref = jax.jit(module.apply)(variables, x)
  chex.assert_trees_all_close(out16, ref, atol=0.05 * float(jnp.abs(ref).max()))
  assert jax.eval_shape(module.apply, variables,
                        x.astype(jnp.bfloat16)).dtype == jnp.bfloat16


@pytest.mark.parametrize('kwargs,match', [
    (dict(mode='channel'), 'valid: channel_first'),
    (dict(implementation='flash'), "valid: 'blockwise', 'xla', 'cudnn', None")])
def test_bad_values_fail_in_one_line(kwargs, match):
  with pytest.raises(ValueError, match=match):
    ChannelSpatialModule(**kwargs).init(jax.random.key(0),
                                        jnp.zeros((1, 4, 4, 16)))

"""MGAN (Wu & Tanprasert 2023): MSA (Alg. 1), MCA (Alg. 2), MA (Alg. 3
steps 1-8) and the head (steps 9-12) against a NumPy transcription."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flax_attn
from flax_attn.attention.mgan import MultiGrainedAttention
from flax_attn.models import HEADS
from helpers import (model_param_count, param_count, random_variables,
                     sigmoid, to_numpy)


def ref_depthwise(x, kernel, bias):
  k = kernel.shape[0]
  n, h, w, c = x.shape
  xp = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
  y = np.zeros_like(x)
  for dy in range(k):
    for dx in range(k):
      y += xp[:, dy:dy + h, dx:dx + w] * kernel[dy, dx, 0]
  return y + bias


def ref_msa(x, p):
  """Alg. 1: S = DWConv_K(I); [max_c S, mean_c S]; 1x1 conv; sigmoid; * I."""
  s = ref_depthwise(x, p['depthwise']['kernel'], p['depthwise']['bias'])
  pooled = np.concatenate([s.max(-1, keepdims=True), s.mean(-1, keepdims=True)],
                          -1)
  mask = sigmoid(pooled @ p['mask_conv']['kernel'][0, 0] + p['mask_conv']['bias'])
  return x * mask


def ref_mca(x, p):
  """Alg. 2 / Eq. 6: sigmoid(MLP(max) + MLP(avg)) * Conv1x1(x)."""
  mlp = lambda v: np.maximum(v @ p['w0']['kernel'], 0) @ p['w1']['kernel']
  weights = sigmoid(mlp(x.max(axis=(1, 2))) + mlp(x.mean(axis=(1, 2))))
  fg = x @ p['global_conv']['kernel'][0, 0] + p['global_conv']['bias']
  return weights[:, None, None, :] * fg


def ref_features(x, p, n_branches=3):
  """Alg. 3 steps 1-8 without the projection: concat_i MCA(MSA_i(x))."""
  return np.concatenate([ref_mca(ref_msa(x, p[f'msa{i}']), p['mca'])
                         for i in range(n_branches)], -1)


def ref_ma(x, p):
  f_cat = ref_features(x, p['features'])
  return f_cat @ p['fuse']['kernel'][0, 0] + p['fuse']['bias']


def ma_param_count(c, kernels=(3, 5, 7)):
  """Depthwise K^2 C + C, 2->1 conv 2 + 1, MLP 2 C (C//16), Conv1x1 C^2 + C,
  fusion 3C -> C: 3C^2 + C."""
  branches = sum(k * k * c + c + 3 for k in kernels)
  return branches + 2 * c * (c // 16) + c * c + c + len(kernels) * c * c + c


class MGANValueTest(chex.TestCase):

  @chex.variants(with_jit=True)
  def test_ma_matches_algorithms(self):
    module = MultiGrainedAttention()
    variables, x = random_variables(module, (2, 6, 6, 32))
    out = self.variant(module.apply)(variables, x)
    chex.assert_shape(out, x.shape)
    chex.assert_trees_all_close(np.asarray(out),
                                ref_ma(np.asarray(x), to_numpy(variables['params'])),
                                atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('kernels', [(3, 3, 3), (5, 5, 5), (7, 7, 7), (3, 5, 7)])
def test_table4_kernel_sets_param_counts(kernels):
  module = MultiGrainedAttention(kernel_sizes=kernels)
  assert model_param_count(module, (1, 8, 8, 64)) == ma_param_count(64, kernels)


def test_head_matches_steps_9_to_12():
  head = HEADS.get('mgan')(num_classes=5)
  variables, x = random_variables(head, (2, 4, 4, 16))
  logits, feats = jax.jit(head.apply)(variables, x)
  p = to_numpy(variables['params'])
  xn = np.asarray(x)
  f_new = np.concatenate([ref_features(xn, p['features']),           # step 9
                          xn @ p['feature_conv']['kernel'][0, 0]
                          + p['feature_conv']['bias']], -1)
  conv = f_new @ p['conv']['kernel'][0, 0] + p['conv']['bias']      # step 10
  pooled = conv.max(axis=(1, 2))
  expected = pooled @ p['fc']['kernel'] + p['fc']['bias']             # step 11
  chex.assert_trees_all_close(np.asarray(logits), expected, atol=1e-4,
                              rtol=1e-4)
  chex.assert_shape(feats['pre_logits'], (2, 16))
  c = 16
  assert param_count(variables['params']) == (
      ma_param_count(c) - (3 * c * c + c)   # steps 1-8 without the fusion
      + c * c + c + 4 * c * c + c + c * 5 + 5)


def test_mgan_resnet18_places_ma_after_stages_1_to_3():
  shape = (1, 32, 32, 3)
  base = model_param_count(flax_attn.create_model('resnet18', 10,
                                                  stem='small'), shape)
  model = flax_attn.create_model('mgan_resnet18', 10, stem='small')
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                                jnp.zeros(shape)))
  names = set(variables['params'])
  assert {'stage1_attn', 'stage2_attn', 'stage3_attn'} <= names
  assert 'stage4_attn' not in names
  assert not any('attn' in str(path) for path, _ in
                 jax.tree_util.tree_flatten_with_path(
                     variables['params']['stage1_block0'])[0])
  added = param_count(variables['params']) - base
  assert added == sum(ma_param_count(c) for c in (64, 128, 256)) == 394_267


def test_named_models_and_table4_override():
  shape = (1, 32, 32, 3)
  base = model_param_count(flax_attn.create_model('res2net18'), shape)
  for kernels in ((3, 3, 3), (3, 5, 7)):
    model = flax_attn.create_model(
        'mgan_res2net18', stage_attn_kwargs=dict(kernel_sizes=kernels))
    assert model_param_count(model, shape) - base == sum(
        ma_param_count(c, kernels) for c in (64, 128, 256))
  for name in ('mgan_resnet34', 'mgan_resnet50', 'mgan_resnet101',
               'mgan_res2net34', 'mgan_res2net50', 'mgan_res2net101'):
    assert name in flax_attn.list_models('mgan_*')


def test_bf16_compute_keeps_fp32_params():
  module = MultiGrainedAttention()
  variables, x = random_variables(module, (2, 6, 6, 32))
  module16 = MultiGrainedAttention(dtype=jnp.bfloat16)
  shapes16 = jax.eval_shape(module16.init, jax.random.key(0), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(shapes16))
  out16 = jax.jit(module16.apply)(variables, x)
  assert out16.dtype == jnp.float32
  ref = jax.jit(module.apply)(variables, x)
  chex.assert_trees_all_close(out16, ref, atol=0.05 * float(jnp.abs(ref).max()))


def test_maps_are_sown_and_bad_kernels_fail():
  module = MultiGrainedAttention()
  variables, x = random_variables(module, (2, 4, 4, 16))
  _, state = module.apply(variables, x, mutable=['intermediates'])
  maps = state['intermediates']['features']
  chex.assert_shape(maps['spatial_map0'][0], (2, 4, 4, 1))
  chex.assert_shape(maps['channel_weights2'][0], (2, 1, 1, 16))
  with pytest.raises(ValueError, match='odd positive'):
    MultiGrainedAttention(kernel_sizes=(3, 4, 5)).init(jax.random.key(0), x)

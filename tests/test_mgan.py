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
import numpy_reference as npr
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


# --------------------------------------------------------------------------
# Round 2: the literal reading, per-stage kernels, placement, the head's K.
# --------------------------------------------------------------------------


def ref_features_literal(x, p, n_branches, mlp_relu):
  """Alg. 2/3 literally: Cw from I (steps 1-5), F_G = Conv1x1(I) (step 6),
  F_channel = Cw * F_G computed once (Alg. 3 step 4); F_i = M_i * F_channel
  with branch i's spatial map M_i (Alg. 1 step 5)."""
  mca = p['mca']
  act = (lambda v: np.maximum(v, 0)) if mlp_relu else (lambda v: v)
  mlp = lambda v: act(v @ mca['w0']['kernel']) @ mca['w1']['kernel']
  weights = sigmoid(mlp(x.max(axis=(1, 2))) + mlp(x.mean(axis=(1, 2))))
  fg = x @ mca['global_conv']['kernel'][0, 0] + mca['global_conv']['bias']
  channel_features = weights[:, None, None, :] * fg
  branches = []
  for i in range(n_branches):
    q = p[f'msa{i}']
    s = npr.conv(x, q['depthwise']['kernel'], q['depthwise']['bias'],
                 groups=x.shape[-1])                         # Alg. 1 step 2
    pooled = np.concatenate([s.max(-1, keepdims=True),
                             s.mean(-1, keepdims=True)], -1)
    mask = sigmoid(pooled @ q['mask_conv']['kernel'][0, 0]
                   + q['mask_conv']['bias'])
    branches.append(mask * channel_features)
  return np.concatenate(branches, -1)


@pytest.mark.parametrize('mlp_relu,combine,kernels', [
    (False, 'conv', (3, 5, 7)),   # Alg. 2 step 3's w1(w0(.)), 1x1 fusion
    (True, 'mean', (5,)),         # one kernel per stage, no fusion conv
])
def test_literal_reading_matches_algorithms(mlp_relu, combine, kernels):
  module = MultiGrainedAttention(kernel_sizes=kernels, channel_input='input',
                                 mlp_relu=mlp_relu, combine=combine)
  variables, x = random_variables(module, (2, 6, 5, 32))
  out = jax.jit(module.apply)(variables, x)
  p = to_numpy(variables['params'])
  f_cat = ref_features_literal(np.asarray(x, np.float64), p['features'],
                               len(kernels), mlp_relu)
  if combine == 'conv':
    expected = f_cat @ p['fuse']['kernel'][0, 0] + p['fuse']['bias']
  else:
    expected = f_cat.reshape(*f_cat.shape[:-1], len(kernels), 32).mean(-2)
    assert 'fuse' not in p
  chex.assert_trees_all_close(np.asarray(out), expected, atol=1e-4,
                              rtol=1e-4)
  # The reading changes the function, not the parameters.
  assert param_count(variables['params']) == (
      ma_param_count(32, kernels) - (0 if combine == 'conv'
                                     else len(kernels) * 32 * 32 + 32))


def test_readings_parameter_counts_and_per_stage_kernels():
  """Added parameters on ResNet-18 for each named reading (1000 classes):
  per stage C = 64, 128, 256; 'branch_per_stage' and 'input_per_stage' put
  K = 3, 5, 7 after conv2_x, conv3_x, conv4_x."""
  shape = (1, 32, 32, 3)
  base = model_param_count(flax_attn.create_model('resnet18'), shape)
  per_stage = lambda c, k, fuse: (k * k * c + c + 3 + 2 * c * (c // 16)
                                  + c * c + c + fuse * (c * c + c))
  expected = {
      'branch': sum(ma_param_count(c) for c in (64, 128, 256)),
      'input_linear': sum(ma_param_count(c) for c in (64, 128, 256)),
      'branch_per_stage': sum(per_stage(c, k, 1) for c, k in
                              ((64, 3), (128, 5), (256, 7))),
      'input_per_stage': sum(per_stage(c, k, 0) for c, k in
                             ((64, 3), (128, 5), (256, 7))),
  }
  assert expected == {'branch': 394_267, 'input_linear': 394_267,
                      'branch_per_stage': 200_457, 'input_per_stage': 113_993}
  for reading, added in expected.items():
    model = flax_attn.create_model('mgan_resnet18', reading=reading)
    params = jax.eval_shape(lambda m=model: m.init(
        jax.random.key(0), jnp.zeros(shape)))['params']
    assert param_count(params) - base == added, reading
    if reading.endswith('per_stage'):
      for stage, k, c in ((1, 3, 64), (2, 5, 128), (3, 7, 256)):
        chex.assert_shape(params[f'stage{stage}_attn']['features']['msa0'][
            'depthwise']['kernel'], (k, k, 1, c))
        assert 'msa1' not in params[f'stage{stage}_attn']['features']


def test_bad_reading_and_per_stage_length_fail_in_one_line():
  with pytest.raises(ValueError, match="valid: branch, input") as info:
    flax_attn.create_model('mgan_resnet18', reading='literal')
  assert '\n' not in str(info.value)
  model = flax_attn.create_model('mgan_resnet18',
                                 stage_attn_per_stage=({'kernel_sizes': (3,)},))
  with pytest.raises(ValueError, match='one entry per stage'):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  for kwargs, words in ((dict(channel_input='stage'), 'valid: branch, input'),
                        (dict(combine='sum'), 'valid: conv, mean')):
    with pytest.raises(ValueError, match=words):
      MultiGrainedAttention(**kwargs).init(jax.random.key(0),
                                           jnp.zeros((1, 4, 4, 8)))


def np_basic_block(x, p, s, stride):
  h = npr.relu(npr.batch_norm(npr.conv(x, p['conv1']['kernel'], stride=stride),
                              p['bn1'], s['bn1']))
  h = npr.batch_norm(npr.conv(h, p['conv2']['kernel']), p['bn2'], s['bn2'])
  residual = x
  if 'shortcut' in p:
    residual = npr.batch_norm(
        npr.conv(x, p['shortcut']['conv']['kernel'], stride=stride),
        p['shortcut']['bn'], s['shortcut']['bn'])
  return npr.relu(h + residual)


def positive_batch_stats(variables, seed=1):
  rng = np.random.default_rng(seed)
  stats = jax.tree_util.tree_map_with_path(
      lambda path, leaf: jnp.asarray(
          rng.uniform(0.5, 1.5, leaf.shape) if 'var' in str(path[-1])
          else rng.normal(0, 0.3, leaf.shape), leaf.dtype),
      variables['batch_stats'])
  return {**variables, 'batch_stats': stats}


def test_stage_attention_output_feeds_the_next_stage():
  """A two-stage MGAN-ResNet (per-stage kernels 3, 5): stage 1's block
  output goes through MA (checked against Alg. 1-3 in NumPy) and MA's
  output, not the block's, is what stage 2's first block computes on."""
  model = flax_attn.create_model(
      'mgan_resnet18', 5, reading='branch_per_stage', stem='small',
      stage_sizes=(1, 1), stage_widths=(16, 32), stem_width=8)
  variables, images = random_variables(model, (2, 8, 8, 3))
  variables = positive_batch_stats(variables)
  _, state = jax.jit(lambda v, x: model.apply(
      v, x, capture_intermediates=True, mutable=['intermediates']))(
          variables, images)
  seen = {name: np.asarray(state['intermediates'][name]['__call__'][0],
                           np.float64)
          for name in ('stage1_block0', 'stage1_attn', 'stage2_block0',
                       'stage2_attn')}
  p, s = to_numpy(variables['params']), to_numpy(variables['batch_stats'])
  for stage, block in ((1, 'stage1_block0'), (2, 'stage2_block0')):
    q = p[f'stage{stage}_attn']
    kernel = q['features']['msa0']['depthwise']['kernel']
    assert kernel.shape[0] == 2 * stage + 1                 # K = 3, then 5
    expected = (ref_features(seen[block], q['features'], n_branches=1)
                @ q['fuse']['kernel'][0, 0] + q['fuse']['bias'])
    chex.assert_trees_all_close(seen[f'stage{stage}_attn'], expected,
                                atol=2e-4, rtol=2e-4)
  next_stage = np_basic_block(seen['stage1_attn'], p['stage2_block0'],
                              s['stage2_block0'], stride=2)
  chex.assert_trees_all_close(seen['stage2_block0'], next_stage, atol=2e-4,
                              rtol=2e-4)
  # Fed the block's output instead, stage 2 would compute something else.
  assert not np.allclose(np_basic_block(seen['stage1_block0'],
                                        p['stage2_block0'], s['stage2_block0'],
                                        stride=2), seen['stage2_block0'],
                         atol=1e-2)


def test_head_with_3x3_conv_and_other_width():
  """Steps 9-12 with Alg. 3 step 10's K = 3 and 12 output channels (C = 16),
  on the literal reading: the 3x3 conv pads 1 (PyTorch's) over 4C."""
  head = HEADS.get('mgan')(num_classes=5, conv_kernel_size=3, width=12,
                           channel_input='input', mlp_relu=False)
  variables, x = random_variables(head, (2, 5, 4, 16))
  logits, feats = jax.jit(head.apply)(variables, x)
  p = to_numpy(variables['params'])
  xn = np.asarray(x, np.float64)
  f_new = np.concatenate([ref_features_literal(xn, p['features'], 3, False),
                          xn @ p['feature_conv']['kernel'][0, 0]
                          + p['feature_conv']['bias']], -1)       # step 9
  chex.assert_shape(p['conv']['kernel'], (3, 3, 64, 12))
  conv = npr.conv(f_new, p['conv']['kernel'], p['conv']['bias'])  # step 10
  pooled = conv.max(axis=(1, 2))
  expected = pooled @ p['fc']['kernel'] + p['fc']['bias']         # step 11
  chex.assert_trees_all_close(np.asarray(feats['pre_logits']), pooled,
                              atol=1e-4, rtol=1e-4)
  chex.assert_trees_all_close(np.asarray(logits), expected, atol=1e-4,
                              rtol=1e-4)

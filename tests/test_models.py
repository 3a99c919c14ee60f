"""Backbones, the model registry and the attention plug-in contract."""
import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flax_attn
from flax_attn.models import ResNet
from helpers import (abstract_variables, init_variables, model_param_count,
                     param_count)

# torchvision / timm parameter counts at 1000 classes (their model summaries).
REFERENCE_PARAMS = {
    'resnet18': 11_689_512,
    'resnet34': 21_797_672,
    'resnet50': 25_557_032,
    'resnet101': 44_549_160,
    'resnet152': 60_192_808,
    'resnext50_32x4d': 25_028_904,
    'resnext101_32x8d': 88_791_336,
    'res2net50_26w_4s': 25_699_120,
    'res2net101_26w_4s': 45_206_688,
    'wide_resnet50_2': 68_883_240,
    'wide_resnet101_2': 126_886_696,
    'seresnet50': 28_088_024,
    # timm 1.0.31, sum(p.numel() for p in timm.create_model(name).parameters())
    'resnet26d': 16_014_408,
    'resnet50d': 25_576_264,
    'resnet101d': 44_568_392,
    'seresnext26d_32x4d': 16_809_512,
    'seresnext50_32x4d': 27_559_896,
    'ecaresnet26t': 16_011_916,
    'ecaresnet50d': 25_576_350,
    'ecaresnet50t': 25_573_814,
    'ecaresnet101d': 44_568_563,
    'skresnext50_32x4d': 27_479_784,
    'gcresnet50t': 25_897_080,
}


@pytest.mark.parametrize('name', sorted(REFERENCE_PARAMS))
def test_parameter_count_matches_torchvision_and_timm(name):
  model = flax_attn.create_model(name, num_classes=1000)
  assert model_param_count(model) == REFERENCE_PARAMS[name]


def test_cifar_resnet_parameter_counts():
  # He et al. 2016 Table 6 (option A shortcuts): 0.27M, 0.85M, 1.7M.
  counts = {n: model_param_count(flax_attn.create_model(n, 10), (1, 32, 32, 3))
            for n in ('resnet20', 'resnet56', 'resnet110', 'resnet164')}
  assert counts == {'resnet20': 269_722, 'resnet56': 853_018,
                    'resnet110': 1_727_962, 'resnet164': 1_704_154}
  # WRN-28-10: 36.5M (Zagoruyko & Komodakis 2016, Table 3).
  wrn = model_param_count(flax_attn.create_model('wrn28_10', 10),
                          (1, 32, 32, 3))
  assert wrn == 36_481_434


def test_se_parameters_follow_hu_2018():
  # Each SE block adds C*h + h + h*C + C parameters, h = C/16 rounded to 8.
  def se_params(c):
    h = max(8, int(c / 16 + 4) // 8 * 8)
    return 2 * c * h + h + c
  added = sum(n * se_params(4 * w) for n, w in
              zip((3, 4, 6, 3), (64, 128, 256, 512)))
  assert REFERENCE_PARAMS['seresnet50'] - REFERENCE_PARAMS['resnet50'] == added
  se18 = model_param_count(flax_attn.create_model('seresnet18'))
  assert se18 - REFERENCE_PARAMS['resnet18'] == sum(
      2 * se_params(w) for w in (64, 128, 256, 512))


def test_cifar_width_and_widen_factor():
  m = flax_attn.create_model('resnet20', 10, width=8)
  v = abstract_variables(m, (1, 32, 32, 3))
  chex.assert_shape(v['params']['stage3_block0']['conv1']['kernel'],
                    (3, 3, 16, 32))
  wrn18 = flax_attn.create_model('resnet18', 100, widen_factor=1.5)
  v = abstract_variables(wrn18, (1, 32, 32, 3))
  chex.assert_shape(v['params']['stage4_block1']['conv2']['kernel'],
                    (3, 3, 768, 768))


# Every block type, at reduced depth and width, with a sample of attentions,
# actually runs under jit: output shapes and BN state updates are checked.
TINY = dict(stage_sizes=(1, 1, 1, 1), stage_widths=(16, 32, 64, 128),
            stem_width=8)
# Each backbone family with one attention (every attention meets the basic
# and bottleneck blocks in the test after this one): one compile per case.
BACKBONE_ATTENTION = [
    ('resnet18', None), ('resnet50', 'se'), ('resnext50_32x4d', 'cbam'),
    ('res2net50_26w_4s', 'eca'), ('res2net18', 'se'),
    ('wide_resnet50_2', 'cbam'), ('resnet20', 'eca'),
]


@pytest.mark.parametrize('backbone,attn', BACKBONE_ATTENTION)
def test_backbone_with_attention_runs_under_jit(backbone, attn):
  tiny = {} if backbone == 'resnet20' else dict(stem='small', **TINY)
  model = flax_attn.create_model(backbone, num_classes=7, attn=attn, **tiny)
  x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
  variables = init_variables(model, x, train=False)
  logits, state = jax.jit(functools.partial(
      model.apply, train=True, mutable=['batch_stats']))(variables, x)
  chex.assert_shape(logits, (2, 7))
  chex.assert_tree_all_finite(logits)
  changed = jax.tree_util.tree_map(
      lambda a, b: bool(jnp.any(a != b)), variables['batch_stats'],
      state['batch_stats'])
  assert all(jax.tree_util.tree_leaves(changed))


def test_imagenet_stem_output_sizes():
  model = flax_attn.create_model('resnet18', 5, **TINY)
  x = jnp.zeros((1, 64, 64, 3))
  variables = init_variables(model, x)
  feats = flax_attn.extract_features(model, variables, x)
  chex.assert_shape(feats['stem'], (1, 32, 32, 8))  # 7x7/2, before max-pool
  chex.assert_shape(feats['stage1'], (1, 16, 16, 16))
  chex.assert_shape(feats['stage4'], (1, 2, 2, 128))
  chex.assert_shape(feats['pre_logits'], (1, 128))


def test_every_registered_attention_plugs_into_basic_and_bottleneck():
  # Structural check by tracing (jax.eval_shape, no compile); each attention's
  # numbers are tested in its own test file.
  x = jax.ShapeDtypeStruct((2, 16, 16, 3), jnp.float32)
  checked = []
  for attn in flax_attn.list_attention():
    for block in ('basic', 'bottleneck'):
      try:
        model = flax_attn.create_model(
            'resnet18', 3, attn=attn, block=block, stem='small', **TINY)
      except flax_attn.NotABlockAttentionError:
        continue  # e.g. SK replaces a conv; it has its own block type
      variables = jax.eval_shape(
          lambda m=model: m.init(jax.random.key(0), jnp.zeros(x.shape)))
      logits = jax.eval_shape(model.apply, variables, x)
      chex.assert_shape(logits, (2, 3))
      assert 'attn' in variables['params']['stage1_block0'] or attn in (
          'simam',), attn  # parameter-free attention has no params
      checked.append(attn)
  assert {'se', 'cbam', 'eca'} <= set(checked)


def test_intermediates_include_attention_maps():
  model = flax_attn.create_model('cbam_resnet18', 4, stem='small', **TINY)
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  variables = init_variables(model, x, seed=1)
  feats = flax_attn.extract_features(model, variables, x)
  for key in ('stem', 'stage1', 'stage2', 'stage3', 'stage4', 'pre_logits',
              'logits'):
    assert key in feats, key
  chex.assert_shape(feats['stage1_block0/attn/spatial_map'], (2, 16, 16, 1))
  chex.assert_shape(feats['stage4_block0/attn/channel_weights'],
                    (2, 1, 1, 128))
  np.testing.assert_allclose(feats['pre_logits'],
                             feats['stage4'].mean(axis=(1, 2)), rtol=1e-6)


def test_fcn_head_gives_class_activation_map():
  model = flax_attn.create_model('resnet18', 6, head='fcn', stem='small',
                                 **TINY)
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  variables = init_variables(model, x, seed=1)
  feats = flax_attn.extract_features(model, variables, x)
  chex.assert_shape(feats['cam'], (2, 2, 2, 6))
  np.testing.assert_allclose(feats['logits'], feats['cam'].mean(axis=(1, 2)),
                             rtol=1e-5, atol=1e-6)
  # GAP and the 1x1 conv commute: same logits as GAP + FC with its weights.
  k = variables['params']['head']['classifier']
  ref = feats['pre_logits'] @ k['kernel'][0, 0] + k['bias']
  np.testing.assert_allclose(feats['logits'], ref, rtol=1e-4, atol=1e-5)


def test_stage_attention_is_placed_after_named_stages():
  model = flax_attn.create_model('resnet18', 3, stage_attn='se',
                                 stage_attn_after=(1, 3), stem='small', **TINY)
  v = abstract_variables(model, (1, 16, 16, 3))
  assert {'stage1_attn', 'stage3_attn'} <= set(v['params'])
  assert 'stage2_attn' not in v['params'] and 'stage4_attn' not in v['params']


def test_bfloat16_compute_keeps_float32_params_and_matches():
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  m32 = flax_attn.create_model('cifar_resnet8', 5, attn='se', width=8)
  m16 = flax_attn.create_model('cifar_resnet8', 5, attn='se', width=8,
                               dtype='bfloat16')
  variables = init_variables(m32, x, seed=1)
  v16 = init_variables(m16, x, seed=1)
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(v16))
  # Non-trivial logits: train-mode BN normalises each layer.
  f = lambda m: m.apply(variables, x, train=True, mutable=['batch_stats'])[0]
  l32, l16 = f(m32), f(m16)
  assert l16.dtype == jnp.float32
  np.testing.assert_allclose(l16, l32, atol=0.1 * float(jnp.abs(l32).max()))
  assert float(jnp.abs(l16 - l32).max()) > 0  # bf16 really was used


def test_unknown_names_fail_with_suggestions():
  with pytest.raises(flax_attn.UnknownNameError,
                     match=r"unknown model 'resnet5'.*'resnet50'"):
    flax_attn.create_model('resnet5')
  with pytest.raises(flax_attn.UnknownNameError,
                     match=r"unknown attention 'cbma'.*'cbam'"):
    flax_attn.create_model('resnet50', attn='cbma')
  with pytest.raises(ValueError, match=r"unknown option 'reduce' for "
                     r"attention 'se'; valid options: .*reduction"):
    flax_attn.create_model('resnet50', attn='se', attn_kwargs={'reduce': 8})
  with pytest.raises(ValueError, match=r"unknown option 'widht' for model"):
    flax_attn.create_model('resnet20', widht=8)
  msg = str(pytest.raises(flax_attn.UnknownNameError,
                          flax_attn.create_model, 'resnet5').value)
  assert '\n' not in msg


def test_wrong_input_shape_fails_clearly():
  model = flax_attn.create_model('resnet20', 10)
  with pytest.raises(ValueError, match=r'expected images of shape .* got '
                     r'shape \(32, 32, 3\)'):
    model.init(jax.random.key(0), jnp.zeros((32, 32, 3)))


def test_list_models_and_attention():
  assert {'resnet50', 'seresnet50', 'cbam_resnet50', 'eca_resnet50',
          'resnet20', 'resnet110', 'seresnet18'} <= set(flax_attn.list_models())
  assert flax_attn.list_models('seresnet1*') == [
      'seresnet101', 'seresnet152', 'seresnet18']
  assert {'se', 'cbam', 'eca'} <= set(flax_attn.list_attention())


def test_registering_a_name_twice_fails():
  with pytest.raises(ValueError, match='already registered'):
    flax_attn.register_attention('se')(nn.Module)


def test_shortcut_a_is_parameter_free_zero_padding():
  model = ResNet(stage_sizes=(1, 1), block='basic', num_classes=2,
                 stage_widths=(4, 8), stage_strides=(1, 2), stem='small',
                 stem_width=4, shortcut='A')
  v = abstract_variables(model, (1, 8, 8, 1))
  assert 'shortcut' not in v['params']['stage2_block0']
  model_b = model.clone(shortcut='B')
  vb = abstract_variables(model_b, (1, 8, 8, 1))
  assert param_count(vb['params']) - param_count(v['params']) == 4 * 8 + 2 * 8


def test_resnet_d_stems_and_options():
  """timm's deep stems (conv widths); bad values fail in one line."""
  v = abstract_variables(flax_attn.create_model('ecaresnet26t'),
                         (1, 64, 64, 3))['params']
  assert [v[k]['kernel'].shape[-1] for k in ('conv_stem1', 'conv_stem2',
                                             'conv_stem')] == [24, 32, 64]
  deep = abstract_variables(flax_attn.create_model(
      'resnet26', stem_type='deep', stem_width=16), (1, 64, 64, 3))['params']
  assert [deep[k]['kernel'].shape[-1] for k in ('conv_stem1', 'conv_stem2',
                                                'conv_stem')] == [16, 16, 32]
  for kwargs, message in ((dict(stem_type='deep_tierd'), 'unknown stem_type '
                           "'deep_tierd'; valid: '', 'deep', 'deep_tiered'"),
                          (dict(stem_pool=''), "stem_pool='' needs a deep"),
                          (dict(shortcut='A', avg_down=True),
                           'avg_down needs projection shortcuts')):
    with pytest.raises(ValueError, match=message):
      abstract_variables(flax_attn.create_model('resnet18', **kwargs),
                         (1, 32, 32, 3))


def test_avg_down_shortcut_pools_with_ceil_mode_then_projects():
  """'D' shortcut: 2x2/2 mean (on odd sizes the last window averages what
  is left: ceil_mode, count_include_pad=False), 1x1 conv, BN (eval)."""
  from flax_attn.models.layers import make_conv, make_norm  # pylint: disable=g-import-not-at-top
  from flax_attn.models.resnet import Shortcut  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 5, 5, 4)).astype(np.float32)
  kernel = rng.standard_normal((1, 1, 4, 8)).astype(np.float32)
  scale, bias, mean = (rng.standard_normal(8).astype(np.float32)
                       for _ in range(3))
  var = rng.uniform(0.5, 2.0, 8).astype(np.float32)
  module = Shortcut(8, 2, make_conv(jnp.float32), make_norm(False, jnp.float32),
                    kind='D')
  out = module.apply({'params': {'conv': {'kernel': kernel},
                                 'bn': {'scale': scale, 'bias': bias}},
                      'batch_stats': {'bn': {'mean': mean, 'var': var}}}, x)
  pooled = np.stack([np.stack([x[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
                               .mean(axis=(1, 2)) for j in range(3)], 1)
                     for i in range(3)], 1)
  ref = (pooled @ kernel[0, 0] - mean) / np.sqrt(var + 1e-5) * scale + bias
  chex.assert_shape(out, (2, 3, 3, 8))
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)

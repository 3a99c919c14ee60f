"""MLAN: SMA / SMAv2 / FMA, fusions, the network, parameter counts.

References are written from the paper's equations in numpy (float64) with
the modules' own parameters; parameter counts are checked against a closed
form of the architecture and against the paper's tables.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flax_attn import create_model, list_models
from flax_attn.attention import get_attention
from flax_attn.models.layers import make_conv
from flax_attn.models.mlan import FUSIONS, MLAN, Fusion
from helpers import model_param_count, param_count, sigmoid

# --------------------------------------------------------------------------
# numpy references
# --------------------------------------------------------------------------


def np_conv(x, kernel, bias=None, stride=1):
  """NHWC x HWIO convolution, symmetric zero padding k // 2 (PyTorch's)."""
  x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
  k = kernel.shape[0]
  pad = k // 2
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  n, h, w, _ = x.shape
  ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
  out = np.zeros((n, ho, wo, kernel.shape[-1]))
  for i in range(k):
    for j in range(k):
      patch = xp[:, i:i + stride * (ho - 1) + 1:stride,
                 j:j + stride * (wo - 1) + 1:stride, :]
      out += patch @ kernel[i, j]
  return out if bias is None else out + np.asarray(bias, np.float64)


def relu(z):
  return np.maximum(z, 0.0)


def np_bn(x, params, stats, eps=1e-5):
  return ((x - np.asarray(stats['mean'])) / np.sqrt(np.asarray(stats['var'])
                                                    + eps)
          * np.asarray(params['scale']) + np.asarray(params['bias']))


def np_sma(x, p):
  """Eq. 1-3: N masks sigmoid(Conv_i(x)) (C -> 1), averaged, times x."""
  kernel, bias = np.asarray(p['mask_convs']['kernel']), p['mask_convs']['bias']
  masks = [sigmoid(np_conv(x, kernel[..., i:i + 1], bias[i:i + 1]))
           for i in range(kernel.shape[-1])]                     # Eq. 1
  return sum(masks) / len(masks) * x                             # Eq. 2, 3


def np_sma_v2(x, p):
  """Fig. 6: channel mean, then the N 1 -> 1 mask convolutions."""
  kernel, bias = np.asarray(p['mask_convs']['kernel']), p['mask_convs']['bias']
  squeezed = np.mean(x, axis=-1, keepdims=True)
  masks = [sigmoid(np_conv(squeezed, kernel[..., i:i + 1], bias[i:i + 1]))
           for i in range(kernel.shape[-1])]
  return sum(masks) / len(masks) * x


def np_fma(x, p, num_masks):
  """Full masks: N convolutions C -> C, sigmoid, averaged, times x."""
  c = x.shape[-1]
  kernel, bias = np.asarray(p['mask_convs']['kernel']), p['mask_convs']['bias']
  masks = [sigmoid(np_conv(x, kernel[..., i * c:(i + 1) * c],
                           bias[i * c:(i + 1) * c]))
           for i in range(num_masks)]
  return sum(masks) / num_masks * x


def np_fusion(kind, p, x_o, x_a, x_r):
  """Eq. 8-11."""
  if kind == 'plus':
    return x_o + x_a + x_r
  cat = np.concatenate([x_o, x_a, x_r], axis=-1)
  if kind in ('concat', 'conv1x1'):
    return np_conv(cat, p['conv']['kernel'])
  w = sigmoid(cat.mean(axis=(1, 2)) @ np.asarray(p['weights']['kernel'])
              + np.asarray(p['weights']['bias']))[:, None, None, :]
  return w[..., 0:1] * x_o + w[..., 1:2] * x_a + w[..., 2:3] * x_r


def np_aggregate(maps, p, aggregation, channels):
  """LA / BA, Eq. 4-7: SMA on the concatenation, then to C channels."""
  attended = np_sma(np.concatenate(maps, axis=-1), p['attn'])
  if aggregation == 'project':
    return np_conv(attended, p['project']['kernel']), attended
  chunks = [attended[..., j * channels:(j + 1) * channels]
            for j in range(len(maps))]
  mean = sum(chunks) / len(chunks)
  return mean, mean


def np_projection(x, p, s, stride):
  return np_bn(np_conv(x, p['conv']['kernel'], stride=stride), p['bn'],
               s['bn'])


def np_basic_block(x, p, s, stride):
  h = relu(np_bn(np_conv(x, p['conv1']['kernel'], stride=stride), p['bn1'],
                 s['bn1']))
  h = np_bn(np_conv(h, p['conv2']['kernel']), p['bn2'], s['bn2'])
  residual = (np_projection(x, p['shortcut'], s['shortcut'], stride)
              if 'shortcut' in p else x)
  return relu(h + residual)


def np_mlan_block(x, p, s, fusion, aggregation, multi_level):
  h1 = relu(np_bn(np_conv(x, p['conv1']['kernel']), p['bn1'], s['bn1']))
  h2 = np_bn(np_conv(h1, p['conv2']['kernel']), p['bn2'], s['bn2'])
  layer = [np_sma(h1, p['layer_attn1']), np_sma(h2, p['layer_attn2'])]
  if multi_level:
    x_a, up = np_aggregate(layer, p['layer_aggregation'], aggregation,
                           x.shape[-1])
  else:
    x_a, up = (layer[0] + layer[1]) / 2, None
  return relu(np_fusion(fusion, p.get('fusion'), h2, x_a, x)), up


def np_mlan(images, variables, sizes, strides, fusion, aggregation,
            multi_level):
  """The whole network (eval mode), from Sec. III and Fig. 1."""
  P, S = variables['params'], variables['batch_stats']
  x = relu(np_bn(np_conv(images, P['conv_stem']['kernel']), P['bn_stem'],
                 S['bn_stem']))
  for i, n in enumerate(sizes):
    group_input, block_attention = x, []
    name = f'stage{i + 1}_block0'               # the plain "D block"
    x = np_basic_block(x, P[name], S[name], strides[i])
    for j in range(1, n):
      name = f'stage{i + 1}_block{j}'
      x, up = np_mlan_block(x, P[name], S.get(name, {}), fusion, aggregation,
                            multi_level)
      block_attention.append(up)
    if multi_level:
      x_a, _ = np_aggregate(block_attention,
                            P[f'stage{i + 1}_block_aggregation'], aggregation,
                            x.shape[-1])
      shortcut = f'stage{i + 1}_group_shortcut'
      x_r = (np_projection(group_input, P[shortcut], S[shortcut], strides[i])
             if shortcut in P else group_input)
      x = relu(np_fusion(fusion, P.get(f'stage{i + 1}_group_fusion'), x, x_a,
                         x_r))
  head = P['head']['fc']
  return x.mean(axis=(1, 2)) @ np.asarray(head['kernel']) + np.asarray(
      head['bias'])


def normal(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def random_variables(module, *inputs, seed=0, **kwargs):
  """Variables of `module` filled with numpy random values.

  Shapes come from `jax.eval_shape(module.init)`: compiling a random
  initialiser costs tens of seconds on CPU, and random values (non-zero
  biases, BN statistics far from 0 / 1) make the references stricter.
  """
  abstract = jax.eval_shape(
      lambda: module.init(jax.random.key(0), *inputs, **kwargs))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = str(path[-1])
    if 'var' in name:
      value = rng.uniform(0.5, 1.5, leaf.shape)
    elif 'scale' in name:
      value = rng.uniform(0.5, 1.5, leaf.shape)
    elif len(leaf.shape) >= 2:
      value = rng.normal(0, 1 / np.sqrt(np.prod(leaf.shape[:-1])), leaf.shape)
    else:
      value = rng.normal(0, 0.3, leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


# --------------------------------------------------------------------------
# Attention modules
# --------------------------------------------------------------------------

MASKS = {
    'sma': lambda x, p, n: np_sma(x, p),
    'sma_v2': lambda x, p, n: np_sma_v2(x, p),
    'fma': np_fma,
}


class MaskAttentionTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_equations(self):
    x = normal((2, 6, 5, 4))
    for name, num_masks in (('sma', 1), ('sma', 3), ('sma_v2', 3),
                            ('fma', 2)):
      module = get_attention(name, dict(num_masks=num_masks))()
      params = random_variables(module, x)['params']
      out = self.variant(lambda p, v: module.apply({'params': p}, v))(
          params, x)
      chex.assert_shape(out, x.shape)
      chex.assert_trees_all_close(
          np.asarray(out), MASKS[name](np.asarray(x), params, num_masks),
          atol=1e-5, rtol=1e-5)

  def test_parameter_counts(self):
    x = jnp.zeros((1, 4, 4, 6))
    counts = {name: param_count(jax.eval_shape(
        get_attention(name)().init, jax.random.key(0), x)['params'])
              for name in MASKS}
    c, n = 6, 3
    assert counts == {'sma': n * (9 * c + 1), 'sma_v2': n * (9 + 1),
                      'fma': n * (9 * c * c + c)}

  def test_bf16_compute_keeps_fp32_params(self):
    x = normal((2, 5, 5, 8))
    for name in MASKS:
      module = get_attention(name)
      params = random_variables(module(), x)['params']
      out32 = jax.jit(module().apply)({'params': params}, x)
      out16 = jax.jit(module(dtype=jnp.bfloat16).apply)(
          {'params': params}, x.astype(jnp.bfloat16))
      assert out16.dtype == jnp.bfloat16
      assert all(p.dtype == jnp.float32
                 for p in jax.tree_util.tree_leaves(params))
      chex.assert_trees_all_close(out16.astype(jnp.float32), out32,
                                  atol=3e-2, rtol=3e-2)

  def test_sma_is_a_plain_block_attention(self):
    """'sma' in a plain CIFAR ResNet20: + N (9C + 1) per block."""
    base = model_param_count(create_model('cifar_resnet20', 10, width=8),
                             (1, 32, 32, 3))
    with_sma = model_param_count(
        create_model('cifar_resnet20', 10, width=8, attn='sma'),
        (1, 32, 32, 3))
    assert with_sma - base == 3 * sum(3 * (9 * c + 1) for c in (8, 16, 32))


# --------------------------------------------------------------------------
# Fusion and the network
# --------------------------------------------------------------------------


@pytest.mark.parametrize('kind', FUSIONS)
def test_fusion_matches_equations(kind):
  x_o, x_a, x_r = (normal((2, 4, 4, 5), seed) for seed in range(3))
  module = Fusion(kind, make_conv(jnp.float32))
  params = random_variables(module, x_o, x_a, x_r).get('params', {})
  out = jax.jit(module.apply)({'params': params}, x_o, x_a, x_r)
  chex.assert_shape(out, x_o.shape)
  expected = np_fusion(kind, params, *map(np.asarray, (x_o, x_a, x_r)))
  np.testing.assert_allclose(out, expected, atol=1e-4, rtol=1e-4)
  counts = {'plus': 0, 'concat': 9 * 15 * 5, 'conv1x1': 15 * 5,
            'weighted_plus': 15 * 3 + 3}
  assert param_count(params) == counts[kind]


@pytest.mark.parametrize('fusion,aggregation,multi_level,sizes', [
    ('plus', 'project', True, (2, 2)),
    ('weighted_plus', 'mean', True, (2, 2)),
    ('concat', 'project', False, (2, 2)),
    # q = 3 in group 2: BA concatenates two block attentions.
    ('plus', 'project', True, (2, 3)),
])
def test_network_matches_reference(fusion, aggregation, multi_level, sizes):
  """A 2-group MLAN (D block + q - 1 normal blocks each) against np_mlan."""
  strides = (1, 2)
  model = MLAN(stage_sizes=sizes, num_classes=3, stage_widths=(4, 8),
               stage_strides=strides, stem_width=4,
               attn=get_attention('sma'), fusion=fusion,
               aggregation=aggregation, multi_level=multi_level)
  images = normal((2, 8, 8, 3))
  variables = random_variables(model, images)
  (logits, features), state = jax.jit(lambda v, x: model.apply(
      v, x, return_features=True, mutable=['intermediates']))(variables,
                                                              images)
  expected = np_mlan(np.asarray(images), variables, sizes, strides, fusion,
                     aggregation, multi_level)
  np.testing.assert_allclose(logits, expected, atol=2e-4, rtol=2e-4)
  assert {'stem', 'stage1', 'stage2', 'pre_logits'} <= set(features)
  chex.assert_shape(features['stage2'], (2, 4, 4, 8))
  # Attention maps are sown: layer masks, and BA's only with multi_level.
  maps = state['intermediates']
  chex.assert_shape(maps['stage2_block1']['layer_attn2']['mask'][0],
                    (2, 4, 4, 1))
  assert ('stage2_block_aggregation' in maps) == multi_level


def test_bf16_network_and_train_mode():
  tiny = dict(stage_sizes=(2, 2), stage_widths=(4, 8))
  model = create_model('mlan_resnet14', 10, width=4, dtype='bfloat16', **tiny)
  reference = create_model('mlan_resnet14', 10, width=4, **tiny)
  images = normal((2, 8, 8, 3))
  variables = random_variables(reference, images)
  assert all(p.dtype == jnp.float32
             for p in jax.tree_util.tree_leaves(variables))
  out32 = jax.jit(reference.apply)(variables, images)
  out16 = jax.jit(model.apply)(variables, images)
  assert out16.dtype == jnp.float32  # logits are returned in float32
  scale = float(jnp.max(jnp.abs(out32)))
  chex.assert_trees_all_close(out16, out32, atol=5e-2 * scale + 1e-2)
  # Train mode: batch statistics change, shapes stay.
  out, state = jax.jit(lambda v, x: reference.apply(
      v, x, train=True, mutable=['batch_stats']))(variables, images)
  chex.assert_shape(out, (2, 10))
  assert not np.allclose(
      state['batch_stats']['bn_stem']['mean'],
      variables['batch_stats']['bn_stem']['mean'])


def test_attention_per_level_is_selectable():
  """Table 6's comparators: any registered attention at any level."""
  model = create_model('mlan_resnet14', 10, attn='cbam',
                       block_attn='se', group_attn='sma_v2')
  params = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, 32, 32, 3)))['params']
  block = params['stage2_block1']
  assert set(block['layer_attn1']) == {'channel', 'spatial'}     # CBAM
  assert set(block['layer_aggregation']['attn']) == {'fc1', 'fc2'}  # SE
  chex.assert_shape(  # SMAv2: N 1 -> 1 convolutions
      params['stage2_block_aggregation']['attn']['mask_convs']['kernel'],
      (3, 3, 1, 3))


def test_bad_values_fail_with_one_line():
  images = jnp.zeros((1, 8, 8, 3))
  for kwargs, words in ((dict(fusion='sum'), 'valid: plus, concat'),
                        (dict(aggregation='max'), 'valid: project, mean'),
                        (dict(attn=None), 'needs an attention'),
                        (dict(stage_attn='se'), 'no per-stage attention')):
    with pytest.raises(ValueError, match=words) as info:
      jax.eval_shape(create_model('mlan_resnet14', 10, **kwargs).init,
                     jax.random.key(0), images)
    assert '\n' not in str(info.value)
  with pytest.raises(ValueError, match='6n\\+2'):
    from flax_attn.models.zoo.mlan import mlan_cifar
    mlan_cifar(15)


# --------------------------------------------------------------------------
# Parameter counts against the paper
# --------------------------------------------------------------------------


def closed_form_sma(n, width, classes, num_masks=3):
  """MLAN-SMA parameters from the architecture (module docstring)."""
  sma = lambda cin: num_masks * (9 * cin + 1)
  total = 27 * width + 2 * width + 4 * width * classes + classes  # stem, FC
  cin = width
  for c in (width, 2 * width, 4 * width):
    m = n - 1                                       # normal blocks
    total += 9 * cin * c + 9 * c * c + 4 * c         # D block convs + BN
    if cin != c:
      total += 2 * (cin * c + 2 * c)                 # D + group shortcuts
    total += m * (18 * c * c + 4 * c)                # normal block convs
    total += m * (2 * sma(c) + sma(2 * c) + 2 * c * c)   # layer, LA, 1x1
    total += sma(2 * m * c) + 2 * m * c * c          # BA and its 1x1
    cin = c
  return total


# Paper tables, millions: (attention, width, classes) -> ResNet14..32.
PAPER = {
    ('sma', 8, 10): (0.06, 0.10, 0.14, 0.18),        # Table 4 / 6
    ('fma', 8, 10): (0.39, 1.04, 1.98, 3.21),        # Table 4
    ('sma_v2', 8, 10): (0.05, 0.08, 0.11, 0.14),     # Table 6
    ('sma', 16, 100): (0.22, 0.36, 0.50, 0.63),      # Table 9 / 12
    ('sma_v2', 16, 100): (0.20, 0.32, 0.44, 0.56),   # Table 9
    ('fma', 16, 100): (1.58, 4.17, 7.93, 12.84),     # Table 12
}
# Our exact counts for the same models.
OURS = {
    ('sma', 8, 10): (59590, 98481, 137372, 176263),
    ('fma', 8, 10): (414370, 1098354, 2072642, 3337234),
    ('sma_v2', 8, 10): (50842, 80904, 110966, 141028),
    ('sma', 16, 100): (223544, 360435, 497326, 634217),
    ('sma_v2', 16, 100): (205724, 324714, 443704, 562694),
    ('fma', 16, 100): (1658900, 4392372, 8287060, 13342964),
}


def test_sma_models_match_table4():
  """mlan_resnet14/20/26/32 on CIFAR-10: 59,590 / 98,481 / 137,372 /
  176,263 parameters against Table 4's 0.06M / 0.10M / 0.14M / 0.18M."""
  assert list_models('mlan_*') == [f'mlan_resnet{d}' for d in (14, 20, 26,
                                                                32)]
  for n, depth, paper in zip((2, 3, 4, 5), (14, 20, 26, 32),
                             PAPER['sma', 8, 10]):
    count = model_param_count(create_model(f'mlan_resnet{depth}', 10),
                              (1, 32, 32, 3))
    assert count == closed_form_sma(n, 8, 10)
    assert abs(count / 1e6 - paper) <= 0.1 * paper, (depth, count, paper)


def test_other_tables_within_7_percent():
  """Tables 4, 6, 9, 12 (masks) and 5, 13 (fusions, ResNet20)."""
  for (attn, width, classes), paper in PAPER.items():
    for depth, ours, theirs in zip((14, 20, 26, 32),
                                   OURS[attn, width, classes], paper):
      count = model_param_count(
          create_model(f'mlan_resnet{depth}', classes, width=width,
                       attn=attn), (1, 32, 32, 3))
      assert count == ours, (attn, width, depth, count)
      assert abs(count / 1e6 - theirs) <= 0.07 * theirs, (attn, depth)
  fusions = {  # fusion: (ours C10, paper Table 5, ours C100, paper Table 13)
      'concat': (207345, 0.21, 795891, 0.81),
      'conv1x1': (110577, 0.11, 408819, 0.41),
      'weighted_plus': (100020, 0.10, 363486, 0.36),
  }
  for fusion, (c10, t5, c100, t13) in fusions.items():
    for width, classes, ours, theirs in ((8, 10, c10, t5),
                                         (16, 100, c100, t13)):
      count = model_param_count(
          create_model('mlan_resnet20', classes, width=width, fusion=fusion),
          (1, 32, 32, 3))
      assert count == ours, (fusion, width, count)
      assert abs(count / 1e6 - theirs) <= 0.07 * theirs, (fusion, width)


def test_parallel_attention_averages_copies():
  """`attn_copies=3` (Tables 6 / 9 reading): three SE modules at r = 4 on
  the same input, outputs averaged: x * mean_i sigmoid(W2_i relu(W1_i z))."""
  from flax_attn.models.mlan import ParallelAttention
  x = normal((2, 4, 5, 16))
  se = get_attention('se', dict(reduction=4, rd_divisor=1))
  module = ParallelAttention(attn=se, copies=3)
  params = random_variables(module, x)['params']
  out = jax.jit(module.apply)({'params': params}, x)
  z = np.asarray(x, np.float64).mean(axis=(1, 2))
  gates = []
  for i in range(3):
    p = params[f'copy{i}']
    h = relu(z @ np.asarray(p['fc1']['kernel']) + np.asarray(p['fc1']['bias']))
    gates.append(sigmoid(h @ np.asarray(p['fc2']['kernel'])
                         + np.asarray(p['fc2']['bias'])))
  expected = np.asarray(x) * (sum(gates) / 3)[:, None, None, :]
  np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)
  assert param_count(params) == 3 * (2 * 16 * 4 + 4 + 16)
  # In the network, every level's attention is three copies.
  model = create_model('mlan_resnet14', 10, attn='se', attn_copies=3,
                       attn_kwargs=dict(reduction=4, rd_divisor=1))
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, 32, 32, 3)))['params']
  assert set(shapes['stage3_block_aggregation']['attn']) == {
      'copy0', 'copy1', 'copy2'}
  assert param_count(shapes) == 71_902  # Table 6: 0.07M
  with pytest.raises(ValueError, match='attn_copies must be a positive'):
    jax.eval_shape(create_model('mlan_resnet14', 10, attn_copies=0).init,
                   jax.random.key(0), jnp.zeros((1, 8, 8, 3)))

"""SimAM, GC, SK, triplet attention and non-local blocks, and their models.

Each module is checked against a reference written from its paper's
equations (and, where the paper leaves a detail open, the authors' released
code) in numpy, reading the module's parameters from the variables dict;
the references share no code with flax_attn. Parameter counts are exact:
timm's for skresnet18/34 and skresnext50_32x4d, and per-module formulas
added to torchvision's ResNet counts for the others.
"""
import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flax_attn
from flax_attn.attention.gc import GlobalContext
from flax_attn.attention.non_local import NonLocalBlock
from flax_attn.attention.selective_kernel import SelectiveKernelConv
from flax_attn.attention.simam import SimAM
from flax_attn.attention.triplet import TripletAttention
from flax_attn.models.layers import make_conv, make_norm
from flax_attn.models.resnet import Bottleneck
from flax_attn.models.zoo.comparators import (NonLocalBottleneck,
                                              SimAMBasicBlock, SimAMBottleneck)
from helpers import (abstract_variables, jit_init, model_param_count,
                     param_count, sigmoid)

RESNET18, RESNET50 = 11_689_512, 25_557_032


# ----------------------------------------------------------------- helpers


def softmax(v, axis):
  e = np.exp(v - v.max(axis=axis, keepdims=True))
  return e / e.sum(axis=axis, keepdims=True)


def conv2d(x, w, stride=1, dilation=1, groups=1):
  """Plain NHWC x HWIO convolution, zero padding dilation * (k // 2)."""
  kh, kw, cin_g, cout = w.shape
  n, h, wd, _ = x.shape
  ph, pw = dilation * (kh // 2), dilation * (kw // 2)
  xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  ho = (h + 2 * ph - dilation * (kh - 1) - 1) // stride + 1
  wo = (wd + 2 * pw - dilation * (kw - 1) - 1) // stride + 1
  out = np.zeros((n, ho, wo, cout))
  co_g = cout // groups
  for i in range(kh):
    for j in range(kw):
      patch = xp[:, i * dilation:i * dilation + (ho - 1) * stride + 1:stride,
                 j * dilation:j * dilation + (wo - 1) * stride + 1:stride]
      for g in range(groups):
        out[..., g * co_g:(g + 1) * co_g] += np.einsum(
            'nhwc,co->nhwo', patch[..., g * cin_g:(g + 1) * cin_g],
            w[i, j, :, g * co_g:(g + 1) * co_g])
  return out


def batch_norm_eval(x, params, stats, eps=1e-5):
  return ((x - stats['mean']) / np.sqrt(stats['var'] + eps) * params['scale']
          + params['bias'])


def randomize(variables, seed=7, scale=0.5):
  """Random parameters (zero-initialised layers would hide errors) and BN
  running statistics (variances in [0.5, 1.5])."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    if 'var' in str(path[-1]):
      return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), jnp.float32)
    return jnp.asarray(scale * rng.normal(size=leaf.shape), jnp.float32)

  return {c: jax.tree_util.tree_map_with_path(draw, tree)
          for c, tree in variables.items()}


def as_numpy(tree):
  return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


def inputs(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape),
                     jnp.float32)


def shapes_of(module, x):
  """The module's variables as shapes only (jax.eval_shape: no compute)."""
  return jax.eval_shape(module.init, jax.random.key(0), x)


def random_variables(module, x, seed=7):
  return randomize(shapes_of(module, x), seed)


def check_bfloat16(module, x):
  """bf16 compute keeps float32 params and the input dtype, close to fp32."""
  variables = random_variables(module, x)
  m16 = module.clone(dtype=jnp.bfloat16)
  y32 = jax.jit(module.apply)(variables, x)
  y16 = jax.jit(m16.apply)(variables, x)
  assert all(p.dtype == jnp.float32
             for p in jax.tree_util.tree_leaves(shapes_of(m16, x)))
  assert y16.dtype == x.dtype
  scale = float(jnp.abs(y32).max())
  np.testing.assert_allclose(y16, y32, atol=0.05 * scale)
  assert float(jnp.abs(y16 - y32).max()) > 0  # bf16 really was used


# ------------------------------------------------------------------- SimAM

def simam_reference(x, e_lambda):
  """Yang et al. 2021, Eq. 5 (minimal energy) and Eq. 6 (sigmoid(1/E) X)."""
  x = np.asarray(x, np.float64)
  n = x.shape[1] * x.shape[2]
  mu = x.mean(axis=(1, 2), keepdims=True)
  var = ((x - mu) ** 2).sum(axis=(1, 2), keepdims=True) / (n - 1)
  energy = 4 * (var + e_lambda) / ((x - mu) ** 2 + 2 * var + 2 * e_lambda)
  return x * sigmoid(1.0 / energy)


class SimAMTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_energy_equations(self):
    x = inputs((2, 5, 6, 8)) * 3 + 1
    for e_lambda in (1e-4, 0.1):
      module = SimAM(e_lambda=e_lambda)
      variables = jit_init(module, jax.random.key(0), x)
      assert not jax.tree_util.tree_leaves(variables)  # parameter-free
      y = self.variant(module.apply)(variables, x)
      chex.assert_trees_all_close(np.asarray(y), simam_reference(x, e_lambda),
                                  rtol=1e-5, atol=1e-5)

  def test_default_lambda_and_one_pixel_map(self):
    assert SimAM().e_lambda == 1e-4
    y = SimAM().apply({}, inputs((2, 1, 1, 4)))
    chex.assert_tree_all_finite(y)

  def test_bfloat16(self):
    x = inputs((2, 6, 6, 8))
    y32 = SimAM().apply({}, x)
    y16 = SimAM(dtype=jnp.bfloat16).apply({}, x)
    assert y16.dtype == jnp.float32
    np.testing.assert_allclose(y16, y32, atol=0.05 * float(jnp.abs(y32).max()))


# ---------------------------------------------------------------------- GC

def gc_reference(x, p, fusion):
  """Cao et al. 2019, Eq. 4: softmax pooling, bottleneck + LN, fusion."""
  x = np.asarray(x, np.float64)
  n, h, w, c = x.shape
  logits = (x @ p['conv_mask']['kernel'][0, 0])[..., 0] + p['conv_mask'][
      'bias'][0]
  alpha = softmax(logits.reshape(n, h * w), axis=1)
  context = np.einsum('np,npc->nc', alpha, x.reshape(n, h * w, c))
  t = context @ p['transform_conv1']['kernel'] + p['transform_conv1']['bias']
  t = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, keepdims=True)
                                                + 1e-5)
  t = t * p['transform_ln']['scale'] + p['transform_ln']['bias']
  t = np.maximum(t, 0) @ p['transform_conv2']['kernel'] + p[
      'transform_conv2']['bias']
  t = t[:, None, None, :]
  return x + t if fusion == 'add' else x * sigmoid(t)


def gc_params(c, r=16):
  h = c // r
  return (c + 1) + (c * h + h) + 2 * h + (h * c + c)


class GlobalContextTest(chex.TestCase):

  @chex.variants(with_jit=True)
  def test_matches_equation_4(self):
    x = inputs((2, 5, 6, 32))
    for fusion in ('add', 'scale'):
      module = GlobalContext(fusion=fusion)
      variables = random_variables(module, x)
      y = self.variant(module.apply)(variables, x)
      ref = gc_reference(x, as_numpy(variables['params']), fusion)
      chex.assert_trees_all_close(np.asarray(y), ref, rtol=1e-5, atol=1e-5)

  def test_starts_as_identity_and_counts_parameters(self):
    x = inputs((2, 4, 4, 64))
    variables = jax.jit(GlobalContext().init)(jax.random.key(0), x)
    np.testing.assert_array_equal(jax.jit(GlobalContext().apply)(variables, x),
                                  x)
    assert param_count(variables) == gc_params(64)
    chex.assert_shape(variables['params']['transform_conv1']['kernel'],
                      (64, 4))

  def test_bad_fusion_fails_in_one_line(self):
    with pytest.raises(ValueError, match=r"GC fusion 'mul' is not one of "
                       r"add, scale"):
      GlobalContext(fusion='mul').init(jax.random.key(0), inputs((1, 2, 2, 16)))

  def test_bfloat16(self):
    check_bfloat16(GlobalContext(), inputs((2, 4, 4, 32)))


# ----------------------------------------------------------------- triplet

def triplet_reference(x, p, s, no_spatial=False):
  """Misra et al. 2021 in the authors' NCHW form: permute, Z-pool (max;
  mean) over dim 1, 7x7 conv, BN, sigmoid, gate, permute back, average."""
  x = np.asarray(x, np.float64).transpose(0, 3, 1, 2)          # NCHW

  def gate(t, name):                                            # t: N,A,B,D
    z = np.stack([t.max(axis=1), t.mean(axis=1)], axis=-1)      # Eq. 1
    a = conv2d(z, p[name]['conv']['kernel'])[..., 0]            # N,B,D
    a = batch_norm_eval(a, {k: v[0] for k, v in p[name]['bn'].items()},
                        {k: v[0] for k, v in s[name]['bn'].items()})
    return t * sigmoid(a)[:, None]

  outs = [gate(x.transpose(0, 2, 1, 3), 'cw').transpose(0, 2, 1, 3),
          gate(x.transpose(0, 3, 2, 1), 'hc').transpose(0, 3, 2, 1)]
  if not no_spatial:
    outs.append(gate(x, 'hw'))
  return (sum(outs) / len(outs)).transpose(0, 2, 3, 1)          # NHWC


class TripletAttentionTest(chex.TestCase):

  @chex.variants(with_jit=True)
  def test_matches_authors_rotations(self):
    x = inputs((2, 5, 6, 4))  # H, W, C all different: catches axis mix-ups
    for no_spatial in (False, True):
      module = TripletAttention(no_spatial=no_spatial)
      variables = random_variables(module, x)
      y = self.variant(module.apply)(variables, x)
      ref = triplet_reference(x, as_numpy(variables['params']),
                              as_numpy(variables['batch_stats']), no_spatial)
      chex.assert_trees_all_close(np.asarray(y), ref, rtol=1e-5, atol=1e-5)

  def test_parameters_and_train_mode(self):
    x = inputs((2, 5, 6, 16))
    variables = random_variables(TripletAttention(), x)
    # Three gates of a 7x7 2->1 conv (no bias) + BN(1): 300 parameters.
    assert param_count(variables['params']) == 3 * (2 * 49 + 2)
    y, state = jax.jit(functools.partial(
        TripletAttention().apply, train=True, mutable=['batch_stats']))(
            variables, x)
    chex.assert_shape(y, x.shape)
    assert set(state['batch_stats']) == {'cw', 'hc', 'hw'}

  def test_bfloat16(self):
    check_bfloat16(TripletAttention(), inputs((2, 5, 6, 8)))


# --------------------------------------------------------------- non-local

def max_pool_2x2_ceil(x):
  n, h, w, c = x.shape
  xp = np.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)),
              constant_values=-np.inf)
  return xp.reshape(n, (h + 1) // 2, 2, (w + 1) // 2, 2, c).max(axis=(2, 4))


def nonlocal_reference(x, p, s, subsample=True, scale_logits=True):
  """Wang et al. 2018, Eq. 1, 3 and 6 (embedded Gaussian), with the authors'
  2x2 max-pooled phi, g and 1/sqrt(d) scaling."""
  x = np.asarray(x, np.float64)
  n, h, w, c = x.shape
  conv1x1 = lambda t, q: t @ q['kernel'][0, 0] + q['bias']
  pooled = max_pool_2x2_ceil(x) if subsample else x
  theta = conv1x1(x, p['theta']).reshape(n, h * w, -1)
  phi = conv1x1(pooled, p['phi']).reshape(n, -1, theta.shape[-1])
  g = conv1x1(pooled, p['g']).reshape(n, -1, theta.shape[-1])
  logits = theta @ phi.transpose(0, 2, 1)
  if scale_logits:
    logits = logits / np.sqrt(theta.shape[-1])
  y = (softmax(logits, axis=-1) @ g).reshape(n, h, w, -1)      # Eq. 1, 3
  z = batch_norm_eval(conv1x1(y, p['w_z']), p['bn'], s['bn'])
  return z + x                                                  # Eq. 6


def nonlocal_params(c):
  return 3 * (c * (c // 2) + c // 2) + (c // 2 * c + c) + 2 * c


class NonLocalTest(chex.TestCase):

  @chex.variants(with_jit=True)
  def test_matches_embedded_gaussian(self):
    x = inputs((2, 5, 6, 8))  # odd height: ceil pooling
    for subsample, scale_logits in ((True, True), (False, False)):
      module = NonLocalBlock(subsample=subsample, scale_logits=scale_logits)
      variables = random_variables(module, x)
      y = self.variant(module.apply)(variables, x)
      ref = nonlocal_reference(x, as_numpy(variables['params']),
                               as_numpy(variables['batch_stats']),
                               subsample, scale_logits)
      chex.assert_trees_all_close(np.asarray(y), ref, rtol=1e-5, atol=1e-5)

  def test_starts_as_identity_and_counts_parameters(self):
    x = inputs((2, 4, 4, 16))
    module = NonLocalBlock()
    variables = jax.jit(module.init)(jax.random.key(0), x)
    np.testing.assert_array_equal(jax.jit(module.apply)(variables, x), x)
    assert param_count(variables['params']) == nonlocal_params(16)
    # A 1 x 1 map still works (the 2x2 pooling pads with -inf).
    y, _ = jax.jit(functools.partial(module.apply, train=True,
                                     mutable=['batch_stats']))(
                                         variables, inputs((2, 1, 1, 16)))
    chex.assert_shape(y, (2, 1, 1, 16))

  def test_bfloat16(self):
    check_bfloat16(NonLocalBlock(), inputs((2, 4, 6, 16)))


# ---------------------------------------------------------------------- SK

def timm_make_divisible(v, divisor, round_limit=0.9):
  new = max(divisor, int(v + divisor / 2) // divisor * divisor)
  return new + divisor if new < round_limit * v else new


def batch_norm_train(x, params, stats=None, eps=1e-5):
  """Train mode: the batch's own mean and biased variance, in float64."""
  del stats
  axes = tuple(range(x.ndim - 1))
  mean = x.mean(axis=axes)
  var = ((x - mean) ** 2).mean(axis=axes)
  return (x - mean) / np.sqrt(var + eps) * params['scale'] + params['bias']


def sk_reference(x, p, s, features, stride, kernel_sizes, keep_3x3,
                 split_input, groups, batch_norm_eval=batch_norm_eval):
  """Li et al. 2019, Eq. 1-6: split (conv-BN-ReLU paths), fuse (sum, GAP,
  FC-BN-ReLU), select (softmax over paths), with timm's input split."""
  x = np.asarray(x, np.float64)
  m = len(kernel_sizes)
  xs = np.split(x, m, axis=-1) if split_input else [x] * m
  paths = []
  for i, (xi, k) in enumerate(zip(xs, kernel_sizes)):
    dilation = (k - 1) // 2 if keep_3x3 else 1
    u = conv2d(xi, p[f'path{i}_conv']['kernel'], stride, dilation, groups)
    paths.append(np.maximum(batch_norm_eval(u, p[f'path{i}_bn'],
                                            s[f'path{i}_bn']), 0))
  sv = sum(paths).mean(axis=(1, 2))                              # Eq. 1-2
  z = np.maximum(batch_norm_eval(sv @ p['fc_reduce']['kernel'], p['attn_bn'],
                                 s['attn_bn']), 0)               # Eq. 3-4
  a = softmax((z @ p['fc_select']['kernel']).reshape(-1, m, features),
              axis=1)                                            # Eq. 5
  return sum(a[:, i, None, None, :] * paths[i] for i in range(m))  # Eq. 6


class SelectiveKernelTest(chex.TestCase):

  @chex.variants(with_jit=True)
  def test_matches_equations_1_to_6(self):
    x = inputs((2, 7, 6, 8))
    configs = [
        # timm's skresnet18 unit: split input, 3x3 + dilated 3x3, stride 2.
        dict(features=16, strides=2, split_input=True, rd_ratio=1 / 8,
             rd_divisor=16),
        # the paper's unit with groups and a true 5x5 path.
        dict(features=8, strides=1, groups=2, keep_3x3=False),
    ]
    for cfg in configs:
      module = SelectiveKernelConv(**cfg)
      variables = random_variables(module, x)
      y = self.variant(module.apply)(variables, x)
      ref = sk_reference(x, as_numpy(variables['params']),
                         as_numpy(variables['batch_stats']), cfg['features'],
                         cfg['strides'], (3, 5), cfg.get('keep_3x3', True),
                         cfg.get('split_input', False), cfg.get('groups', 1))
      chex.assert_trees_all_close(np.asarray(y), ref, rtol=1e-5, atol=1e-5)

  def test_train_mode_at_batch_2(self):
    """Batch statistics of 2 images (the fuse BN normalises 2 vectors per
    channel, where E[x^2] - E[x]^2 cancels): within 2e-6 of float64 with
    the two-pass variance (measured 5.8e-7; one-pass: 1.7e-5)."""
    x = 3.0 + inputs((2, 7, 6, 8))
    module = SelectiveKernelConv(features=16, strides=2, split_input=True,
                                 rd_ratio=1 / 8, rd_divisor=16)
    variables = random_variables(module, x)
    y, _ = jax.jit(functools.partial(module.apply, train=True,
                                     mutable=['batch_stats']))(variables, x)
    ref = sk_reference(x, as_numpy(variables['params']),
                       as_numpy(variables['batch_stats']), 16, 2, (3, 5),
                       True, True, 1, batch_norm_eval=batch_norm_train)
    chex.assert_trees_all_close(np.asarray(y), ref, rtol=2e-6, atol=2e-6)

  def test_fuse_width_follows_timm_and_the_paper(self):
    v = abstract_variables(flax_attn.create_model('skresnet18'),
                           (1, 64, 64, 3))['params']
    widths = {f'stage{i + 1}': c for i, c in enumerate((64, 128, 256, 512))}
    for stage, c in widths.items():
      kernel = v[f'{stage}_block0']['conv1']['fc_reduce']['kernel']
      assert kernel.shape == (c, timm_make_divisible(c / 8, 16))
      # timm's split: each path sees half the input channels.
      cin = v[f'{stage}_block0']['conv1']['path1_conv']['kernel'].shape[2]
      assert cin == (64 if stage == 'stage1' else c // 2) // 2
    assert 'bn1' not in v['stage1_block0'] and 'attn' not in v['stage1_block0']
    # SKNet-50: d = max(C / r, L) with r = 16, L = 32 (Sec. 3.2).
    v = abstract_variables(flax_attn.create_model('skresnext50_32x4d'),
                           (1, 64, 64, 3))['params']
    for stage, c in (('stage1', 128), ('stage4', 1024)):
      kernel = v[f'{stage}_block0']['conv2']['fc_reduce']['kernel']
      assert kernel.shape == (c, max(c // 16, 32))

  def test_sk_is_not_a_block_attention(self):
    with pytest.raises(flax_attn.NotABlockAttentionError,
                       match=r"attention 'sk' replaces .*block='sk_basic'"):
      flax_attn.create_model('resnet18', attn='sk')
    assert 'sk' in flax_attn.list_attention()
    with pytest.raises(ValueError, match='sk_basic'):
      flax_attn.attention.ATTENTION.get('sk')().init(
          jax.random.key(0), inputs((1, 4, 4, 8)))


# ---------------------------------------------------------- parameter counts

def test_parameter_counts():
  count = lambda name: model_param_count(flax_attn.create_model(name),
                                         (1, 64, 64, 3))
  # SimAM adds no parameters (its README: SimAM-R18 11.69M, R50 25.56M).
  assert count('simam_resnet18') == RESNET18
  assert count('simam_resnet50') == RESNET50
  # timm's skresnet18 / skresnet34 at 1000 classes.
  assert count('skresnet18') == 11_958_056
  assert count('skresnet34') == 22_282_376
  # SKNet-50 = ResNeXt-50 32x4d (25,028,904) with each grouped 3x3 conv + BN
  # replaced by two (3x3, dilated 3x3) + BNs and the fuse/select layers:
  # 27.48M, the paper's 27.5M and timm's skresnext50_32x4d.
  sk_extra = lambda w, d: 9 * w * w // 32 + 2 * w + 3 * w * d + 2 * d
  assert count('skresnext50_32x4d') == 25_028_904 + sum(
      n * sk_extra(w, d) for n, w, d in
      zip((3, 4, 6, 3), (128, 256, 512, 1024), (32, 32, 32, 64)))
  # Triplet attention: 300 parameters per block, 16 blocks (paper: 25.56M).
  assert count('triplet_resnet50') == RESNET50 + 16 * 300
  # GC r=16 in the 13 blocks of c3-c5: 28.08M.
  assert count('gc_resnet50') == RESNET50 + sum(
      n * gc_params(c) for n, c in zip((4, 6, 3), (512, 1024, 2048)))
  # Five non-local blocks: 2 at C = 512 (res3), 3 at C = 1024 (res4).
  assert count('nl_resnet50') == RESNET50 + 2 * nonlocal_params(512) + (
      3 * nonlocal_params(1024))


# ---------------------------------------------------------------- placement

CONV, NORM = make_conv(jnp.float32), make_norm(False, jnp.float32)


def apply_capturing(module, variables, x):
  """Output and every submodule's output (capture_intermediates), jitted."""
  fn = functools.partial(module.apply, capture_intermediates=True,
                         mutable=['intermediates'])
  y, state = jax.jit(fn)(variables, x)
  return y, as_numpy(state['intermediates'])


def test_simam_sits_between_the_3x3_conv_and_its_norm():
  x = inputs((2, 6, 6, 4))
  block = SimAMBasicBlock(8, 2, CONV, NORM,
                          attn=functools.partial(SimAM, e_lambda=0.1))
  variables = random_variables(block, x)
  _, inter = apply_capturing(block, variables, x)
  conv2, attn = inter['conv2']['__call__'][0], inter['attn']['__call__'][0]
  np.testing.assert_allclose(attn, simam_reference(conv2, 0.1), rtol=1e-4,
                             atol=1e-5)
  p = as_numpy(variables)
  bn2 = batch_norm_eval(attn, p['params']['bn2'], p['batch_stats']['bn2'])
  np.testing.assert_allclose(inter['bn2']['__call__'][0], bn2, rtol=1e-4,
                             atol=1e-4)
  # In bottlenecks SimAM sees the inner width, not the 4x expanded output.
  block = SimAMBottleneck(8, 1, CONV, NORM, attn=SimAM)
  _, state = jax.eval_shape(functools.partial(
      block.apply, mutable=['intermediates']), shapes_of(block, x), x)
  chex.assert_shape(state['intermediates']['attn']['weights'][0],
                    (2, 6, 6, 8))
  # The named models put it there, with the paper's lambda = 1e-4.
  model = flax_attn.create_model('simam_resnet18')
  assert model.block == 'simam_basic'
  assert model.attn.keywords == {'e_lambda': 1e-4}


def test_gc_only_in_stages_two_to_four():
  v = abstract_variables(flax_attn.create_model('gc_resnet50'),
                         (1, 64, 64, 3))['params']
  blocks = [k for k in v if k.startswith('stage')]
  with_gc = {k for k in blocks if 'attn' in v[k]}
  assert with_gc == {k for k in blocks if not k.startswith('stage1')}
  assert 'conv_mask' in v['stage2_block0']['attn']
  model = flax_attn.create_model('gc_resnet50', gc_stages=(4,),
                                 attn_kwargs=dict(fusion='scale'))
  v = abstract_variables(model, (1, 64, 64, 3))['params']
  assert {k for k in v if 'attn' in v.get(k, {})} == {
      'stage4_block0', 'stage4_block1', 'stage4_block2'}
  assert model.attn.keywords['fusion'] == 'scale'


def test_nonlocal_blocks_follow_the_named_residual_blocks():
  v = abstract_variables(flax_attn.create_model('nl_resnet50'),
                         (1, 64, 64, 3))['params']
  assert {k for k in v if 'nonlocal' in v.get(k, {})} == {
      'stage2_block1', 'stage2_block3', 'stage3_block1', 'stage3_block3',
      'stage3_block5'}
  # The non-local block acts on the residual block's output (after the
  # addition and ReLU): z = W_z y + x around it.
  x = inputs((2, 6, 5, 32))
  kw = dict(filters=8, strides=1, conv=CONV, norm=NORM)
  block = NonLocalBottleneck(**kw, nonlocal_after=('stage2_block1',),
                             name='stage2_block1')
  variables = random_variables(block, x)
  plain = {c: {k: v for k, v in variables[c].items() if k != 'nonlocal'}
           for c in variables}
  residual_out = jax.jit(Bottleneck(**kw).apply)(plain, x)
  ref = nonlocal_reference(residual_out,
                           as_numpy(variables['params']['nonlocal']),
                           as_numpy(variables['batch_stats']['nonlocal']))
  np.testing.assert_allclose(jax.jit(block.apply)(variables, x), ref,
                             rtol=1e-4, atol=1e-4)
  other = NonLocalBottleneck(**kw, nonlocal_after=('stage2_block1',),
                             name='stage2_block0')
  assert 'nonlocal' not in shapes_of(other, x)['params']


# Two stages of one block each: every block type and placement, cheaply.
SMALL = dict(stem='small', stage_sizes=(1, 1), stage_widths=(16, 32),
             stem_width=8)
NAMED = ['simam_resnet18', 'simam_resnet50', 'gc_resnet50', 'skresnet18',
         'skresnext50_32x4d', 'triplet_resnet50', 'nl_resnet50']


@pytest.mark.parametrize('name', NAMED)
def test_named_models_trace_in_train_mode(name):
  extra = {}
  if name == 'nl_resnet50':  # the default places need 2+ blocks per stage
    extra = dict(nonlocal_after=('stage2_block0',))
  model = flax_attn.create_model(name, 5, **SMALL, **extra)
  x = jax.ShapeDtypeStruct((2, 16, 16, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  logits, state = jax.eval_shape(functools.partial(
      model.apply, train=True, mutable=['batch_stats']), variables, x)
  chex.assert_shape(logits, (2, 5))
  assert set(state['batch_stats']) == set(variables['batch_stats'])


def test_skresnext_train_step_under_jit():
  # The most involved unit (grouped SK inside a bottleneck), run for real.
  model = flax_attn.create_model('skresnext50_32x4d', 5, **SMALL)
  x = inputs((2, 16, 16, 3))
  variables = randomize(jax.eval_shape(model.init, jax.random.key(0), x))
  logits, state = jax.jit(functools.partial(
      model.apply, train=True, mutable=['batch_stats']))(variables, x)
  chex.assert_shape(logits, (2, 5))
  chex.assert_tree_all_finite(logits)
  changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)),
                                   variables['batch_stats'],
                                   state['batch_stats'])
  assert all(jax.tree_util.tree_leaves(changed))


@pytest.mark.parametrize('attn,trace', [
    ('simam', 'weights'), ('gc', 'context_weights'),
    ('triplet', 'spatial_map'), ('nonlocal', None)])
def test_attention_on_any_backbone(attn, trace):
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  for name in ('resnet20', 'res2net50_26w_4s'):
    model = flax_attn.create_model(name, 10, attn=attn, **(
        dict(width=8) if name == 'resnet20' else SMALL))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    logits, state = jax.eval_shape(functools.partial(
        model.apply, mutable=['intermediates']), variables, x)
    chex.assert_shape(logits, (2, 10))
    block = 'stage2_block0'
    if trace is None:  # non-local sows no map (it never forms the HW x HW one)
      assert 'attn' in variables['params'][block]
    else:
      assert trace in state['intermediates'][block]['attn']

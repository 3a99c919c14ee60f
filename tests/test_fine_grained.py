"""Du & Ma: CA, SA, CSCA and the FCN-ResNet50 family.

References are numpy from CBAM's Eq. 2-3 and the CSCA reading (outer
product of the channel and spatial weights) with the modules' parameters.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flax_attn import create_model, list_models
from flax_attn.attention import get_attention
from helpers import abstract_variables, model_param_count, param_count, sigmoid


def np_conv(x, kernel):
  """NHWC x HWIO convolution, stride 1, zero padding k // 2."""
  kernel = np.asarray(kernel, np.float64)
  k = kernel.shape[0]
  n, h, w, _ = x.shape
  xp = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
  out = np.zeros((n, h, w, kernel.shape[-1]))
  for i in range(k):
    for j in range(k):
      out += xp[:, i:i + h, j:j + w, :] @ kernel[i, j]
  return out


def np_bn(x, params, stats, eps=1e-5):
  return ((x - np.asarray(stats['mean'])) / np.sqrt(np.asarray(stats['var'])
                                                    + eps)
          * np.asarray(params['scale']) + np.asarray(params['bias']))


def relu(z):
  return np.maximum(z, 0.0)


def random_variables(module, *inputs):
  """numpy-random variables of the shapes `module.init` would give (no
  compiled initialiser; BN statistics away from 0 / 1)."""
  abstract = jax.eval_shape(
      lambda: module.init(jax.random.key(0), *inputs))
  rng = np.random.default_rng(0)

  def fill(path, leaf):
    name = str(path[-1])
    if 'var' in name or 'scale' in name:
      value = rng.uniform(0.5, 1.5, leaf.shape)
    elif len(leaf.shape) >= 2:
      value = rng.normal(0, 1 / np.sqrt(np.prod(leaf.shape[:-1])), leaf.shape)
    else:
      value = rng.normal(0, 0.3, leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def np_channel_weights(x, p):
  """CBAM Eq. 2: sigmoid(MLP(avg) + MLP(max)), MLP without biases."""
  w1, w2 = np.asarray(p['fc1']['kernel']), np.asarray(p['fc2']['kernel'])
  mlp = lambda v: relu(v @ w1) @ w2
  return sigmoid(mlp(x.mean(axis=(1, 2))) + mlp(x.max(axis=(1, 2))))  # (N, C)


def np_spatial_map(x, p, s):
  """CBAM Eq. 3: sigmoid(BN(conv7x7([mean_c; max_c]))), (N, H, W)."""
  pooled = np.stack([x.mean(axis=-1), x.max(axis=-1)], axis=-1)
  conv = np_conv(pooled, p['conv']['kernel'])
  return sigmoid(np_bn(conv, p['bn'], s['bn']))[..., 0]


def np_ca(x, v):
  return x * np_channel_weights(x, v['params']['channel'])[:, None, None, :]


def np_sa(x, v):
  ms = np_spatial_map(x, v['params']['spatial'], v['batch_stats']['spatial'])
  return x * ms[..., None]


def np_csca(x, v):
  """One C x H x W mask: outer product of Ms (from x) and Mc (from x)."""
  mc = np_channel_weights(x, v['params']['channel'])
  ms = np_spatial_map(x, v['params']['spatial'], v['batch_stats']['spatial'])
  mask = np.einsum('nhw,nc->nhwc', ms, mc)
  return x * mask


REFERENCES = {'ca': np_ca, 'sa': np_sa, 'csca': np_csca}


class FineGrainedAttentionTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_reference(self):
    x = np.random.default_rng(0).normal(size=(2, 6, 5, 32)).astype(
        np.float32)
    for name, reference in REFERENCES.items():
      module = get_attention(name)()
      variables = random_variables(module, x)
      out = self.variant(lambda v, y: module.apply(v, y))(variables, x)
      chex.assert_shape(out, x.shape)
      np.testing.assert_allclose(out, reference(x.astype(np.float64),
                                                variables),
                                 atol=1e-5, rtol=1e-5, err_msg=name)

  def test_csca_is_not_sequential_cbam(self):
    """CSCA's spatial map is computed from x, not from Mc * x (CBAM)."""
    x = np.random.default_rng(1).normal(size=(1, 5, 5, 16)).astype(
        np.float32)
    csca = get_attention('csca')()
    variables = random_variables(csca, x)
    cbam = get_attention('cbam')()
    out_csca = csca.apply(variables, x)
    out_cbam = cbam.apply(variables, x)  # same parameter tree
    assert not np.allclose(out_csca, out_cbam, atol=1e-4)

  def test_parameter_counts(self):
    x = jnp.zeros((1, 4, 4, 64))
    counts = {name: param_count(jax.eval_shape(
        get_attention(name)().init, jax.random.key(0), x)['params'])
              for name in REFERENCES}
    ca = 2 * 64 * (64 // 16)   # fc1 + fc2, no biases
    sa = 2 * 7 * 7 + 2         # conv 2 -> 1, no bias (BN follows), BN
    assert counts == {'ca': ca, 'sa': sa, 'csca': ca + sa}

  def test_bf16_compute_keeps_fp32_params(self):
    x = np.random.default_rng(2).normal(size=(2, 5, 5, 32)).astype(
        np.float32)
    for name in REFERENCES:
      variables = random_variables(get_attention(name)(), x)
      out32 = jax.jit(get_attention(name)().apply)(variables, x)
      out16 = jax.jit(get_attention(name)(dtype=jnp.bfloat16).apply)(
          variables, x.astype(jnp.bfloat16))
      assert out16.dtype == jnp.bfloat16
      assert all(p.dtype == jnp.float32
                 for p in jax.tree_util.tree_leaves(variables))
      chex.assert_trees_all_close(out16.astype(jnp.float32), out32,
                                  atol=5e-2, rtol=5e-2)


# ResNet-50 (timm / torchvision, 1000 classes): 25,557,032 parameters.
RESNET50 = 25_557_032
# CA adds 2 C^2 / 16 per bottleneck (C = 256, 512, 1024, 2048; 3/4/6/3 units).
CA_EXTRA = sum(n * 2 * c * c // 16 for n, c in ((3, 256), (4, 512),
                                                 (6, 1024), (3, 2048)))
SA_EXTRA = 16 * (2 * 49 + 2)


@pytest.mark.parametrize('name,expected', [
    ('fcn_resnet50', RESNET50),              # the 1x1 conv has FC's params
    ('ca_resnet50', RESNET50 + CA_EXTRA),    # 28,071,976
    ('sa_resnet50', RESNET50 + SA_EXTRA),    # 25,558,632
    ('csca_resnet50', RESNET50 + CA_EXTRA + SA_EXTRA),  # 28,073,576
])
def test_named_model_parameter_counts(name, expected):
  assert name in list_models('*resnet50')
  params = abstract_variables(create_model(name, 1000), (1, 32, 32, 3))[
      'params']
  assert param_count(params) == expected
  chex.assert_shape(params['head']['classifier']['kernel'],
                    (1, 1, 2048, 1000))  # FCN head: 1x1 conv to the classes


def test_attention_models_carry_fcn_head_and_cam():
  """Tiny CSCA-ResNet: logits are the spatial mean of the CAM (Sec. 2.2)."""
  model = create_model('csca_resnet50', 5, stage_sizes=(1, 1),
                       stage_widths=(4, 8), stem_width=8)
  images = np.random.default_rng(3).normal(size=(2, 32, 32, 3)).astype(
      np.float32)
  variables = random_variables(model, images)
  (logits, features), state = jax.jit(lambda v, x: model.apply(
      v, x, return_features=True, mutable=['intermediates']))(variables,
                                                              images)
  chex.assert_shape(features['cam'], (2, 4, 4, 5))
  np.testing.assert_allclose(logits, features['cam'].mean(axis=(1, 2)),
                             atol=1e-5, rtol=1e-5)
  maps = state['intermediates']['stage2_block0']['attn']
  chex.assert_shape(maps['spatial_map'][0], (2, 4, 4, 1))
  chex.assert_shape(maps['channel_weights'][0], (2, 1, 1, 32))
  assert 'classifier' in variables['params']['head']
  # The linear head is one override away, with the same parameter count.
  linear = create_model('csca_resnet50', 5, head='linear',
                        stage_sizes=(1, 1), stage_widths=(4, 8), stem_width=8)
  assert model_param_count(linear, (1, 32, 32, 3)) == model_param_count(
      model, (1, 32, 32, 3))


def np_spatial_map_train(x, p, s, momentum=0.9):
  """Eq. 3 in train mode: the BN after the 7x7 conv uses the batch's mean
  and (biased) variance over N, H, W; running statistics move by 0.1."""
  pooled = np.stack([x.mean(axis=-1), x.max(axis=-1)], axis=-1)
  conv = np_conv(pooled, p['conv']['kernel'])
  axes = (0, 1, 2)
  mean = conv.mean(axes)
  var = ((conv - mean) ** 2).mean(axes)
  normed = ((conv - mean) / np.sqrt(var + 1e-5) * np.asarray(p['bn']['scale'])
            + np.asarray(p['bn']['bias']))
  moved = lambda old, new: momentum * np.asarray(old) + (1 - momentum) * new
  stats = {'mean': moved(s['bn']['mean'], mean),
           'var': moved(s['bn']['var'], var)}
  return sigmoid(normed)[..., 0], stats


def test_train_mode_matches_reference():
  """CA, SA, CSCA with train=True: SA's BN normalises with batch statistics
  and updates its running ones; CA has no statistics."""
  x = np.random.default_rng(4).normal(size=(3, 6, 5, 32)).astype(np.float32)
  xd = x.astype(np.float64)
  for name in REFERENCES:
    module = get_attention(name)()
    variables = random_variables(module, x)
    out, state = jax.jit(lambda v, y, m=module: m.apply(
        v, y, train=True, mutable=['batch_stats']))(variables, x)
    p = variables['params']
    mc = (np_channel_weights(xd, p['channel'])[:, None, None, :]
          if 'channel' in p else 1.0)
    if 'spatial' in p:
      ms, stats = np_spatial_map_train(xd, p['spatial'],
                                       variables['batch_stats']['spatial'])
      for key in ('mean', 'var'):
        np.testing.assert_allclose(
            state['batch_stats']['spatial']['bn'][key], stats[key],
            atol=1e-5, rtol=1e-5, err_msg=f'{name} running {key}')
      ms = ms[..., None]
      # Differs from eval mode: the batch, not the running statistics.
      assert not np.allclose(out, REFERENCES[name](xd, variables),
                             atol=1e-3), name
    else:
      ms = 1.0
      assert not state.get('batch_stats')
    np.testing.assert_allclose(out, xd * mc * ms, atol=1e-5, rtol=1e-5,
                               err_msg=name)

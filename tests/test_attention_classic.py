"""SE, CBAM and ECA against references written from the papers' equations.

The references use numpy only and read the modules' parameters from the
variables dict; they share no code with flax_attn.
"""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flax_attn
from flax_attn.attention.cbam import CBAM
from flax_attn.attention.eca import EfficientChannelAttention
from flax_attn.attention.se import SqueezeExcite
from helpers import jit_init, param_count, randomize_batch_stats, sigmoid


def conv2d_same(x, w):
  """Plain zero-padded stride-1 2-D convolution, NHWC x HWIO."""
  kh, kw = w.shape[:2]
  n, h, wd, _ = x.shape
  xp = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
  out = np.zeros((n, h, wd, w.shape[-1]))
  for i in range(kh):
    for j in range(kw):
      out += np.einsum('nhwc,co->nhwo', xp[:, i:i + h, j:j + wd], w[i, j])
  return out


def inputs(shape=(2, 6, 5, 64), seed=0):
  return jax.random.normal(jax.random.key(seed), shape)


class SqueezeExciteTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_equations_2_to_4(self):
    x = inputs()
    module = SqueezeExcite()
    variables = jit_init(module, jax.random.key(1), x)
    y = self.variant(module.apply)(variables, x)
    p = jax.tree_util.tree_map(np.asarray, variables['params'])
    xn = np.asarray(x, np.float64)
    z = xn.mean(axis=(1, 2))                                    # Eq. 2
    s = sigmoid(np.maximum(z @ p['fc1']['kernel'] + p['fc1']['bias'], 0)
                @ p['fc2']['kernel'] + p['fc2']['bias'])        # Eq. 3
    ref = xn * s[:, None, None, :]                              # Eq. 4
    chex.assert_trees_all_close(np.asarray(y), ref, rtol=1e-5, atol=1e-6)

  def test_reduction_and_parameter_count(self):
    x = inputs((1, 4, 4, 256))
    v = SqueezeExcite().init(jax.random.key(0), x)
    assert param_count(v) == 2 * 256 * 16 + 16 + 256
    v = SqueezeExcite(reduction=8, rd_divisor=1).init(jax.random.key(0), x)
    assert param_count(v) == 2 * 256 * 32 + 32 + 256


class CBAMTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_equations_1_to_3(self):
    x = inputs((2, 7, 6, 32))
    module = CBAM()
    variables = randomize_batch_stats(
        jit_init(module, jax.random.key(1), x), jax.random.key(2))
    y = self.variant(module.apply)(variables, x)
    p = jax.tree_util.tree_map(np.asarray, variables['params'])
    bs = jax.tree_util.tree_map(np.asarray, variables['batch_stats'])
    xn = np.asarray(x, np.float64)
    w0, w1 = p['channel']['fc1']['kernel'], p['channel']['fc2']['kernel']
    mlp = lambda v: np.maximum(v @ w0, 0) @ w1
    mc = sigmoid(mlp(xn.mean(axis=(1, 2))) + mlp(xn.max(axis=(1, 2))))  # Eq. 2
    f1 = xn * mc[:, None, None, :]                                      # Eq. 1
    pooled = np.stack([f1.mean(-1), f1.max(-1)], axis=-1)
    s = conv2d_same(pooled, p['spatial']['conv']['kernel'])              # Eq. 3
    bn = bs['spatial']['bn']
    s = ((s - bn['mean']) / np.sqrt(bn['var'] + 1e-5)
         * p['spatial']['bn']['scale'] + p['spatial']['bn']['bias'])
    ref = f1 * sigmoid(s)
    chex.assert_trees_all_close(np.asarray(y), ref, rtol=1e-4, atol=1e-5)

  def test_parameter_count(self):
    c = 64
    v = CBAM().init(jax.random.key(0), inputs((1, 4, 4, c)))
    assert param_count(v['params']) == 2 * c * (c // 16) + 7 * 7 * 2 + 2


class ECATest(chex.TestCase):

  @pytest.mark.filterwarnings('ignore')
  def test_adaptive_kernel_size_eq_12(self):
    # |log2(C)/2 + 1/2|_odd for the ResNet widths: the paper's Fig. 4 / code.
    for c, k in ((64, 3), (128, 5), (256, 5), (512, 5), (1024, 5), (2048, 7)):
      t = int(abs((math.log2(c) + 1) / 2))
      assert (t if t % 2 else t + 1) == k
      v = EfficientChannelAttention().init(jax.random.key(0),
                                           inputs((1, 2, 2, c)))
      chex.assert_shape(v['params']['conv']['kernel'], (k, 1, 1))

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_equation_7(self):
    x = inputs((2, 5, 5, 128))
    module = EfficientChannelAttention()
    variables = jit_init(module, jax.random.key(1), x)
    y = self.variant(module.apply)(variables, x)
    w = np.asarray(variables['params']['conv']['kernel'])[:, 0, 0]
    k = w.shape[0]
    g = np.asarray(x, np.float64).mean(axis=(1, 2))
    gp = np.pad(g, ((0, 0), (k // 2, k // 2)))
    conv = np.stack([sum(w[j] * gp[:, i + j] for j in range(k))
                     for i in range(g.shape[1])], axis=1)
    ref = np.asarray(x) * sigmoid(conv)[:, None, None, :]
    chex.assert_trees_all_close(np.asarray(y), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('name', ['se', 'cbam', 'eca'])
def test_bfloat16_compute(name):
  x = inputs((2, 6, 6, 64))
  cls = type(flax_attn.get_attention(name)())
  m32, m16 = cls(), cls(dtype=jnp.bfloat16)
  variables = jit_init(m32, jax.random.key(0), x)
  y16 = m16.apply(variables, x.astype(jnp.bfloat16))
  assert y16.dtype == jnp.bfloat16
  y32 = m32.apply(variables, x)
  chex.assert_trees_all_close(y16.astype(jnp.float32), y32, atol=5e-2,
                              rtol=5e-2)

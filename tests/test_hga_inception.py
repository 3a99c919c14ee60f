"""HGA's Inception placement (Cao et al. 2020, Fig. 2d): the attention acts
on the concatenation of all four branches of an Inception block, the 1x1
branch included, and nothing follows it inside the block."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import flax_attn
from flax_attn import report
from flax_attn.attention.hga import HierarchicalGlobalAttention
from flax_attn.models.inception import InceptionBlock
from flax_attn.models.layers import make_conv, make_norm

WIDTHS = (8, 6, 12, 4, 8, 8)   # 36 channels out: HGA projects to 32


def _random_variables(module, x, seed=0):
  """Random weights; BN variances in [0.5, 1.5] (positive)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(module.init, jax.random.key(0), x)

  def draw(path, s):
    if path[-1].key == 'var':
      return jnp.asarray(rng.uniform(0.5, 1.5, s.shape), s.dtype)
    return jnp.asarray(0.3 * rng.standard_normal(s.shape), s.dtype)
  return jax.tree_util.tree_map_with_path(draw, shapes)


def _unit(x, p, s, name, kernel_size):
  """conv (bias-free, 'same' padding) -> BN (running statistics) -> ReLU."""
  pad = kernel_size // 2
  y = lax.conv_general_dilated(x, p[f'{name}_conv']['kernel'], (1, 1),
                               ((pad, pad), (pad, pad)),
                               dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                               precision=lax.Precision.HIGHEST)
  bn, stats = p[f'{name}_bn'], s[f'{name}_bn']
  y = (y - stats['mean']) / jnp.sqrt(stats['var'] + 1e-5) * bn['scale']
  return jnp.maximum(y + bn['bias'], 0.0)


def test_hga_acts_on_the_concatenated_block_output():
  hga = functools.partial(HierarchicalGlobalAttention, dtype=jnp.float32)
  block = InceptionBlock(WIDTHS, make_conv(jnp.float32),
                         make_norm(False, jnp.float32), attn=hga)
  x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 8, 8, 24)),
                  jnp.float32)
  variables = _random_variables(block, x)
  got = jax.jit(block.apply)(variables, x)

  p, s = variables['params'], variables['batch_stats']

  @jax.jit
  def by_hand(x):
    pooled = lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1),
                               (1, 1, 1, 1), ((0, 0), (1, 1), (1, 1), (0, 0)))
    concat = jnp.concatenate([
        _unit(x, p, s, 'branch1', 1),
        _unit(_unit(x, p, s, 'branch3_reduce', 1), p, s, 'branch3', 3),
        _unit(_unit(x, p, s, 'branch5_reduce', 1), p, s, 'branch5', 5),
        _unit(pooled, p, s, 'branch_pool', 1)], axis=-1)
    return concat, hga().apply({'params': p['attn']}, concat)

  concat, want = by_hand(x)
  chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-5)
  # The attention's gates differ between channels, the 1x1 branch's too.
  gates = np.asarray(want / concat)[np.asarray(concat) > 1e-3]
  assert np.ptp(gates) > 0.05


def test_named_models_add_hga_after_every_block():
  plain = flax_attn.create_model('inception_tiny', 10)
  model = flax_attn.create_model('hga_inception_tiny', 10)
  # HGA(c, 32, c): 64 c + 8320 parameters per block (SPEC, Table 1).
  outs = [sum(w[i] for i in (0, 2, 4, 5)) for w in
          (WIDTH for stage in model.stage_blocks for WIDTH in stage)]
  assert outs == [128, 240, 256]
  assert (report.count_params(model, 32) - report.count_params(plain, 32)
          == sum(64 * c + 8320 for c in outs))
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  logits, _ = jax.eval_shape(functools.partial(
      model.apply, train=True, mutable=['batch_stats']), variables, x)
  chex.assert_shape(logits, (2, 10))
  assert {'attn'} <= set(variables['params']['stage2_block0'])

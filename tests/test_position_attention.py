"""Blockwise position attention (flax_attn/position_attention.py, issue 21):
forward and gradients against the softmax formula in float64 NumPy, the
CSM and non-local modules against the previous dot_product_attention path,
compiled memory at ResNet-50's stage 1, and the CUDA / TPU lowering."""
import functools
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flax_attn.attention.csm import ChannelSpatialModule
from flax_attn.attention.non_local import NonLocalBlock
from flax_attn.position_attention import block_size, blockwise_attention
from helpers import random_variables

ONE_MATRIX_BYTES = 3136 * 3136 * 4  # 37.5 MiB: one float32 HW x HW at 56 x 56


def softmax_attention_and_grads(q, k, v, d_out, scale):
  """out = softmax(scale q k^T) v and its vector-Jacobian products, float64."""
  q, k, v, d_out = (np.asarray(a, np.float64) for a in (q, k, v, d_out))
  s = scale * q @ np.swapaxes(k, 1, 2)
  p = np.exp(s - s.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  dp = d_out @ np.swapaxes(v, 1, 2)
  ds = p * (dp - (dp * p).sum(-1, keepdims=True))    # softmax's Jacobian
  return (p @ v, scale * ds @ k, scale * np.swapaxes(ds, 1, 2) @ q,
          np.swapaxes(p, 1, 2) @ d_out)


@functools.partial(jax.jit, static_argnums=(4, 5, 6))
def _value_and_vjp(q, k, v, d_out, scale, block_q, block_k):
  out, vjp = jax.vjp(lambda *a: blockwise_attention(*a, scale, block_q,
                                                     block_k), q, k, v)
  return (out,) + vjp(d_out)


def _inputs(shape_q, keys, channels, dtype, seed=0):
  rng = np.random.RandomState(seed)
  n, lq, d = shape_q
  arrays = (rng.randn(n, lq, d), rng.randn(n, keys, d),
            rng.randn(n, keys, channels), rng.randn(n, lq, channels))
  # Round to the input dtype first: the reference sees the same numbers.
  return [np.asarray(jnp.asarray(a, dtype).astype(jnp.float32), np.float64)
          for a in arrays]


def _close(got, want, rtol):
  """Normwise relative: max |got - want| <= rtol * max(max |want|, 1).

  The floor 1 is the inputs' scale (N(0, 1)): with one key, dq and dk are 0
  exactly in exact arithmetic and rounding noise in float arithmetic.
  """
  for g, w in zip(got, want):
    g = np.asarray(jnp.asarray(g, jnp.float32), np.float64)
    err, size = np.abs(g - w).max(), np.abs(w).max()
    assert err <= rtol * max(size, 1.0), (err, size)


@pytest.mark.parametrize('lq,lk,d,c,blocks', [
    (1, 1, 3, 5, (None, None)),        # one position
    (49, 49, 4, 8, (16, 16)),          # 7 x 7 padded to 64: masked keys
    (63, 63, 3, 6, (None, None)),      # 7 x 9, one block
    (63, 20, 4, 7, (16, 8)),           # 7 x 9 queries, pooled 4 x 5 keys
    (196, 196, 4, 8, (None, None)),    # 14 x 14, the default block
    (3136, 3136, 2, 4, (None, None)),  # 56 x 56: 7 x 7 blocks of 448
])
def test_float32_forward_and_gradients_match_softmax_formula(lq, lk, d, c,
                                                            blocks):
  q, k, v, d_out = _inputs((1 if lq > 1000 else 2, lq, d), lk, c, jnp.float32)
  got = _value_and_vjp(*[jnp.asarray(a, jnp.float32) for a in (q, k, v, d_out)],
                       0.7, *blocks)
  assert got[0].dtype == jnp.float32 and got[0].shape == d_out.shape
  _close(got, softmax_attention_and_grads(q, k, v, d_out, 0.7), 1e-5)


def test_bfloat16_inputs_accumulate_in_float32():
  lq, lk, blocks = 49, 49, (16, 16)
  q, k, v, d_out = _inputs((2, lq, 8), lk, 16, jnp.bfloat16, seed=1)
  got = _value_and_vjp(*[jnp.asarray(a, jnp.bfloat16)
                         for a in (q, k, v, d_out)], 1.0, *blocks)
  assert all(g.dtype == jnp.bfloat16 for g in got)
  # Products of bf16 operands (p, ds rounded to bf16 as FlashAttention
  # does), float32 sums: measured 0.3-1.0% of the largest value (2.6 bf16
  # ulps of 2^-8 at most), at L = 49, 196 and 3136 alike.
  _close(got, softmax_attention_and_grads(q, k, v, d_out, 1.0), 2e-2)


def test_vmap_and_block_sizes():
  assert [block_size(n) for n in (1, 49, 196, 512, 784, 1024, 3136)] == [
      1, 49, 196, 512, 392, 512, 448]
  q, k, v, d_out = _inputs((3, 30, 4), 30, 6, jnp.float32, seed=2)
  attend = lambda q, k, v: blockwise_attention(q[None], k[None], v[None],
                                               0.5, 8, 16)[0]
  f = jax.jit(jax.vmap(lambda *a: jax.vjp(attend, *a[:3])[1](a[3]) +
                       (attend(*a[:3]),)))
  dq, dk, dv, out = f(*[jnp.asarray(a, jnp.float32) for a in (q, k, v, d_out)])
  _close((out, dq, dk, dv), softmax_attention_and_grads(q, k, v, d_out, 0.5),
         1e-5)


def _output_and_grads(module, variables, x, **kwargs):
  def loss(params, x):
    out = module.apply({**variables, 'params': params}, x,
                       mutable=['batch_stats'], **kwargs)[0]
    return jnp.sum(jnp.sin(out)), out
  return jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(
      variables['params'], x)


@pytest.mark.parametrize('make,kwargs', [
    (lambda impl: ChannelSpatialModule(implementation=impl), {}),
    (lambda impl: NonLocalBlock(implementation=impl), dict(train=True))],
                         ids=['csm', 'nonlocal'])
def test_modules_equal_the_dot_product_attention_path(make, kwargs):
  assert ChannelSpatialModule().implementation == 'blockwise'
  assert NonLocalBlock().implementation == 'blockwise'
  variables, x = random_variables(make('xla'), (2, 7, 9, 16))
  (grads_old, x_old), out_old = _output_and_grads(make('xla'), variables, x,
                                                  **kwargs)
  (grads_new, x_new), out_new = _output_and_grads(make('blockwise'),
                                                  variables, x, **kwargs)
  # Gradients that are zero in exact arithmetic (g's and w_z's biases under
  # BatchNorm in training mode) are rounding noise in both: the tolerance is
  # relative to the largest gradient.
  largest = max(float(jnp.abs(g).max())
                for g in jax.tree_util.tree_leaves((x_old, grads_old)))
  chex.assert_trees_all_close(out_new, out_old, atol=1e-5, rtol=1e-5)
  chex.assert_trees_all_close((x_new, grads_new), (x_old, grads_old),
                              atol=1e-5 * largest, rtol=1e-5)


def _stage1_gradient(module, train):
  """jit(grad) of a block at ResNet-50's stage 1 (1 x 56 x 56 x 256)."""
  x = jax.ShapeDtypeStruct((1, 56, 56, 256), jnp.float32)
  variables = jax.eval_shape(lambda: module.init(jax.random.key(0),
                                                 jnp.zeros(x.shape)))
  def loss(params, state, x):
    out = module.apply({**state, 'params': params}, x,
                       mutable=['batch_stats'], **train)[0]
    return jnp.sum(out * out)
  state = {k: v for k, v in variables.items() if k != 'params'}
  return jax.jit(jax.grad(loss, argnums=(0, 2))).trace(variables['params'],
                                                       state, x)


STAGE1_CASES = [
    (lambda impl: ChannelSpatialModule(mode='spatial_only',
                                       implementation=impl), {}),
    (lambda impl: NonLocalBlock(subsample=False, implementation=impl),
     dict(train=True))]


@pytest.mark.parametrize('make,train', STAGE1_CASES, ids=['csm', 'nonlocal'])
def test_stage1_gradient_needs_less_than_one_hw_by_hw_matrix(make, train):
  compiled = _stage1_gradient(make('blockwise'), train).lower().compile()
  # Measured on XLA:CPU: CSM 19.9 MiB, non-local 19.9 MiB; the 'xla' path
  # needs 159.3 and 156.4 MiB (benchmarks/position_attention_memory.py).
  assert compiled.memory_analysis().temp_size_in_bytes < ONE_MATRIX_BYTES


def _hw_by_hw_types(hlo_text, hw=3136):
  """Tensor types with two or more dimensions of at least `hw`."""
  return {t for t in re.findall(r'tensor<([0-9x]+)x[a-z]', hlo_text)
          if sum(int(n) >= hw for n in t.split('x')) >= 2}


@pytest.mark.parametrize('make,train', STAGE1_CASES, ids=['csm', 'nonlocal'])
def test_cuda_and_tpu_lowering_holds_no_hw_by_hw_array(make, train):
  lowered = _stage1_gradient(make('blockwise'), train).lower(
      lowering_platforms=('cuda', 'tpu'))
  assert not _hw_by_hw_types(lowered.as_text())
  old = _stage1_gradient(make('xla'), train).lower(
      lowering_platforms=('cuda', 'tpu'))
  assert _hw_by_hw_types(old.as_text())  # the check can fail


def test_bad_shapes_and_names_fail_in_one_line():
  with pytest.raises(ValueError, match=r'need \(N, Lq, d\)'):
    blockwise_attention(jnp.zeros((1, 4, 3)), jnp.zeros((1, 5, 2)),
                        jnp.zeros((1, 5, 6)))
  with pytest.raises(ValueError, match="valid: 'blockwise', 'xla'"):
    NonLocalBlock(implementation='flash').init(jax.random.key(0),
                                               jnp.zeros((1, 4, 4, 8)))


@pytest.mark.parametrize('lq,lk,blocks', [(63, 63, (None, None)),
                                          (49, 20, (16, 8))])
def test_forward_mode_matches_the_directional_derivative(lq, lk, blocks):
  """jax.jvp (the custom_jvp's blockwise tangent, masked padded keys
  included) equals d_out = p dv + (p * ds) v - rowsum(p * ds) out in
  float64 NumPy, and jax.linearize's transpose equals jax.vjp."""
  q, k, v, _ = _inputs((2, lq, 4), lk, 6, jnp.float32)
  dq, dk, dv, _ = _inputs((2, lq, 4), lk, 6, jnp.float32, seed=1)
  scale = 0.5
  f = lambda q, k, v: blockwise_attention(q, k, v, scale, *blocks)
  as32 = lambda *a: [jnp.asarray(x, jnp.float32) for x in a]
  out, tangent = jax.jit(lambda p, t: jax.jvp(f, p, t))(
      as32(q, k, v), as32(dq, dk, dv))
  s = scale * q @ np.swapaxes(k, 1, 2)
  p = np.exp(s - s.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  ds = scale * (dq @ np.swapaxes(k, 1, 2) + q @ np.swapaxes(dk, 1, 2))
  want = p @ dv + (p * ds) @ v - (p * ds).sum(-1, keepdims=True) * (p @ v)
  _close([out, tangent], [p @ v, want], 2e-5)
  # Reverse mode is the transpose of this linear map.
  _, lin = jax.linearize(f, *as32(q, k, v))
  d_out = jax.random.normal(jax.random.key(0), out.shape)
  by_transpose = jax.linear_transpose(lin, *as32(dq, dk, dv))(d_out)
  by_vjp = jax.vjp(f, *as32(q, k, v))[1](d_out)
  chex.assert_trees_all_close(by_transpose, by_vjp, atol=1e-5, rtol=1e-5)

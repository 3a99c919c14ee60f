"""Attention over the positions of a feature map, without the L x L matrix.

  out_i = sum_j softmax_j(scale * q_i . k_j) v_j,   i < L_q, j < L_k

is CSM's position attention (Yang, Zhang & Yang, Eq. 5; DANet's PAM; scale 1) and
the non-local block's embedded Gaussian (Wang et al. 2018, Eq. 1 and 3;
scale inner^-1/2). At ResNet stage 1 (56 x 56) L = 3,136: one L x L float32
matrix is 37.5 MiB per image, and `jax.nn.dot_product_attention` on XLA
keeps several of them for the backward pass.

`implementation='blockwise'` (the default) never builds it, on any backend:

  * Forward: for each block of queries, a loop over blocks of keys keeps the
    running row maximum m, normaliser l and un-normalised output (the online
    softmax of Milakov & Gimelshein 2018, as in FlashAttention, Dao et al.
    2022), then out = acc / l and logsumexp = m + log l.
  * Derivatives (`jax.custom_jvp`): the tangent in a direction (dq, dk, dv)
    is computed by blocks too, from q, k, v, out and the per-query
    logsumexp: each tile's probabilities are recomputed as
    p = exp(s - logsumexp) and, with ds = scale (dq k^T + q dk^T),
      d_out = p dv + (p * ds) v - rowsum(p * ds) out.
    That is forward mode (jvp, jacfwd, linearize, Hessian-vector products).
    Reverse mode is JAX's transpose of it; each tile is a `jax.checkpoint`,
    so the transpose recomputes p per tile rather than storing them: the
    products of FlashAttention-2's backward (Dao 2023, Algorithm 2),
      dv_j += p^T do,  ds = p * (do v^T - rowsum(do * out)),
      dq_i += scale ds k_j,  dk_j += scale ds^T q_i.
  * q and k keep their own width d (CSM: C/8), v its width C: no padding.
  * Block sizes follow L: one block (no loop) up to `MAX_BLOCK` positions,
    else ceil(L / MAX_BLOCK) near-equal blocks rounded up to a multiple of 8
    (3,136 -> 7 blocks of 448). Queries are zero-padded and the result
    sliced; padded keys are masked to -inf, so any L >= 1 works (49, 7 x 9).
  * Matrix products take the inputs' dtype (bf16 on accelerators) and
    accumulate in float32; the softmax statistics are float32.
  * Plain lax loops (`lax.map`, `lax.fori_loop`) of fusable XLA ops: it works
    under jit, vmap, grad and in the sharded train step, and lowers for CPU,
    CUDA and TPU alike. Live memory is O(L (d + C)) plus a few tiles of
    block_q x block_k per image.

`implementation='xla'` or 'cudnn' (or None, XLA's choice) is the previous
path through `jax.nn.dot_product_attention`, kept for comparison: there q and
k are zero-padded to v's width ('padded' layout, one head), or for cuDNN v is
split into heads of q's width that share q and k ('heads' layout).
"""
from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax

from flax_attn.errors import ConfigError

IMPLEMENTATIONS = ('blockwise', 'xla', 'cudnn', None)
MAX_BLOCK = 512
_F32 = jnp.float32


def block_size(length: int, max_block: Optional[int] = None) -> int:
  """Block length for `length` positions: all of them up to `max_block`
  (default: the module's MAX_BLOCK, read at trace time), else near-equal
  blocks of at most max_block, rounded up to a multiple of 8."""
  max_block = max_block or MAX_BLOCK
  if length <= max_block:
    return length
  count = -(-length // max_block)
  block = -(-length // count)
  return min(max_block, -(-block // 8) * 8)


def _pad_to(x, length):
  extra = length - x.shape[1]
  return x if extra == 0 else jnp.pad(x, [(0, 0), (0, extra), (0, 0)])


def _blocks(x, block, count):
  """(N, count * block, F) -> (count, N, block, F)."""
  n, _, f = x.shape
  return x.reshape(n, count, block, f).swapaxes(0, 1)


def _unblock(x):
  """(count, N, block, F) -> (N, count * block, F)."""
  count, n, block, f = x.shape
  return x.swapaxes(0, 1).reshape(n, count * block, f)


def _map_blocks(fn, count, *xs):
  """lax.map over the leading (block) axis; no loop for one block."""
  if count == 1:
    return jax.tree_util.tree_map(lambda y: y[None],
                                  fn(*[x[0] for x in xs]))
  return lax.map(lambda args: fn(*args), xs)


def _fold_blocks(fn, count, init):
  """fori_loop(0, count, fn, init); the body inline for one block."""
  if count == 1:
    return fn(0, init)
  return lax.fori_loop(0, count, fn, init)


def _scores(q, k, kv_start, scale, key_length):
  """scale * q k^T in float32, keys at or past `key_length` set to -inf."""
  s = jnp.einsum('nqd,nkd->nqk', q, k, preferred_element_type=_F32) * scale
  if key_length is None:
    return s
  index = kv_start + lax.broadcasted_iota(jnp.int32, s.shape, 2)
  return jnp.where(index < key_length, s, -jnp.inf)


def _forward(q, k, v, scale, block_q, block_k, key_length):
  """Padded inputs -> (out float32 (N, Lq_pad, C), logsumexp (N, Lq_pad))."""
  n, _, channels = v.shape
  nk = k.shape[1] // block_k
  mask_length = key_length if key_length < k.shape[1] else None

  def one_query_block(qb):
    def step(j, carry):
      m, l, acc = carry
      kb = lax.dynamic_slice_in_dim(k, j * block_k, block_k, axis=1)
      vb = lax.dynamic_slice_in_dim(v, j * block_k, block_k, axis=1)
      s = _scores(qb, kb, j * block_k, scale, mask_length)
      m_new = jnp.maximum(m, s.max(-1))
      correction = jnp.exp(m - m_new)
      p = jnp.exp(s - m_new[..., None])
      l = correction * l + p.sum(-1)
      acc = correction[..., None] * acc + jnp.einsum(
          'nqk,nkc->nqc', p.astype(v.dtype), vb, preferred_element_type=_F32)
      return m_new, l, acc

    rows = qb.shape[1]
    init = (jnp.full((n, rows), -jnp.inf, _F32), jnp.zeros((n, rows), _F32),
            jnp.zeros((n, rows, channels), _F32))
    m, l, acc = _fold_blocks(step, nk, init)
    # Every row sees at least one real key (padding < one block), so l > 0.
    return acc / l[..., None], m + jnp.log(l)

  nq = q.shape[1] // block_q
  out, lse = _map_blocks(one_query_block, nq, _blocks(q, block_q, nq))
  return _unblock(out), _unblock(lse[..., None])[..., 0]


def _tangent(q, k, v, out, lse, dq, dk, dv, scale, block_q, block_k,
             key_length):
  """The attention's derivative in the direction (dq, dk, dv), by blocks.

  With p = exp(s - logsumexp) recomputed per (query block, key block) tile
  and ds = scale (dq k^T + q dk^T):
    d_out = p dv + (p * ds) v - rowsum(p * ds) out.
  Linear in (dq, dk, dv): JAX transposes it for reverse mode. Each tile is
  a `jax.checkpoint`, so the transpose recomputes p from q, k and
  logsumexp instead of keeping every tile: FlashAttention-2's backward
  (Dao 2023, Algorithm 2), derived by JAX.
  """
  n, _, channels = v.shape
  nq, nk = q.shape[1] // block_q, k.shape[1] // block_k
  mask_length = key_length if key_length < k.shape[1] else None

  def one_query_block(qb, dqb, lseb, outb):
    @jax.checkpoint
    def step(j, carry):
      t, r = carry
      kb, vb, dkb, dvb = (lax.dynamic_slice_in_dim(a, j * block_k, block_k,
                                                   axis=1)
                          for a in (k, v, dk, dv))
      p = jnp.exp(_scores(qb, kb, j * block_k, scale, mask_length)
                  - lseb[..., None])
      ds = scale * (jnp.einsum('nqd,nkd->nqk', dqb, kb,
                               preferred_element_type=_F32)
                    + jnp.einsum('nqd,nkd->nqk', qb, dkb,
                                 preferred_element_type=_F32))
      pds = p * ds
      t = t + jnp.einsum('nqk,nkc->nqc', p.astype(v.dtype), dvb,
                         preferred_element_type=_F32)
      t = t + jnp.einsum('nqk,nkc->nqc', pds.astype(v.dtype), vb,
                         preferred_element_type=_F32)
      return t, r + pds.sum(-1)

    rows = qb.shape[1]
    init = (jnp.zeros((n, rows, channels), _F32), jnp.zeros((n, rows), _F32))
    t, r = _fold_blocks(step, nk, init)
    return t - r[..., None] * outb.astype(_F32)

  blocks = lambda x: _blocks(x, block_q, nq)
  d_out = _map_blocks(one_query_block, nq, blocks(q), blocks(dq),
                      blocks(lse[..., None])[..., 0], blocks(out))
  return _unblock(d_out)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4, 5, 6))
def _attend_padded(q, k, v, scale, block_q, block_k, key_length):
  return _forward(q, k, v, scale, block_q, block_k, key_length)[0].astype(
      v.dtype)


@_attend_padded.defjvp
def _attend_padded_jvp(scale, block_q, block_k, key_length, primals,
                       tangents):
  q, k, v = primals
  out, lse = _forward(q, k, v, scale, block_q, block_k, key_length)
  out = out.astype(v.dtype)
  d_out = _tangent(q, k, v, out, lse, *tangents, scale, block_q, block_k,
                   key_length)
  return out, d_out.astype(v.dtype)


def blockwise_attention(query, key, value, scale: float = 1.0,
                        block_q: Optional[int] = None,
                        block_k: Optional[int] = None):
  """softmax(scale * q k^T) v by blocks, never holding all L_q x L_k scores.

  Args:
    query: (N, L_q, d).
    key: (N, L_k, d).
    value: (N, L_k, C), any C.
    scale: multiplies the logits (CSM: 1, non-local: d^-1/2).
    block_q, block_k: block lengths; by default `block_size(L)`.

  Returns:
    (N, L_q, C) in `value`'s dtype.
  """
  fits = (query.ndim == key.ndim == value.ndim == 3 and
          query.shape[0] == key.shape[0] and query.shape[2] == key.shape[2]
          and key.shape[:2] == value.shape[:2])
  if not fits:
    raise ValueError(f'blockwise_attention: shapes query {query.shape}, key '
                     f'{key.shape}, value {value.shape} do not fit; need '
                     '(N, Lq, d), (N, Lk, d), (N, Lk, C)')
  lq, lk = query.shape[1], key.shape[1]
  block_q = min(block_q or block_size(lq), lq)
  block_k = min(block_k or block_size(lk), lk)
  lq_pad = -(-lq // block_q) * block_q
  lk_pad = -(-lk // block_k) * block_k
  dtype = jnp.result_type(query.dtype, key.dtype)
  out = _attend_padded(_pad_to(query.astype(dtype), lq_pad),
                       _pad_to(key.astype(dtype), lk_pad),
                       _pad_to(value, lk_pad), float(scale), block_q, block_k,
                       lk)
  return out[:, :lq]


def xla_attention(query, key, value, scale: float = 1.0,
                  implementation: Optional[str] = None,
                  layout: Optional[str] = None):
  """The previous path: `jax.nn.dot_product_attention` with one head.

  layout: 'padded' (q, k zero-padded to v's width C, one head) or 'heads'
  (v split into heads of q's width d sharing q and k, for cuDNN's head-width
  limit); by default 'heads' for cudnn, 'padded' otherwise.
  """
  n, length, width = query.shape
  channels = value.shape[-1]
  layout = layout or ('heads' if implementation == 'cudnn' else 'padded')
  if layout == 'padded':
    pad = [(0, 0), (0, 0), (0, channels - width)]
    q = jnp.pad(query, pad)[:, :, None, :]
    k = jnp.pad(key, pad)[:, :, None, :]
    out = jax.nn.dot_product_attention(q, k, value[:, :, None, :],
                                       scale=scale,
                                       implementation=implementation)
    return out[:, :, 0, :]
  if layout != 'heads':
    raise ValueError(f"unknown layout {layout!r}; valid: 'padded', 'heads'")
  heads = -(-channels // width)
  keys = key.shape[1]
  v = jnp.pad(value, [(0, 0), (0, 0), (0, heads * width - channels)])
  v = v.reshape(n, keys, heads, width)
  q = jnp.broadcast_to(query[:, :, None, :], (n, length, heads, width))
  k = jnp.broadcast_to(key[:, :, None, :], (n, keys, heads, width))
  out = jax.nn.dot_product_attention(q, k, v, scale=scale,
                                     implementation=implementation)
  return out.reshape(n, length, heads * width)[..., :channels]


def check_implementation(implementation, owner: str) -> None:
  """One-line error for an unknown implementation name."""
  if implementation not in IMPLEMENTATIONS:
    raise ConfigError(f'{owner}: unknown implementation {implementation!r}; '
                      "valid: 'blockwise', 'xla', 'cudnn', None")


def attend_positions(query, key, value, scale: float = 1.0,
                     implementation: Optional[str] = 'blockwise',
                     layout: Optional[str] = None):
  """sum_j softmax_j(scale * q_i . k_j) v_j over positions.

  Args:
    query, key: (N, L_q, d), (N, L_k, d).
    value: (N, L_k, C).
    scale: logit scale.
    implementation: 'blockwise' (default, this module's) or
      `jax.nn.dot_product_attention`'s 'xla', 'cudnn', None.
    layout: for the dot_product_attention path only (see `xla_attention`).

  Returns:
    (N, L_q, C) in `value`'s dtype.
  """
  check_implementation(implementation, 'attend_positions')
  if implementation == 'blockwise':
    return blockwise_attention(query, key, value, scale)
  return xla_attention(query, key, value, scale, implementation, layout)


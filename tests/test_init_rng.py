"""The hash PRNG used for initialisation (flax_attn/init_rng.py): its bits
against a NumPy re-implementation, the statistics the initialisers rely on,
and the smaller compiled initialiser it exists for."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flax_attn
from flax_attn.init_rng import init_key

N = 1 << 20


def _np_mix(x):
  x = x.astype(np.uint64) & 0xFFFFFFFF
  x ^= x >> 16
  x = (x * 0x7FEB352D) & 0xFFFFFFFF
  x ^= x >> 15
  x = (x * 0x846CA68B) & 0xFFFFFFFF
  return x ^ (x >> 16)


def _np_words(k0, k1, counter):
  a = _np_mix((_np_mix(counter ^ k0) + k1) & 0xFFFFFFFF)
  b = _np_mix((_np_mix(a ^ 0x9E3779B9 ^ k1) + k0) & 0xFFFFFFFF)
  return a, b


def test_bits_match_a_numpy_reimplementation():
  key = init_key(7)
  k0, k1 = (int(w) for w in jax.random.key_data(key))
  # seed: the words of hash(seed ^ mix(0 + golden)) under the pi key
  a, b = _np_words(0x243F6A88, 0x85A308D3,
                   np.uint64(7) ^ _np_mix(np.uint64(0x9E3779B9)))
  assert (k0, k1) == (int(a), int(b))
  counter = np.arange(1000, dtype=np.uint64)
  bits = jax.random.bits(key, (10, 100), jnp.uint32)
  chex.assert_trees_all_equal(
      np.asarray(bits).ravel(), _np_words(k0, k1, counter)[0].astype(np.uint32))
  s0, s1 = _np_words(k0 ^ 0x9E3779B9, k1, np.arange(3, dtype=np.uint64))
  chex.assert_trees_all_equal(
      np.asarray(jax.random.key_data(jax.random.split(key, 3))),
      np.stack([s0, s1], -1).astype(np.uint32))
  f0, f1 = _np_words(k0 ^ 0x13198A2E, k1, np.uint64(12345))
  chex.assert_trees_all_equal(
      np.asarray(jax.random.key_data(jax.random.fold_in(key, 12345))),
      np.array([f0, f1], np.uint32))


def test_same_seed_same_values_and_seeds_differ():
  draw = lambda s: np.asarray(jax.random.normal(init_key(s), (64,)))
  chex.assert_trees_all_equal(draw(3), draw(3))
  assert len({draw(s).tobytes() for s in range(20)}) == 20
  assert repr(jax.random.key_impl(init_key(0))) == "PRNGSpec('flax_attn_hash')"


def test_uniform_normal_and_truncated_normal_moments():
  key = init_key(0)
  u = np.asarray(jax.random.uniform(key, (N,)), np.float64)
  se = 1 / np.sqrt(N)  # standard errors below are this times the unit sd
  assert abs(u.mean() - 0.5) < 5 * se * np.sqrt(1 / 12)
  assert abs(u.var() - 1 / 12) < 5 * se * np.sqrt(1 / 180)
  n = np.asarray(jax.random.normal(jax.random.fold_in(key, 1), (N,)),
                 np.float64)
  assert abs(n.mean()) < 5 * se
  assert abs(n.var() - 1) < 5 * se * np.sqrt(2)
  assert abs((n ** 3).mean()) < 5 * se * np.sqrt(15)
  assert abs((n ** 4).mean() - 3) < 5 * se * np.sqrt(96)
  t = np.asarray(jax.nn.initializers.truncated_normal(1.0)(
      jax.random.fold_in(key, 2), (N,)), np.float64)
  assert -2 <= t.min() and t.max() <= 2
  assert abs(t.std() - 0.87962566) < 0.01  # sd of N(0, 1) cut to [-2, 2]


def test_bytes_and_bit_positions_are_uniform():
  bits = np.asarray(jax.random.bits(init_key(1), (N,), jnp.uint32))
  counts = np.bincount(bits.view(np.uint8), minlength=256)
  expected = 4 * N / 256
  chi2 = ((counts - expected) ** 2 / expected).sum()
  assert chi2 < 255 + 6 * np.sqrt(2 * 255), chi2  # 255 dof
  ones = np.unpackbits(bits.view(np.uint8)).reshape(N, 32).mean(0)
  np.testing.assert_array_less(np.abs(ones - 0.5), 5 * 0.5 / np.sqrt(N))


def test_neighbours_siblings_and_folded_keys_are_uncorrelated():
  key = init_key(2)
  normal = lambda k: np.asarray(jax.random.normal(k, (N,)), np.float64)
  bound = 5 / np.sqrt(N)
  x = normal(key)
  for lag in (1, 2, 7, 64):
    assert abs(np.corrcoef(x[:-lag], x[lag:])[0, 1]) < bound, lag
  streams = ([key] + list(jax.random.split(key, 3)) +
             [jax.random.fold_in(key, i) for i in range(3)] +
             [init_key(3)])
  draws = np.stack([normal(k) for k in streams])
  corr = np.corrcoef(draws)
  off_diagonal = corr[~np.eye(len(streams), dtype=bool)]
  assert np.abs(off_diagonal).max() < bound, corr


def test_network_init_follows_the_initialisers_and_compiles_smaller():
  model = flax_attn.create_model('cifar_resnet8', 10, width=16)
  images = jnp.zeros((1, 32, 32, 3))
  init = jax.jit(functools.partial(model.init, train=False))
  hlo = {}
  for name, key in [('hash', init_key(0)),
                    ('rbg', jax.random.key(0, impl='rbg'))]:
    lowered = init.lower(key, images)
    hlo[name] = lowered.compile().as_text().count('\n')
  variables = init(init_key(0), images)
  # He et al. (2015) normal, fan-out: std sqrt(2 / (3 * 3 * 64)) for the last
  # 3x3 conv of stage 3 (36,864 draws).
  kernel = variables['params']['stage3_block0']['conv2']['kernel']
  chex.assert_shape(kernel, (3, 3, 64, 64))
  target = np.sqrt(2 / (3 * 3 * 64))
  assert abs(float(jnp.std(kernel)) / target - 1) < 0.03
  assert abs(float(jnp.mean(kernel))) < 5 * target / np.sqrt(kernel.size)
  # Why it exists: the compiled initialiser is less than half as big.
  assert hlo['hash'] < 0.5 * hlo['rbg'], hlo


@pytest.mark.parametrize('bit_width,dtype', [(8, jnp.uint8), (16, jnp.uint16)])
def test_narrow_bits_are_the_top_bits_of_the_32_bit_words(bit_width, dtype):
  key = init_key(4)
  wide = np.asarray(jax.random.bits(key, (256,), jnp.uint32))
  narrow = np.asarray(jax.random.bits(key, (256,), dtype))
  chex.assert_trees_all_equal(narrow, (wide >> (32 - bit_width)).astype(dtype))

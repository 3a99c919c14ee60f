"""A counter-based PRNG for initialising networks: the same bits on every
platform, and a fraction of the compile time of JAX's generators on XLA:CPU.

An internal detail of the trainer (train.py initialises its state with it);
users initialise models with any JAX key, `jax.random.key(seed)`.

Initialising a network draws one random tensor per parameter, and `jax.jit`
compiles every draw as its own code. On XLA:CPU both of JAX's generators are
expensive: 'threefry2x32' is 20 rounds of integer mixing per draw plus
its key derivation, and 'rbg' lowers to `rng-bit-generator`, which the CPU
compiler expands into Philox code per call. For MGAN-Res2Net-50 that is
69,000 lines of optimised HLO and 20 s of compile on one core for the initial
train state (threefry: 40 s), before a single step runs.

`init_key(seed)` returns a typed key of the 'flax_attn_hash' implementation:
the 32-bit words of a key (k0, k1) index a keyed hash of the element counter,

    h(c) = mix(mix(c ^ k0) + k1),  mix = lowbias32
    (x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b;
     x ^= x >> 16; C. Wellons' integer-hash search, bias 0.17),

which is about ten integer ops per element, fused into one loop per
parameter. Split and fold-in hash the counter / the data the same way with a
second, differently keyed pair of rounds, so child keys are full-entropy
words rather than offsets of the parent. It cuts that compile to 14 s and
the HLO to a third (`benchmarks/README.md`) and, unlike 'rbg'
(whose bits XLA backends may produce differently), draws the same random bits
on CPU, GPU and TPU (the weights made from them agree to each backend's float
rounding).

It is a hash, not a cryptographic generator: it is meant for weight
initialisation (uniform, normal and truncated-normal draws, which
`tests/test_init_rng.py` checks for moments, independence between elements
and between keys). Training-time randomness keeps JAX's own generators.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.random import define_prng_impl

_GOLDEN = np.uint32(0x9E3779B9)   # 2^32 / phi: decorrelates the two rounds
_SEED_KEY = (np.uint32(0x243F6A88), np.uint32(0x85A308D3))  # digits of pi
_FOLD_SALT = np.uint32(0x13198A2E)


def _mix(x):
  """lowbias32: a bijective, low-bias 32-bit integer hash."""
  x = jnp.asarray(x, np.uint32)  # wrapping arithmetic, also for constants
  x = x ^ (x >> 16)
  x = x * np.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * np.uint32(0x846CA68B)
  return x ^ (x >> 16)


def _hash_words(k0, k1, counter):
  """Two 32-bit words per counter value, keyed by (k0, k1)."""
  a = _mix(_mix(counter ^ k0) + k1)
  b = _mix(_mix(a ^ _GOLDEN ^ k1) + k0)
  return a, b


def _seed(seed):
  seed = jnp.asarray(seed)
  lo = lax.convert_element_type(seed, np.uint32)
  hi = (lax.convert_element_type(seed >> 32, np.uint32)
        if seed.dtype.itemsize == 8 else np.uint32(0))
  a, b = _hash_words(*_SEED_KEY, lo ^ _mix(hi + _GOLDEN))
  return jnp.stack([a, b])


def _counter(shape):
  size = int(np.prod(shape, dtype=np.int64))
  if size >= 2**32:
    raise ValueError(f'init_rng draws at most 2**32 values per call; asked '
                     f'for shape {tuple(shape)} ({size} values)')
  return lax.iota(np.uint32, size)


def _split(key, shape):
  a, b = _hash_words(key[0] ^ _GOLDEN, key[1], _counter(shape))
  return jnp.stack([a, b], axis=-1).reshape(*shape, 2)


def _fold_in(key, data):
  a, b = _hash_words(key[0] ^ _FOLD_SALT, key[1],
                     lax.convert_element_type(data, np.uint32))
  return jnp.stack([a, b])


def _random_bits(key, bit_width, shape):
  a, b = _hash_words(key[0], key[1], _counter(shape))
  if bit_width == 64:
    bits = (lax.convert_element_type(a, np.uint64) << np.uint64(32)
            ) | lax.convert_element_type(b, np.uint64)
  elif bit_width == 32:
    bits = a
  elif bit_width in (8, 16):
    bits = lax.convert_element_type(a >> np.uint32(32 - bit_width),
                                    np.dtype(f'uint{bit_width}'))
  else:
    raise TypeError(f'bit_width={bit_width}: init_rng draws 8, 16, 32 or 64 '
                    'bits')
  return bits.reshape(shape)


HASH_PRNG_IMPL = define_prng_impl(
    key_shape=(2,), seed=_seed, split=_split, random_bits=_random_bits,
    fold_in=_fold_in, name='flax_attn_hash', tag='fah')


def init_key(seed: int = 0) -> jax.Array:
  """A typed PRNG key for `model.init` (see the module docstring)."""
  return jax.random.key(seed, impl=HASH_PRNG_IMPL)

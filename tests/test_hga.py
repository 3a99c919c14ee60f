"""HGA (Cao et al. 2020): values against a NumPy transcription of Eq. 1-7,
Eq. 12's parameter count, Table 1's projected form, Table 5/6 switches."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flax_attn
from flax_attn.attention.hga import HierarchicalGlobalAttention, adaptive_avg_pool
from helpers import (model_param_count, param_count, random_variables,
                     sigmoid, to_numpy)


# --- reference, straight from the paper -----------------------------------

def ref_adaptive_pool(x, bins):
  """PyTorch adaptive_avg_pool2d: bin i spans [floor(iH/n), ceil((i+1)H/n))."""
  n, h, w, c = x.shape
  out = np.zeros((n, bins, bins, c))
  for i in range(bins):
    r0, r1 = (i * h) // bins, int(np.ceil((i + 1) * h / bins))
    for j in range(bins):
      c0, c1 = (j * w) // bins, int(np.ceil((j + 1) * w / bins))
      out[:, i, j] = x[:, r0:r1, c0:c1].mean(axis=(1, 2))
  return out


def ref_group_conv(x, kernel, groups):
  """'Same' grouped convolution, kernel (k, k, C/groups, out), no bias."""
  k = kernel.shape[0]
  n, h, w, c = x.shape
  xp = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
  cin, cout = c // groups, kernel.shape[-1] // groups
  y = np.zeros((n, h, w, kernel.shape[-1]))
  for g in range(groups):
    xs = xp[..., g * cin:(g + 1) * cin]
    for dy in range(k):
      for dx in range(k):
        y[..., g * cout:(g + 1) * cout] += (
            xs[:, dy:dy + h, dx:dx + w] @ kernel[dy, dx, :, g * cout:(g + 1) * cout])
  return y


def ref_hga_logits(f, p, kernels=(1, 3, 5, 7), mfe=True, hap=True, ee=True):
  """Eq. 1-5 on a map f: the excitation logits."""
  if mfe:  # Eq. 1-2: grouped convs C -> C/4 with C/4 groups, concatenated.
    f = np.concatenate([ref_group_conv(f, p['mfe'][f'conv{k}x{k}']['kernel'],
                                       f.shape[-1] // 4) for k in kernels], -1)
  bins = (1, 2, 4) if hap else (1,)
  pooled = np.concatenate([ref_adaptive_pool(f, b).reshape(f.shape[0], -1)
                           for b in bins], -1)                          # Eq. 3
  if not ee:
    return pooled @ p['ee']['fc']['kernel']
  suppress = pooled @ p['ee']['suppress']['kernel']                     # Eq. 4
  return np.maximum(suppress, 0) @ p['ee']['excite']['kernel']          # Eq. 5


def ref_hga(x, p, projected=False, **switches):
  inner = x @ p['reduce']['kernel'][0, 0] if projected else x
  logits = ref_hga_logits(inner, p, **switches)
  if projected:
    logits = logits @ p['restore']['kernel']
  return x * sigmoid(logits)[:, None, None, :]                      # Eq. 6-7


def eq12(c):
  return (1 + 9 + 25 + 49) * c + 11 * c * c // 2


# --- tests ----------------------------------------------------------------

@pytest.mark.parametrize('size,bins', [(7, 4), (5, 2), (2, 4), (8, 2), (6, 1)])
def test_adaptive_pool_matches_pytorch_bins(size, bins):
  x = np.random.RandomState(0).randn(2, size, size + 1, 3)
  chex.assert_trees_all_close(np.asarray(adaptive_avg_pool(jnp.asarray(x), bins)),
                              ref_adaptive_pool(x, bins), atol=1e-5)


def test_adaptive_pool_matches_torch():
  """HAP's bins (Eq. 3) against torch.nn.functional.adaptive_avg_pool2d
  itself, on maps whose sides the bins do not divide (overlapping bins),
  smaller than the bins, and not square; and the flattened HAP vector
  (bin-major, channel-minor) built from torch's pooled maps."""
  import torch
  from flax_attn.attention.hga import hierarchical_average_pool
  rng = np.random.RandomState(1)
  for h, w in ((7, 7), (5, 9), (3, 2)):
    x = rng.randn(2, h, w, 3).astype(np.float32)
    nchw = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    pooled = []
    for bins in (1, 2, 3, 4):
      expected = torch.nn.functional.adaptive_avg_pool2d(nchw, bins).numpy()
      expected = expected.transpose(0, 2, 3, 1)              # to NHWC
      chex.assert_trees_all_close(
          np.asarray(adaptive_avg_pool(jnp.asarray(x), bins)), expected,
          atol=1e-6, rtol=1e-6)
      if bins != 3:
        pooled.append(expected.reshape(2, -1))
    chex.assert_trees_all_close(
        np.asarray(hierarchical_average_pool(jnp.asarray(x), (1, 2, 4))),
        np.concatenate(pooled, axis=-1), atol=1e-6, rtol=1e-6)


class HGAValueTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_plain_module_matches_equations(self):
    module = HierarchicalGlobalAttention(reduced_width=None)
    variables, x = random_variables(module, (2, 7, 7, 8))  # 7x7: uneven 2x2, 4x4 bins
    out = self.variant(module.apply)(variables, x)
    chex.assert_shape(out, x.shape)
    expected = ref_hga(np.asarray(x), to_numpy(variables['params']))
    chex.assert_trees_all_close(np.asarray(out), expected, atol=1e-5, rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_projected_module_matches_table1(self):
    module = HierarchicalGlobalAttention(reduced_width=8)
    variables, x = random_variables(module, (2, 6, 6, 24))
    out = self.variant(module.apply)(variables, x)
    expected = ref_hga(np.asarray(x), to_numpy(variables['params']), projected=True)
    chex.assert_trees_all_close(np.asarray(out), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('switches', [
    dict(mfe=False), dict(hap=False), dict(ee=False),
    dict(hap=False, ee=False), dict(mfe=False, ee=False),
    dict(mfe=False, hap=False), dict(kernels=(5,)), dict(kernels=(1, 7))])
def test_ablations_match_equations_and_counts(switches):
  kernels = switches.get('kernels', (1, 3, 5, 7))
  module = HierarchicalGlobalAttention(
      kernel_sizes=kernels, use_mfe=switches.get('mfe', True),
      use_hap=switches.get('hap', True), use_ee=switches.get('ee', True),
      reduced_width=None)
  c = 16
  variables, x = random_variables(module, (2, 5, 5, c))
  expected = ref_hga(np.asarray(x), to_numpy(variables['params']), **switches)
  chex.assert_trees_all_close(np.asarray(module.apply(variables, x)), expected,
                              atol=1e-5, rtol=1e-5)
  # Parameters by hand: MFE k^2 C per branch, pooled width P, EE P*C/4 + C^2/4.
  mfe = switches.get('mfe', True)
  pooled_channels = len(kernels) * c // 4 if mfe else c
  pooled = pooled_channels * (21 if switches.get('hap', True) else 1)
  expected_count = (sum(k * k for k in kernels) * c if mfe else 0) + (
      pooled * c // 4 + c * c // 4 if switches.get('ee', True) else pooled * c)
  assert param_count(variables['params']) == expected_count


@pytest.mark.parametrize('channels', [8, 16, 64, 256, 1024])
def test_plain_param_count_is_eq12(channels):
  module = HierarchicalGlobalAttention(reduced_width=None)
  assert model_param_count(module, (1, 4, 4, channels)) == eq12(channels)


@pytest.mark.parametrize('channels', [64, 256, 2048])
def test_projected_param_count_is_64c_plus_8320(channels):
  module = HierarchicalGlobalAttention()  # Table 1: HGA(c, 32, c)
  assert model_param_count(module, (1, 4, 4, channels)) == 64 * channels + 8320


def test_narrow_maps_use_the_plain_module():
  # Nothing to reduce when C <= b: Eq. 12 on C channels.
  assert model_param_count(HierarchicalGlobalAttention(),
                           (1, 4, 4, 16)) == eq12(16)


def test_bf16_compute_keeps_fp32_params():
  module = HierarchicalGlobalAttention(reduced_width=8)
  variables, x = random_variables(module, (2, 6, 6, 24))
  out16 = jax.jit(HierarchicalGlobalAttention(
      reduced_width=8, dtype=jnp.bfloat16).apply)(variables, x)
  bf16_vars = jax.eval_shape(HierarchicalGlobalAttention(
      reduced_width=8, dtype=jnp.bfloat16).init, jax.random.key(1), x)
  assert all(p.dtype == jnp.float32
             for p in jax.tree_util.tree_leaves(bf16_vars))
  assert out16.dtype == x.dtype
  chex.assert_trees_all_close(out16, jax.jit(module.apply)(variables, x),
                              atol=3e-2, rtol=3e-2)
  # bf16 input gives bf16 output.
  assert jax.eval_shape(module.apply, variables,
                        x.astype(jnp.bfloat16)).dtype == jnp.bfloat16


def test_attention_weights_are_sown():
  module = HierarchicalGlobalAttention(reduced_width=None)
  variables, x = random_variables(module, (2, 4, 4, 8))
  _, state = module.apply(variables, x, mutable=['intermediates'])
  (weights,) = state['intermediates']['channel_weights']
  chex.assert_shape(weights, (2, 1, 1, 8))
  assert bool(jnp.all((weights > 0) & (weights < 1)))


@pytest.mark.parametrize('kwargs,shape,match', [
    (dict(reduced_width=None), (1, 4, 4, 6), 'divisible by 4'),
    (dict(kernel_sizes=(2,)), (1, 4, 4, 8), 'odd positive'),
    (dict(pool_bins=(0,)), (1, 4, 4, 8), 'pool_bins'),
])
def test_bad_values_fail_in_one_line(kwargs, shape, match):
  with pytest.raises(ValueError, match=match):
    HierarchicalGlobalAttention(**kwargs).init(jax.random.key(0),
                                               jnp.zeros(shape))


def test_hga_resnet50_adds_table1_params():
  """Table 2: ResNet-50 25.55M -> HGA 26.73M; ours +64c+8320 per block."""
  base = model_param_count(flax_attn.create_model('resnet50'), (1, 32, 32, 3))
  hga = model_param_count(flax_attn.create_model('hga_resnet50'),
                          (1, 32, 32, 3))
  channels = [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3
  added = sum(64 * c + 8320 for c in channels)
  assert hga - base == added == 1_099_776
  assert abs(added - 1.18e6) / 1.18e6 < 0.1   # the paper's +1.18M


def test_cifar_resnet_blocks_take_plain_and_projected_forms():
  """Stage widths 16 and 32 take the plain module, 64 the projected one."""
  shape = (1, 8, 8, 3)
  base = model_param_count(flax_attn.create_model('resnet20', num_classes=10),
                           shape)
  hga = model_param_count(flax_attn.create_model('resnet20', num_classes=10,
                                                 attn='hga'), shape)
  assert hga - base == 3 * (eq12(16) + eq12(32) + 64 * 64 + 8320)

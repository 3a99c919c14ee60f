"""The CPU kernels (flax_attn/cpu_kernels.py), reached through their switch
by ops.conv_general_dilated and models/layers.BatchNorm, give the numbers of
what they replace; without the switch those are plain lax / flax.

conv_general_dilated: lax's convolution, computed as per-tap multiply-adds
(few channels per group), a matmul and shifted adds (few output channels),
or with its kernel gradient as im2col matmuls. BatchNorm: nn.BatchNorm with
a closed-form backward.
"""
import functools
import re

import chex
import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from flax_attn import cpu_kernels
from flax_attn import ops
from flax_attn.errors import ConfigError
from flax_attn.models import layers

NHWC = ('NHWC', 'HWIO', 'NHWC')


@pytest.fixture(autouse=True)
def _kernels_on():
  """Every test here traces with the CPU kernels on, as train.py does on a
  CPU host (tests that need them off say so)."""
  with cpu_kernels.enabled():
    yield


def _loss(conv, x, kernel, strides, padding):
  y = conv(x, kernel, strides, padding, dimension_numbers=NHWC)
  return jnp.sum(jnp.sin(y.astype(jnp.float32)))


@pytest.mark.parametrize('x_shape,kernel_shape,strides,padding', [
    ((3, 9, 9, 5), (3, 3, 5, 7), (1, 1), ((1, 1), (1, 1))),
    ((3, 9, 9, 5), (3, 3, 5, 7), (2, 2), ((1, 1), (1, 1))),
    ((3, 10, 10, 4), (1, 1, 4, 6), (2, 2), ((0, 0), (0, 0))),
    ((2, 15, 15, 3), (7, 7, 3, 8), (2, 2), ((3, 3), (3, 3))),
    ((5, 6, 7, 3), (3, 2, 3, 2), (1, 2), ((1, 0), (2, 1))),
])
def test_value_and_gradients_equal_lax(x_shape, kernel_shape, strides,
                                       padding):
  x = jax.random.normal(jax.random.key(0), x_shape)
  kernel = jax.random.normal(jax.random.key(1), kernel_shape)
  ref = jax.jit(jax.value_and_grad(_loss, (1, 2)), static_argnums=(0, 3, 4))
  got_value, got_grads = ref(ops.conv_general_dilated, x, kernel, strides,
                             padding)
  want_value, want_grads = ref(lax.conv_general_dilated, x, kernel, strides,
                               padding)
  np.testing.assert_allclose(got_value, want_value, rtol=1e-5)
  chex.assert_trees_all_close(got_grads, want_grads, rtol=2e-5, atol=2e-5)


def test_kernel_gradient_over_several_chunks(monkeypatch):
  # A tiny patch budget forces the loop over batch chunks (scan).
  monkeypatch.setattr(cpu_kernels, '_PATCH_BYTES_PER_CHUNK', 3000)
  x = jax.random.normal(jax.random.key(0), (12, 6, 6, 4))
  g = jax.random.normal(jax.random.key(1), (12, 6, 6, 5))
  padding = ((1, 1), (1, 1))
  got = jax.jit(lambda x, g: cpu_kernels._kernel_grad_im2col(
      x, g, (3, 3, 4, 5), (1, 1), padding))(x, g)
  conv = lambda k: lax.conv_general_dilated(x, k, (1, 1), padding,
                                            dimension_numbers=NHWC)
  want = jax.vjp(conv, jnp.zeros((3, 3, 4, 5)))[1](g)[0]
  chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-4)


# (x shape, kernel shape, padding) of stride-1 convolutions with few output
# channels: MLAN's SMA masks (3 x 3, C -> 3), an asymmetric kernel and
# padding, and a 5 x 5 C -> 1 with no padding.
@pytest.mark.parametrize('x_shape,kernel_shape,padding', [
    ((3, 9, 9, 20), (3, 3, 20, 3), ((1, 1), (1, 1))),
    ((2, 8, 7, 18), (3, 2, 18, 2), ((2, 0), (0, 1))),
    ((2, 9, 9, 24), (5, 5, 24, 1), ((0, 0), (0, 0))),
])
def test_narrow_output_conv_equals_lax(x_shape, kernel_shape, padding):
  x = jax.random.normal(jax.random.key(0), x_shape)
  # He-scaled, as a trained layer's: outputs of unit size (sin stays smooth).
  kernel = jax.random.normal(jax.random.key(1), kernel_shape) / np.sqrt(
      np.prod(kernel_shape[:3]))

  def loss(conv, x, kernel):
    y = conv(x, kernel, (1, 1), padding, dimension_numbers=NHWC)
    return jnp.sum(jnp.sin(y)), y

  fast = jax.jit(jax.value_and_grad(
      functools.partial(loss, ops.conv_general_dilated), (0, 1),
      has_aux=True))
  (_, got), got_grads = fast(x, kernel)
  (_, want), want_grads = jax.jit(jax.value_and_grad(
      functools.partial(loss, lax.conv_general_dilated), (0, 1),
      has_aux=True))(x, kernel)
  # Kernel gradients sum hundreds of products in another order than lax:
  # tolerances scale with the largest value.
  for got_leaf, want_leaf in zip((got, *got_grads), (want, *want_grads)):
    chex.assert_trees_all_close(got_leaf, want_leaf, rtol=1e-5,
                                atol=1e-5 * float(jnp.max(jnp.abs(want_leaf))))
  # A matmul and shifted adds replace every convolution.
  hlo = fast.lower(x, kernel).compile().as_text()
  assert 'convolution(' not in hlo


# (3, 3, 4, 8): the im2col kernel-gradient path; (3, 3, 4, 4): the tap path;
# (3, 3, 20, 3): the narrow-output path.
@pytest.mark.parametrize('kernel_shape', [(3, 3, 4, 8), (3, 3, 4, 4),
                                          (3, 3, 20, 3)])
def test_bfloat16_compute_keeps_dtypes_and_precision(kernel_shape):
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, kernel_shape[2]))
  kernel = jax.random.normal(jax.random.key(1), kernel_shape)
  grad = jax.jit(jax.grad(_loss, (1, 2)), static_argnums=(0, 3, 4))
  args = ((1, 1), ((1, 1), (1, 1)))
  bf16 = lambda a: a.astype(jnp.bfloat16)
  ours = grad(ops.conv_general_dilated, bf16(x), bf16(kernel), *args)
  xla = grad(lax.conv_general_dilated, bf16(x), bf16(kernel), *args)
  exact = grad(lax.conv_general_dilated, x, kernel, *args)
  assert ours[0].dtype == ours[1].dtype == jnp.bfloat16
  # bf16 rounding moves both away from the float32 gradients; ours may not
  # be much further off than XLA's own bf16 convolution.
  for got, want, ref in zip(ours, xla, exact):
    err = float(jnp.max(jnp.abs(got.astype(jnp.float32) - ref)))
    xla_err = float(jnp.max(jnp.abs(want.astype(jnp.float32) - ref)))
    assert err <= 1.5 * xla_err + 0.05 * float(jnp.max(jnp.abs(ref))), (
        err, xla_err)


# nn.Conv's default padding is the string 'SAME': it takes the fast paths
# too (plain, strided, grouped).
@pytest.mark.parametrize('padding', ['SAME', 'VALID'])
@pytest.mark.parametrize('kernel_shape,groups', [((3, 3, 4, 8), 1),
                                                 ((1, 1, 4, 6), 1),
                                                 ((3, 3, 2, 4), 2)])
def test_string_padding_equals_lax(padding, kernel_shape, groups):
  x = jax.random.normal(jax.random.key(0), (2, 7, 7, 4))
  kernel = jax.random.normal(jax.random.key(1), kernel_shape)

  def loss(conv, x, k):
    y = conv(x, k, (2, 2), padding, dimension_numbers=NHWC,
             feature_group_count=groups)
    return jnp.sum(y * jnp.cos(y)), y

  grads = lambda conv: jax.jit(jax.value_and_grad(
      functools.partial(loss, conv), (0, 1), has_aux=True))(x, kernel)
  (_, got), got_grads = grads(ops.conv_general_dilated)
  (_, want), want_grads = grads(lax.conv_general_dilated)
  chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(got_grads, want_grads, rtol=1e-5, atol=5e-5)


# Float32 convolutions that write 16 channels get a 17th, zero channel on
# CPU so that XLA runs them on YNNPACK (more than 16 channels on a side):
# 16 -> 16 in both passes, the 3 -> 16 stem forward only (its input gradient
# writes 3), 16 -> 8 in the input gradient only; 16 -> 32 already qualifies.
@pytest.mark.parametrize('kernel_shape,forward,input_grad', [
    ((3, 3, 16, 16), True, True), ((3, 3, 3, 16), True, False),
    ((3, 3, 16, 8), False, True), ((3, 3, 16, 32), False, False)])
def test_narrow_convs_are_padded_to_reach_ynnpack(kernel_shape, forward,
                                                 input_grad):
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, kernel_shape[2]))
  kernel = jax.random.normal(jax.random.key(1), kernel_shape)
  grad = jax.jit(jax.value_and_grad(_loss, (1, 2)), static_argnums=(0, 3, 4))
  args = ((1, 1), ((1, 1), (1, 1)))
  hlo = grad.lower(ops.conv_general_dilated, x, kernel, *args).compile(
      ).as_text()
  # Buffers with 17 channels, by the pass that makes them.
  with_17 = [name for line in hlo.splitlines()
             if re.search(r'= f32\[[\d,]*,17\]\S* ', line)
             for name in re.findall(r'op_name="([^"]*)"', line)]
  in_forward = any('transpose(' not in name for name in with_17)
  in_input_grad = any('transpose(' in name for name in with_17)
  assert (in_forward, in_input_grad) == (forward, input_grad), with_17
  value, grads = grad(ops.conv_general_dilated, x, kernel, *args)
  want_value, want_grads = grad(lax.conv_general_dilated, x, kernel, *args)
  np.testing.assert_allclose(value, want_value, rtol=1e-5)
  # YNNPACK sums in another order than Eigen: the gradients (up to ~50 here)
  # agree to ~1e-6 of their scale.
  chex.assert_trees_all_close(grads, want_grads, rtol=2e-5, atol=1e-4)


def test_other_layouts_fall_back_to_lax():
  x = jax.random.normal(jax.random.key(0), (2, 4, 6, 6))
  kernel = jax.random.normal(jax.random.key(1), (8, 4, 3, 3))
  args = (x, kernel, (1, 1), 'SAME')
  dn = ('NCHW', 'OIHW', 'NCHW')
  chex.assert_trees_all_close(
      ops.conv_general_dilated(*args, dimension_numbers=dn),
      lax.conv_general_dilated(*args, dimension_numbers=dn))


# (x shape, kernel shape HWIO, strides, padding, dilation, groups): depthwise
# (MGAN), depthwise with a multiplier, HGA's 4-in-1-out groups, ResNeXt-like
# 2 x 2 groups, strided, dilated (SK), asymmetric, and CBAM's 2 -> 1 mask.
@pytest.mark.parametrize('x_shape,kernel_shape,strides,padding,dilation,groups', [
    ((3, 9, 9, 8), (7, 7, 1, 8), (1, 1), ((3, 3), (3, 3)), (1, 1), 8),
    ((2, 8, 8, 4), (3, 3, 1, 8), (1, 1), ((1, 1), (1, 1)), (1, 1), 4),
    ((3, 9, 9, 8), (3, 3, 4, 2), (1, 1), ((1, 1), (1, 1)), (1, 1), 2),
    ((2, 10, 11, 8), (5, 3, 2, 8), (2, 1), ((2, 1), (1, 1)), (1, 1), 4),
    ((2, 12, 12, 6), (3, 3, 2, 6), (2, 2), ((2, 2), (2, 2)), (2, 2), 3),
    ((2, 9, 9, 2), (7, 7, 2, 1), (1, 1), ((3, 3), (3, 3)), (1, 1), 1),
])
def test_grouped_conv_taps_equal_lax(x_shape, kernel_shape, strides, padding,
                                     dilation, groups):
  x = jax.random.normal(jax.random.key(0), x_shape)
  kernel = jax.random.normal(jax.random.key(1), kernel_shape)

  def loss(conv, x, kernel):
    y = conv(x, kernel, strides, padding, rhs_dilation=dilation,
             dimension_numbers=NHWC, feature_group_count=groups)
    return jnp.sum(jnp.sin(y)), y

  fast = jax.jit(jax.value_and_grad(
      lambda x, k: loss(ops.conv_general_dilated, x, k), (0, 1),
      has_aux=True))
  (_, got), got_grads = fast(x, kernel)
  (_, want), want_grads = jax.value_and_grad(
      lambda x, k: loss(lax.conv_general_dilated, x, k), (0, 1),
      has_aux=True)(x, kernel)
  chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(got_grads, want_grads, rtol=1e-5, atol=5e-5)
  # The taps replace every convolution of the step.
  hlo = fast.lower(x, kernel).compile().as_text()
  assert 'convolution(' not in hlo


def test_grouped_conv_taps_over_several_chunks(monkeypatch):
  monkeypatch.setattr(cpu_kernels, '_PATCH_BYTES_PER_CHUNK', 2000)
  x = jax.random.normal(jax.random.key(0), (6, 5, 5, 4))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 1, 4))
  g = jax.random.normal(jax.random.key(2), (6, 5, 5, 4))
  args = ((1, 1), ((1, 1), (1, 1)))
  got = jax.vjp(lambda k: cpu_kernels._grouped_conv_taps(x, k, *args, (1, 1), 4),
                kernel)[1](g)[0]
  want = jax.vjp(lambda k: lax.conv_general_dilated(
      x, k, *args, dimension_numbers=NHWC, feature_group_count=4),
                 kernel)[1](g)[0]
  chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('kernel_shape,groups', [((3, 3, 4, 6), 1),
                                                 ((3, 3, 1, 4), 4)])
def test_batch_sharded_kernel_gradients_stay_per_device(monkeypatch,
                                                        kernel_shape, groups):
  # Under a mesh context, the loops over batch chunks (im2col and per-tap
  # kernel gradients) run on each device's images and psum the partial
  # sums; the SPMD partitioner left alone all-gathers the batch instead.
  monkeypatch.setattr(cpu_kernels, '_PATCH_BYTES_PER_CHUNK', 4000)  # several chunks
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()), (ops.BATCH_AXIS,))
  n = 2 * mesh.size
  x = jax.random.normal(jax.random.key(0), (n, 6, 6, 4))
  kernel = jax.random.normal(jax.random.key(1), kernel_shape)

  def grads(conv, x, kernel):
    return jax.grad(lambda x, k: jnp.sum(jnp.sin(conv(
        x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NHWC,
        feature_group_count=groups))), (0, 1))(x, kernel)

  want = jax.jit(functools.partial(grads, lax.conv_general_dilated))(x, kernel)
  sharded = jax.device_put(x, jax.sharding.NamedSharding(
      mesh, jax.P(ops.BATCH_AXIS)))
  with jax.set_mesh(mesh):
    fast = jax.jit(functools.partial(grads, ops.conv_general_dilated))
    hlo = fast.lower(sharded, kernel).compile().as_text()
    got = fast(sharded, kernel)
  chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-4)
  if mesh.size > 1 and jax.default_backend() == 'cpu':
    assert 'all-gather' not in hlo and 'all-reduce' in hlo


def test_make_conv_uses_it_and_keeps_parameter_names():
  conv = layers.make_conv(jnp.float32)(6, (3, 3), (2, 2), name='conv')
  assert conv.conv_general_dilated is ops.conv_general_dilated
  variables = jax.eval_shape(lambda: conv.init(jax.random.key(0),
                                               jnp.zeros((1, 8, 8, 3))))
  assert jax.tree_util.tree_map(lambda a: a.shape, variables) == {
      'params': {'kernel': (3, 3, 3, 6)}}


def _bn_loss(module, params, stats, x, weights):
  y, new = module.apply({'params': params, 'batch_stats': stats}, x,
                        mutable=['batch_stats'])
  return jnp.sum(jnp.sin(y.astype(jnp.float32)) * weights), new


@pytest.mark.parametrize('kernels', [True, False])
@pytest.mark.parametrize('dtype,rtol', [(jnp.float32, 1e-5),
                                        (jnp.bfloat16, 2e-2)])
def test_batch_norm_matches_flax_batch_norm(dtype, rtol, kernels):
  with cpu_kernels.enabled(kernels):
    _check_batch_norm_matches_flax(dtype, rtol)


def _check_batch_norm_matches_flax(dtype, rtol):
  x = (3.0 * jax.random.normal(jax.random.key(0), (6, 5, 4, 7)) + 1.0
       ).astype(dtype)
  weights = jnp.arange(7.0)
  kwargs = dict(use_running_average=False, momentum=0.9, epsilon=1e-5,
                dtype=dtype)
  ours = layers.BatchNorm(**kwargs)
  flax_bn = nn.BatchNorm(**kwargs, use_fast_variance=False)  # two-pass too
  variables = flax_bn.init(jax.random.key(1), x)
  assert (jax.tree_util.tree_structure(ours.init(jax.random.key(1), x))
          == jax.tree_util.tree_structure(variables))
  params = jax.tree_util.tree_map(
      lambda a: a + 0.3 * jax.random.normal(jax.random.key(2), a.shape),
      variables['params'])
  grad = jax.value_and_grad(_bn_loss, (1, 3), has_aux=True)
  (got_loss, got_stats), got_grads = grad(ours, params,
                                          variables['batch_stats'], x, weights)
  (want_loss, want_stats), want_grads = grad(flax_bn, params,
                                             variables['batch_stats'], x,
                                             weights)
  as32 = lambda t: jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), t)
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
  chex.assert_trees_all_close(got_stats, want_stats, rtol=1e-6)
  chex.assert_trees_all_close(as32(got_grads), as32(want_grads), rtol=rtol,
                              atol=rtol)
  assert got_grads[1].dtype == dtype
  evaluate = lambda m: m.clone(use_running_average=True).apply(
      {'params': params, **want_stats}, x)
  chex.assert_trees_all_close(as32(evaluate(ours)), as32(evaluate(flax_bn)))


def _train_norm(norm, x):
  """(output, batch variance) of a train-mode norm from make_norm, with
  scale 1.5 and bias -0.5."""
  module = norm()
  variables = module.init(jax.random.key(0), x)
  variables = {'params': {'scale': jnp.full_like(
      variables['params']['scale'], 1.5), 'bias': jnp.full_like(
          variables['params']['bias'], -0.5)},
               'batch_stats': {'mean': jnp.zeros_like(
                   variables['batch_stats']['mean']),
                               'var': jnp.zeros_like(
                                   variables['batch_stats']['var'])}}
  y, state = module.apply(variables, x, mutable=['batch_stats'])
  # momentum 0.9 from zero statistics: the batch variance is var / 0.1.
  return y, state['batch_stats']['var'] / 0.1


def _reference_norm(x):
  x = np.asarray(x, np.float64)
  mean = x.mean(axis=(0, 1, 2))
  var = ((x - mean) ** 2).mean(axis=(0, 1, 2))
  return 1.5 * (x - mean) / np.sqrt(var + 1e-5) - 0.5, var


@pytest.mark.parametrize('named_axis', [False, True])
def test_train_batch_norm_variance_is_two_pass(named_axis):
  """Activations of mean 1e3 and unit variance: float32 variance within
  1e-4 of float64 NumPy (the one-pass E[x^2] - E[x]^2 is off by ~1e-2 and
  more), for our BatchNorm and for nn.BatchNorm over a named axis. Our
  outputs are within 1e-4 too (centred by the corrected two-pass);
  nn.BatchNorm's subtract a float32-rounded mean (ulp 6e-5 at 1e3): 5e-4."""
  x = 1e3 + jax.random.normal(jax.random.key(3), (2, 8, 6, 6, 5))
  if named_axis:  # two "devices" of 8 images, statistics over both
    norm = layers.make_norm(True, jnp.float32, axis_name='batch')
    y, var = jax.vmap(lambda xs: _train_norm(norm, xs), axis_name='batch')(x)
    y, var = y.reshape((16,) + x.shape[2:]), var[0]
  else:
    norm = layers.make_norm(True, jnp.float32)
    y, var = jax.jit(functools.partial(_train_norm, norm))(
        x.reshape((16,) + x.shape[2:]))
  x = x.reshape((16,) + x.shape[2:])
  want_y, want_var = _reference_norm(x)
  np.testing.assert_allclose(var, want_var, rtol=1e-4)
  tol = 5e-4 if named_axis else 1e-4
  np.testing.assert_allclose(y, want_y, rtol=tol, atol=tol)
  # The test can fail: the one-pass variance of the same float32 data.
  one_pass = jnp.mean(x * x, (0, 1, 2)) - jnp.mean(x, (0, 1, 2)) ** 2
  assert np.max(np.abs(one_pass / want_var - 1)) > 1e-2


def test_train_batch_norm_in_bfloat16_is_accurate():
  """bf16 activations of mean 1e3: statistics in float32 (two-pass) match
  float64 NumPy on the same bf16 values; the bf16 output is within its own
  rounding (8 bits) of the exact one."""
  x = (1e3 + 8.0 * jax.random.normal(jax.random.key(4), (16, 6, 6, 5))
       ).astype(jnp.bfloat16)
  norm = layers.make_norm(True, jnp.bfloat16)
  y, var = jax.jit(functools.partial(_train_norm, norm))(x)
  assert y.dtype == jnp.bfloat16
  want_y, want_var = _reference_norm(np.asarray(x, np.float32))
  np.testing.assert_allclose(var, want_var, rtol=1e-4)
  np.testing.assert_allclose(np.asarray(y, np.float32), want_y,
                             atol=2 ** -7 * np.abs(want_y).max())


def test_make_norm_keeps_flax_batch_norm_for_named_axes():
  assert layers.make_norm(True, jnp.float32).func is layers.BatchNorm
  assert layers.make_norm(True, jnp.float32, axis_name='batch').func is (
      nn.BatchNorm)


def test_configure_modes():
  try:
    assert cpu_kernels.configure('auto', 'cpu')
    assert not cpu_kernels.configure('auto', 'tpu')
    assert not cpu_kernels.configure('auto', 'gpu')
    assert cpu_kernels.configure('on', 'tpu')
    assert not cpu_kernels.configure('off', 'cpu')
    with pytest.raises(ConfigError, match=r"^config.cpu_kernels='yes' is "
                       r"not valid; valid: 'auto', 'on', 'off'$"):
      cpu_kernels.configure('yes', 'cpu')
  finally:
    cpu_kernels.configure('on', 'cpu')  # the fixture restores the rest


def _primitive_names(jaxpr):
  names = set()
  for eqn in jaxpr.eqns:
    names.add(eqn.primitive.name)
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      names |= _primitive_names(sub)
  return names


def test_switched_off_the_layers_are_plain_lax_and_flax():
  """Without the switch: one lax convolution, no custom_vjp, no
  platform_dependent branch (cond), and forward mode works; with it, the
  custom backward passes are there."""
  conv = ops.Conv(8, (3, 3), name='conv')
  norm = layers.BatchNorm(use_running_average=False)
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 4))
  v_conv = conv.init(jax.random.key(1), x)
  v_norm = norm.init(jax.random.key(2), jnp.zeros((2, 6, 6, 8)))

  def f(x):
    y, _ = norm.apply(v_norm, conv.apply(v_conv, x), mutable=['batch_stats'])
    return y

  with cpu_kernels.enabled(False):
    names = _primitive_names(jax.make_jaxpr(f)(x).jaxpr)
    assert 'conv_general_dilated' in names
    assert not {n for n in names if 'custom' in n or n == 'cond'}, names
    dx = jax.random.normal(jax.random.key(3), x.shape)
    _, tangent = jax.jvp(f, (x,), (dx,))
    eps = 1e-2  # central difference; f is smooth, float32
    want = (f(x + eps * dx) - f(x - eps * dx)) / (2 * eps)
    chex.assert_trees_all_close(tangent, want, atol=2e-3, rtol=2e-3)
  # A new function: JAX caches traces by function, not by the switch.
  names = _primitive_names(jax.make_jaxpr(lambda x: f(x))(x).jaxpr)
  assert 'custom_vjp_call' in names, names

"""CPU kernels: faster XLA:CPU computations of convolutions and BatchNorm.

Off by default. The library's modules are plain flax / lax on every backend
(`ops.Conv` is `nn.Conv`, `models.layers.BatchNorm` plain two-pass
BatchNorm arithmetic), so every JAX transformation works on them. With the
kernels switched on, the same modules compute the same numbers (to float32
rounding) with what XLA:CPU runs faster:

  * a plain (ungrouped, undilated) NHWC convolution keeps XLA's forward, but
    its kernel gradient becomes im2col matmuls (`_kernel_grad_im2col`, up to
    10x faster than XLA:CPU's whole-map convolution for it), and float32
    convolutions writing 16 channels get a 17th, zero channel so that XLA
    runs them on YNNPACK (`_cpu_conv_nhwc`);
  * a stride-1 convolution with few output channels (MLAN's 3 x 3 C -> 3
    masks) becomes one matmul and shifted adds (`_narrow_output_conv`);
  * a convolution with few channels per group (depthwise, HGA's groups,
    CBAM's and MGAN's 2 -> 1 masks) becomes per-tap multiply-adds
    (`_grouped_conv_taps`);
  * training-mode BatchNorm gets a closed-form backward pass
    (`batch_norm_train`), two passes over the activations where autodiff of
    the forward takes four or five.

Each is a `jax.custom_vjp`: reverse mode (`grad`, `vjp`) works through them,
forward mode (`jvp`, `jacfwd`, `linearize`, Hessian-vector products) does
not. Each keeps XLA's own computation as its non-CPU branch
(`lax.platform_dependent`): with the switch on, a program lowered for GPU or
TPU still runs XLA's convolutions there. (The branch also keeps the compiled
CPU step identical to the one before the switch existed: without it, XLA
recomputed the per-tap forward in the backward pass of a batch-sharded step,
+20% for a 7 x 7 2 -> 1 mask's gradient.) They are for training steps on CPU hosts: `train.py` and `eval.py`
switch them on with `config.cpu_kernels` ('auto': when the devices are
CPUs), through `configure`. Measurements: benchmarks/README.md. On GPU and
TPU they bring nothing (compiled ahead of time by libtpu for a v5e 2x2 at
256 images per chip in bf16, a ResNet-50 train step with them accessed 9%
more bytes than flax's plain nn.Conv / nn.BatchNorm, with the same FLOPs
and temporaries), so 'auto' leaves those backends plain.

The switch is one process-wide setting, read when a function is traced:
`jax.jit` caches what it traced, so switch before the first call of a
jitted step. What train.py / eval.py switched on stays on in that process
(a notebook that trains, then differentiates a model in forward mode, turns
it off first: `cpu_kernels.configure('off', ...)`).

  from flax_attn import cpu_kernels
  cpu_kernels.configure('auto', jax.default_backend())   # as train.py does
  with cpu_kernels.enabled():                             # or for a block
    grads = jax.jit(jax.grad(loss))(params, images)
"""
from __future__ import annotations

import contextlib
import functools
from typing import Iterator

import jax
import jax.numpy as jnp
from jax import lax

from flax_attn import ops
from flax_attn.errors import ConfigError

MODES = ('auto', 'on', 'off')

_active = False


def active() -> bool:
  """Whether modules traced now use the CPU kernels."""
  return _active


def configure(mode: str, platform: str) -> bool:
  """Switches the kernels for what is traced from now on: `mode` 'on',
  'off', or 'auto' (on when `platform`, the devices' platform, is 'cpu').
  Returns whether they are on."""
  global _active
  if mode not in MODES:
    raise ConfigError(f'config.cpu_kernels={mode!r} is not valid; valid: '
                      "'auto', 'on', 'off'")
  _active = mode == 'on' or (mode == 'auto' and platform == 'cpu')
  return _active


@contextlib.contextmanager
def enabled(on: bool = True) -> Iterator[None]:
  """The kernels on (or off) for what is traced inside the block."""
  global _active
  before = _active
  _active = bool(on)
  try:
    yield
  finally:
    _active = before


# Bytes of im2col patches one step of the CPU weight-gradient loop builds:
# a few images at a time keeps them in cache (benchmarks/README.md).
_PATCH_BYTES_PER_CHUNK = 4 << 20

def _patches(x, kernel_size, strides, padding):
  """im2col of an NHWC batch: (N, Ho, Wo, kh * kw * C), tap-major."""
  (kh, kw), (sh, sw) = kernel_size, strides
  (pt, pb), (pl, pr) = padding
  n, h, w, c = x.shape
  ho = (h + pt + pb - kh) // sh + 1
  wo = (w + pl + pr - kw) // sw + 1
  if pt or pb or pl or pr:
    x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  taps = [lax.slice(x, (0, i, j, 0),
                    (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c),
                    (1, sh, sw, 1))
          for i in range(kh) for j in range(kw)]
  return taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)


def _batch_chunk(n: int, per_image_bytes: int) -> int:
  """Images per loop step: a divisor of n whose work fits the byte budget."""
  chunk = max(1, min(n, _PATCH_BYTES_PER_CHUNK // max(per_image_bytes, 1)))
  while n % chunk:
    chunk -= 1
  return chunk


def _batch_shards(n: int) -> int:
  """Devices the context mesh splits a batch of n along ops.BATCH_AXIS over
  (1: no mesh context, no such axis, already inside a shard_map over it, or
  n not divisible)."""
  mesh = jax.sharding.get_abstract_mesh()
  if (mesh.empty or ops.BATCH_AXIS not in mesh.axis_names
      or ops.BATCH_AXIS in mesh.manual_axes):
    return 1
  size = mesh.shape[ops.BATCH_AXIS]
  return size if n % size == 0 else 1


def _sum_over_batch_chunks(fn, x, g, chunk, out_shape):
  """sum of fn(x_chunk, g_chunk) over the batch, `chunk` images per step.

  With the batch sharded over a mesh, each device sums its own images and
  the partial sums are added (psum): left to the SPMD partitioner, the loop
  over batch chunks made every device all-gather x and g and compute the
  whole batch's sum (benchmarks/README.md).
  """
  n = x.shape[0]
  shards = _batch_shards(n)
  if shards > 1:
    local = functools.partial(_sum_over_batch_chunks, fn,
                              chunk=max(1, chunk // shards),
                              out_shape=out_shape)
    return jax.shard_map(
        lambda xs, gs: lax.psum(local(xs, gs), ops.BATCH_AXIS),
        in_specs=(jax.P(ops.BATCH_AXIS), jax.P(ops.BATCH_AXIS)),
        out_specs=jax.P(),
        axis_names={ops.BATCH_AXIS}, check_vma=False)(x, g)
  while n % chunk:
    chunk -= 1
  if chunk == n:
    return fn(x, g)
  xs = x.reshape((n // chunk, chunk) + x.shape[1:])
  gs = g.reshape((n // chunk, chunk) + g.shape[1:])
  total, _ = lax.scan(lambda acc, xg: (acc + fn(*xg), None),
                      jnp.zeros(out_shape, jnp.float32), (xs, gs))
  return total


def _kernel_grad_im2col(x, g, kernel_shape, strides, padding):
  """dL/dkernel of a stride/padding NHWC x HWIO convolution, as matmuls.

  sum over images of patches(x)^T @ g, a few images per loop step. XLA:CPU
  computes the same gradient as a convolution whose window is the whole
  output map, several times slower than this (up to 10x at 32 x 32).
  """
  kh, kw, ci, co = kernel_shape
  n = x.shape[0]
  ho, wo = g.shape[1], g.shape[2]
  if kh == kw == 1:  # no patches to build: one matmul over the whole batch
    chunk = n
  else:
    chunk = _batch_chunk(n, ho * wo * kh * kw * ci * x.dtype.itemsize)

  # The narrower operand goes first: XLA:CPU's matmul runs this
  # contraction over the long (pixel) axis up to 2x faster that way round.
  g_first = co <= kh * kw * ci

  def chunk_grad(xc, gc):
    p = _patches(xc, (kh, kw), strides, padding).reshape(-1, kh * kw * ci)
    gc = gc.reshape(-1, co)
    lhs, rhs = (gc, p) if g_first else (p, gc)
    return lax.dot_general(lhs, rhs, (((0,), (0,)), ((), ())),
                           preferred_element_type=jnp.float32)

  shape = (co, kh * kw * ci) if g_first else (kh * kw * ci, co)
  grad = _sum_over_batch_chunks(chunk_grad, x, g, chunk, shape)
  return (grad.T if g_first else grad).reshape(kernel_shape)


# XLA:CPU runs a float32 convolution on YNNPACK only if it has more than 16
# input or output channels; on Eigen, those with 16 output channels are
# 1.1-1.8x slower than on YNNPACK with a 17th, zero channel added
# (benchmarks/README.md).
_YNN_MIN_CHANNELS = 17


def _xla_conv_nhwc(x, kernel, strides, padding):
  return lax.conv_general_dilated(x, kernel, strides, padding,
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _pad_axis(a, axis, size):
  pads = [(0, 0)] * a.ndim
  pads[axis] = (0, size - a.shape[axis])
  return jnp.pad(a, pads)


def _ynn_conv_nhwc(x, kernel, strides, padding, pad_input):
  """The convolution with zero channels added to its input or (sliced off
  again) its output, so that XLA:CPU runs it on YNNPACK."""
  if pad_input:
    return _xla_conv_nhwc(_pad_axis(x, 3, _YNN_MIN_CHANNELS),
                          _pad_axis(kernel, 2, _YNN_MIN_CHANNELS),
                          strides, padding)
  co = kernel.shape[3]
  y = _xla_conv_nhwc(x, _pad_axis(kernel, 3, _YNN_MIN_CHANNELS), strides,
                     padding)
  return y[..., :co]


def _cpu_conv_nhwc(x, kernel, strides, padding, transposed=False):
  """The convolution, on CPU through YNNPACK where it writes 16 channels.

  A zero channel goes on the side with 16 channels: the input where it has
  them (16 -> 16 at 32 x 32: 6.8 -> 5.8 ms per 64 images; padding the
  output instead: 8.2), else the output, sliced off (the 3 -> 16 stem: 8.8
  -> 4.9 ms). Narrower outputs stay on Eigen: 17 -> 8 or 17 -> 12 on
  YNNPACK were up to 2x slower. `transposed`: this convolution is
  differentiated for its input gradient, which reads the output channels
  and writes the input ones, so the rule applies the other way round (16
  -> 16: 8.6 -> 6.0 ms with the cotangent padded).
  """
  ci, co = kernel.shape[2:]
  reads, writes = (co, ci) if transposed else (ci, co)
  if not (x.dtype == kernel.dtype == jnp.float32
          and writes == _YNN_MIN_CHANNELS - 1
          and reads < _YNN_MIN_CHANNELS):
    return _xla_conv_nhwc(x, kernel, strides, padding)
  # Padding the transposed convolution's input is padding this one's output.
  pad_reads = reads == _YNN_MIN_CHANNELS - 1
  return lax.platform_dependent(
      x, kernel, default=functools.partial(
          _xla_conv_nhwc, strides=strides, padding=padding),
      cpu=functools.partial(_ynn_conv_nhwc, strides=strides,
                            padding=padding,
                            pad_input=pad_reads != transposed))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_nhwc(x, kernel, strides, padding):
  return _cpu_conv_nhwc(x, kernel, strides, padding)


def _conv_nhwc_fwd(x, kernel, strides, padding):
  return _conv_nhwc(x, kernel, strides, padding), (x, kernel)


def _conv_nhwc_bwd(strides, padding, residuals, g):
  x, kernel = residuals
  # The input gradient is a convolution of g with the flipped kernel, out
  # and in channels swapped; a strided one dilates g, which YNNPACK lacks.
  if strides == (1, 1):
    input_conv = functools.partial(_cpu_conv_nhwc, transposed=True)
  else:
    input_conv = _xla_conv_nhwc
  _, input_vjp = jax.vjp(lambda v: input_conv(v, kernel, strides, padding),
                         x)
  (dx,) = input_vjp(g)
  xla_conv = functools.partial(_xla_conv_nhwc, strides=strides,
                               padding=padding)
  _, kernel_vjp = jax.vjp(lambda k: xla_conv(x, k), kernel)

  def xla_kernel_grad(x, g):
    return kernel_vjp(g)[0]

  def cpu_kernel_grad(x, g):
    return _kernel_grad_im2col(x, g, kernel.shape, strides,
                               padding).astype(kernel.dtype)

  dk = lax.platform_dependent(x, g, cpu=cpu_kernel_grad,
                              default=xla_kernel_grad)
  return dx, dk


_conv_nhwc.defvjp(_conv_nhwc_fwd, _conv_nhwc_bwd)


# Convolutions with at most this many (input x output) channels per group run
# as per-tap multiply-adds on CPU: XLA's grouped kernels are 10-50x slower
# than the arithmetic needs there, and its kernels for 2 -> 1 channel spatial
# masks (CBAM, MGAN) about 1.7x (benchmarks/README.md).
_TAP_CONV_MAX_GROUP_CHANNELS = 16


def _tap_slices(x, kernel_hw, strides, dilation, out_hw):
  """The kh * kw input windows of a padded N, H, W, ... x, one per tap."""
  (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel_hw, strides, dilation, out_hw
  rest = x.shape[3:]
  for i in range(kh):
    for j in range(kw):
      yield i, j, lax.slice(
          x, (0, i * dh, j * dw) + (0,) * len(rest),
          (x.shape[0], i * dh + (ho - 1) * sh + 1, j * dw + (wo - 1) * sw + 1)
          + rest, (1, sh, sw) + (1,) * len(rest))


def _sum_last_axis(a):
  """Sum over a short last axis as explicit adds: an elementwise chain that
  XLA:CPU fuses with the tap slices feeding it, where a reduce is handed to
  YNNPACK with each of the kh * kw slices materialised first (2-3x slower
  for 2 -> 1 masks and HGA's 4 -> 1 groups)."""
  total = a[..., 0]
  for k in range(1, a.shape[-1]):
    total = total + a[..., k]
  return total


def _per_channel_taps(kernel, groups):
  """HWIO grouped kernel -> (kh, kw, out per group, C): tap weights per input
  channel, one row per output channel of the group."""
  kh, kw, cin_g, cout = kernel.shape
  cout_g = cout // groups
  return kernel.reshape(kh, kw, cin_g, groups, cout_g).transpose(
      0, 1, 4, 3, 2).reshape(kh, kw, cout_g, groups * cin_g)


def _tap_conv_out_hw(x_shape, kernel_shape, strides, padding, dilation):
  return tuple(
      (x_shape[1 + a] + sum(padding[a])
       - dilation[a] * (kernel_shape[a] - 1) - 1) // strides[a] + 1
      for a in range(2))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _grouped_conv_taps(x, kernel, strides, padding, dilation, groups):
  """A grouped NHWC x HWIO convolution as kh * kw channelwise multiply-adds.

  Each output channel o of group g is sum over taps and over the group's
  input channels k of x_tap[g * cin + k] * w[tap, k, o]: the taps accumulate
  per input channel (one fused elementwise loop), then the group's cin
  channels are summed. Same FLOPs as the convolution.
  """
  return _grouped_conv_taps_fwd(x, kernel, strides, padding, dilation,
                                groups)[0]


def _grouped_conv_taps_fwd(x, kernel, strides, padding, dilation, groups):
  kh, kw, cin_g, cout = kernel.shape
  cout_g = cout // groups
  n = x.shape[0]
  ho, wo = _tap_conv_out_hw(x.shape, kernel.shape, strides, padding, dilation)
  # Accumulated in float32 (as XLA's convolutions do) for bf16 inputs.
  acc_dtype = jnp.promote_types(x.dtype, jnp.float32)
  taps = _per_channel_taps(kernel, groups).astype(acc_dtype)
  xp = jnp.pad(x, ((0, 0),) + tuple(padding) + ((0, 0),)).astype(acc_dtype)
  outs = []
  for o in range(cout_g):
    acc = None
    for i, j, window in _tap_slices(xp, (kh, kw), strides, dilation,
                                    (ho, wo)):
      term = window * taps[i, j, o]
      acc = term if acc is None else acc + term
    outs.append(_sum_last_axis(acc.reshape(n, ho, wo, groups, cin_g)))
  y = jnp.stack(outs, -1).reshape(n, ho, wo, cout)
  return y.astype(x.dtype), (x, kernel)


def _grouped_conv_taps_bwd(strides, padding, dilation, groups, residuals, g):
  x, kernel = residuals
  kh, kw, cin_g, cout = kernel.shape
  cout_g = cout // groups
  n, h, w, c = x.shape
  ho, wo = g.shape[1], g.shape[2]
  acc_dtype = jnp.promote_types(x.dtype, jnp.float32)
  taps = _per_channel_taps(kernel, groups).astype(acc_dtype)
  x = x.astype(acc_dtype)
  g = g.astype(acc_dtype)
  # Each output channel's cotangent, repeated over its group's inputs.
  g_in = jnp.repeat(g.reshape(n, ho, wo, groups, cout_g), cin_g,
                    axis=3).reshape(n, ho, wo, groups * cin_g, cout_g)

  # dx: the cotangent spread back over the padded input (stride by interior
  # padding), then correlated with the flipped taps.
  (sh, sw), (dh, dw) = strides, dilation
  hp, wp = h + sum(padding[0]), w + sum(padding[1])
  reach_h, reach_w = dh * (kh - 1), dw * (kw - 1)
  spread = lax.pad(
      g_in, jnp.zeros((), g.dtype),
      ((0, 0, 0), (reach_h, hp - (ho - 1) * sh - 1, sh - 1),
       (reach_w, wp - (wo - 1) * sw - 1, sw - 1), (0, 0, 0), (0, 0, 0)))
  dxp = None
  for i, j, window in _tap_slices(spread, (kh, kw), (1, 1), dilation,
                                  (hp, wp)):
    term = _sum_last_axis(window * taps[kh - 1 - i, kw - 1 - j].T)
    dxp = term if dxp is None else dxp + term
  (pt, _), (pl, _) = padding
  dx = dxp[:, pt:pt + h, pl:pl + w]

  # dkernel: per tap and input channel, sum of window * cotangent over the
  # batch and positions, a few images per loop step (cache-sized).
  def chunk_grad(xc, gc):
    xcp = jnp.pad(xc, ((0, 0),) + tuple(padding) + ((0, 0),))
    windows = _tap_slices(xcp, (kh, kw), strides, dilation, (ho, wo))
    if c < 8:
      return jnp.stack([jnp.einsum('nhwc,nhwco->oc', window, gc)
                        for _, _, window in windows])
    # Multiply-then-reduce per output channel rather than the einsum, which
    # XLA:CPU lowers to a dot batched over c, with transposes: 1.6-2x slower
    # from 8 channels up, 3x faster below (2 -> 1 masks).
    return jnp.stack([
        jnp.stack([jnp.sum(window * gc[..., o], axis=(0, 1, 2))
                   for o in range(cout_g)])
        for _, _, window in windows])

  chunk = _batch_chunk(n, hp * wp * c * 4 * kh * kw)
  dtaps = _sum_over_batch_chunks(chunk_grad, x, g_in, chunk,
                                 (kh * kw, cout_g, c))
  dkernel = dtaps.reshape(kh, kw, cout_g, groups, cin_g).transpose(
      0, 1, 4, 3, 2).reshape(kernel.shape)
  return dx.astype(residuals[0].dtype), dkernel.astype(kernel.dtype)


_grouped_conv_taps.defvjp(_grouped_conv_taps_fwd, _grouped_conv_taps_bwd)


# Convolutions with at most this many (taps x output channels), and more
# input than output channels, run on CPU as one matmul to every tap's output
# followed by shifted adds (`_narrow_output_conv`): MLAN's SMA masks, 3 x 3
# C -> 3. XLA's kernels for a 3-channel output are 1.5-3x slower than that
# (benchmarks/README.md).
_NARROW_OUTPUT_MAX_TAP_CHANNELS = 32


def _tap_matrix(kernel):
  """HWIO kernel -> (I, kh * kw * O): every tap's weights side by side."""
  kh, kw, ci, co = kernel.shape
  return kernel.transpose(2, 0, 1, 3).reshape(ci, kh * kw * co)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _narrow_output_conv(x, kernel, padding):
  """A stride-1 NHWC x HWIO convolution with few output channels.

  y = x @ [W_tap for every tap] gives, per input position, what it adds to
  each output through each tap (kh * kw * O values); the output is the sum
  of the kh * kw correspondingly shifted slices of the padded y. The
  backward pass is the mirror image: the cotangent shifted once per tap,
  side by side (kh * kw * O channels), then two matmuls for dx and dkernel,
  each over the whole batch. Same FLOPs as the convolution.
  """
  return _narrow_output_conv_fwd(x, kernel, padding)[0]


def _narrow_output_conv_fwd(x, kernel, padding):
  kh, kw, _, co = kernel.shape
  ho, wo = _tap_conv_out_hw(x.shape, kernel.shape, (1, 1), padding, (1, 1))
  acc_dtype = jnp.promote_types(x.dtype, jnp.float32)
  y = lax.dot_general(x, _tap_matrix(kernel), (((3,), (0,)), ((), ())),
                      preferred_element_type=acc_dtype)
  y = jnp.pad(y, ((0, 0),) + tuple(padding) + ((0, 0),))
  out = None
  for i, j, window in _tap_slices(y, (kh, kw), (1, 1), (1, 1), (ho, wo)):
    tap = (i * kw + j) * co
    term = window[..., tap:tap + co]
    out = term if out is None else out + term
  return out.astype(x.dtype), (x, kernel)


def _narrow_output_conv_bwd(padding, residuals, g):
  x, kernel = residuals
  kh, kw, ci, co = kernel.shape
  _, h, w, _ = x.shape
  ho, wo = g.shape[1], g.shape[2]
  (pt, _), (pl, _) = padding
  acc_dtype = jnp.promote_types(x.dtype, jnp.float32)
  # out[a, b] sums y[a + i - pt, b + j - pl, tap (i, j)], so y's cotangent
  # at tap (i, j) is g moved by (i - pt, j - pl); lax.pad crops where the
  # move is negative.
  dy = jnp.concatenate([
      lax.pad(g.astype(acc_dtype), jnp.zeros((), acc_dtype),
              ((0, 0, 0), (i - pt, h - ho - i + pt, 0),
               (j - pl, w - wo - j + pl, 0), (0, 0, 0)))
      for i in range(kh) for j in range(kw)], axis=-1)
  dx = lax.dot_general(dy, _tap_matrix(kernel).astype(acc_dtype),
                       (((3,), (1,)), ((), ())))
  # The narrow operand first (see _kernel_grad_im2col).
  dmatrix = lax.dot_general(dy.reshape(-1, kh * kw * co),
                            x.reshape(-1, ci).astype(acc_dtype),
                            (((0,), (0,)), ((), ())))
  dkernel = dmatrix.reshape(kh, kw, co, ci).transpose(0, 1, 3, 2)
  return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


_narrow_output_conv.defvjp(_narrow_output_conv_fwd, _narrow_output_conv_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated`, computed the way XLA:CPU runs fastest.

  Same arguments and results. For a 2-D NHWC x HWIO convolution (explicit
  or 'SAME' / 'VALID' padding), compiled for CPU:
  * a stride-1 one with few output channels (MLAN's 3 x 3 C -> 3 masks)
    runs as a matmul and shifted adds (`_narrow_output_conv`);
  * any other plain (undilated, ungrouped) one gets its kernel gradient from
    `_kernel_grad_im2col`;
  * one with few channels per group (depthwise, HGA's MFE, 2 -> 1 spatial
    masks) runs as per-tap multiply-adds (`_grouped_conv_taps`).
  On other backends, and for every other convolution, this is
  `lax.conv_general_dilated` itself.
  """
  xla_conv = functools.partial(
      lax.conv_general_dilated, window_strides=window_strides,
      padding=padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision,
      preferred_element_type=preferred_element_type)
  nhwc_2d = (lhs.ndim == 4 and batch_group_count == 1 and precision is None
             and preferred_element_type is None
             and all(d == 1 for d in (lhs_dilation or (1, 1)))
             and _is_nhwc_hwio(dimension_numbers, lhs.ndim))
  if not nhwc_2d:
    return xla_conv(lhs, rhs)
  strides = tuple(window_strides)
  dilation = tuple(rhs_dilation or (1, 1))
  if isinstance(padding, str):  # 'SAME' / 'VALID', nn.Conv's default
    padding = lax.padtype_to_pads(
        lhs.shape[1:3],
        tuple(d * (k - 1) + 1 for d, k in zip(dilation, rhs.shape[:2])),
        strides, padding)
  padding = tuple(tuple(p) for p in padding)
  group_channels = rhs.shape[2] * rhs.shape[3] // feature_group_count
  if group_channels > _TAP_CONV_MAX_GROUP_CHANNELS:
    if feature_group_count == 1 and all(d == 1 for d in dilation):
      kh, kw, ci, co = rhs.shape
      if (strides == (1, 1) and kh * kw > 1 and ci > co
          and kh * kw * co <= _NARROW_OUTPUT_MAX_TAP_CHANNELS):
        return _narrow_output_conv_on_cpu(lhs, rhs, padding)
      return _conv_nhwc(lhs, rhs, strides, padding)
    return xla_conv(lhs, rhs)
  return _small_group_conv(lhs, rhs, strides, padding, dilation,
                           feature_group_count)


# Jitted so that eager use (an un-jitted `model.init`) compiles the taps as
# one computation rather than dispatching each of them on its own.
@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _small_group_conv(x, kernel, strides, padding, dilation, groups):
  xla_conv = functools.partial(
      lax.conv_general_dilated, window_strides=strides, padding=padding,
      rhs_dilation=dilation, dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=groups)
  return lax.platform_dependent(
      x, kernel, default=xla_conv,
      cpu=functools.partial(_grouped_conv_taps, strides=strides,
                            padding=padding, dilation=dilation,
                            groups=groups))


@functools.partial(jax.jit, static_argnums=(2,))
def _narrow_output_conv_on_cpu(x, kernel, padding):
  return lax.platform_dependent(
      x, kernel, cpu=functools.partial(_narrow_output_conv, padding=padding),
      default=functools.partial(_conv_nhwc, strides=(1, 1), padding=padding))


def _is_nhwc_hwio(dimension_numbers, ndim: int) -> bool:
  nhwc = lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim,
                                    ('NHWC', 'HWIO', 'NHWC'))
  if dimension_numbers is None:
    return False
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    return dimension_numbers == nhwc
  return tuple(dimension_numbers) == ('NHWC', 'HWIO', 'NHWC')


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x, scale, bias, epsilon):
  """`ops.batch_norm_train` (training-mode BatchNorm over all axes but the
  last: y, mean, var) with the closed-form backward below: two passes over
  the activations where autodiff of the forward takes four or five."""
  return _batch_norm_train_fwd(x, scale, bias, epsilon)[0]


def _batch_norm_train_fwd(x, scale, bias, epsilon):
  axes = tuple(range(x.ndim - 1))
  xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  first, correction, var = ops.batch_moments(xf, axes)
  rstd = lax.rsqrt(var + epsilon)
  y = ((xf - first) - correction) * (rstd * scale) + bias
  return (y, first + correction, var), (x, first, correction, rstd, scale)


def _batch_norm_train_bwd(epsilon, residuals, cotangents):
  del epsilon
  x, first, correction, rstd, scale = residuals
  dy, dmean, dvar = cotangents
  axes = tuple(range(x.ndim - 1))
  count = x.size // x.shape[-1]
  centred = (x.astype(first.dtype) - first) - correction
  xhat = centred * rstd
  dy = dy.astype(first.dtype)
  dbias = jnp.sum(dy, axes)
  dscale = jnp.sum(dy * xhat, axes)
  # d/dx of the normalised output, plus the (normally zero) cotangents of
  # the returned statistics, in one pass.
  dx = (scale * rstd) * (dy - (dbias + xhat * dscale) / count)
  dx = dx + (dmean + 2.0 * dvar * centred) / count
  return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias


batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)

"""Multiply-adds counted the way the papers, fvcore and ptflops count them.

  counts = macs.count_macs(lambda v, x: model.apply(v, x, train=False),
                           variables, images)      # abstract shapes suffice
  counts.total, counts.conv, counts.matmul

The count walks the jaxpr of the function (`jax.make_jaxpr`: nothing is
compiled or computed) and adds, for every

  * convolution (`conv_general_dilated`): every kernel tap of every output,
    padding taps included: N * Hout * Wout * Cout * (kh * kw * Cin / groups);
  * matrix product (`dot_general`: dense layers, einsums, attention's
    q k^T and S v): batch * free(lhs) * free(rhs) * contracted size.

What is not counted: BatchNorm, activations, pooling, softmax, the
element-wise work of attention gates (products with a sigmoid mask, sums of
branches) and additions, as fvcore and torchvision's model table leave them
out (ResNet-50: 4.089 G, all of it convolutions and FC; the papers print
4.1 or 4.11, ptflops, which adds BN / ReLU / pooling, 4.12).

Where the traced arithmetic differs from the layer it computes, the layer
counts:
  * the CPU kernels (flax_attn/cpu_kernels.py: per-tap multiply-adds for
    grouped convolutions, matmul + shifted adds for narrow-output ones) are
    switched off while the function is traced, so every convolution counts
    as one, whatever the switch says; a `lax.platform_dependent` counts
    its default branch, so the figure does not depend on where it is traced;
  * `custom_vjp` / `custom_jvp` wrappers and `jit` calls count their body;
    `scan` bodies count once per iteration;
  * a product with a constant operand (a matrix built from shapes alone, as
    HGA's adaptive average pooling is) is pooling, not counted;
  * a contracted or free axis that was zero-padded before the product
    (CSM's q and k, padded to the value width so that one attention call
    serves both; flax_attn/attention/csm.py `attend_positions`) counts at
    its unpadded width, the width the paper's q k^T has. (Its 'heads'
    layout, for cuDNN only, repeats q and k over heads; traced that way the
    count would include the repeats.)
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Sequence, Tuple

import jax
from jax.extend import core as jex_core

from flax_attn import cpu_kernels

# Primitives through which the unpadded width of an axis carries over
# unchanged (element-wise on one array).
_SAME_SHAPE = {'convert_element_type', 'copy', 'neg', 'reduce_precision'}


@dataclasses.dataclass
class MacCount:
  """Multiply-adds of one traced computation."""
  conv: int = 0
  matmul: int = 0

  @property
  def total(self) -> int:
    return self.conv + self.matmul

  def __iadd__(self, other: 'MacCount') -> 'MacCount':
    self.conv += other.conv
    self.matmul += other.matmul
    return self

  def scaled(self, times: int) -> 'MacCount':
    return MacCount(self.conv * times, self.matmul * times)


def count_macs(fn, *args, **kwargs) -> MacCount:
  """Multiply-adds of `fn(*args, **kwargs)`; args may be ShapeDtypeStructs."""
  with cpu_kernels.enabled(False):
    # A wrapper: JAX caches a trace per function, whatever the switch said.
    closed = jax.make_jaxpr(lambda *a, **k: fn(*a, **k))(*args, **kwargs)
  inputs = [_Info() for _ in closed.jaxpr.invars]
  count, _ = _walk(closed.jaxpr, inputs, constvars_constant=True)
  return count


@dataclasses.dataclass(frozen=True)
class _Info:
  """What the walk knows of a variable."""
  # axis -> unpadded size, for axes zero-padded on the way here.
  widths: Tuple[Tuple[int, int], ...] = ()
  constant: bool = False    # computed from no input (shape-built matrices)
  zero: bool = False        # a scalar zero (a padding value)


_UNKNOWN = _Info()


def _literal_info(v) -> _Info:
  try:
    is_zero = float(v.val) == 0.0
  except (TypeError, ValueError):
    is_zero = False
  return _Info(constant=True, zero=is_zero)


def _sub_jaxprs(params: Dict[str, Any]):
  for value in params.values():
    values = value if isinstance(value, (list, tuple)) else (value,)
    for item in values:
      if isinstance(item, jex_core.ClosedJaxpr):
        yield item.jaxpr
      elif isinstance(item, jex_core.Jaxpr):
        yield item


def _walk(jaxpr, inputs: Sequence[_Info], constvars_constant: bool):
  """(MacCount, infos of the outputs) of a jaxpr."""
  env: Dict[Any, _Info] = dict(zip(jaxpr.invars, inputs))
  for v in jaxpr.constvars:
    env[v] = _Info(constant=constvars_constant)

  def info(v) -> _Info:
    if isinstance(v, jex_core.Literal):
      return _literal_info(v)
    return env.get(v, _UNKNOWN)

  total = MacCount()
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    ins = [info(v) for v in eqn.invars]
    constant = all(i.constant for i in ins) and not eqn.effects
    outs = [_Info(constant=constant) for _ in eqn.outvars]
    if name == 'conv_general_dilated':
      total.conv += _conv_macs(eqn)
    elif name == 'dot_general':
      if not (ins[0].constant or ins[1].constant):
        macs, widths = _dot_macs(eqn, dict(ins[0].widths),
                                 dict(ins[1].widths))
        total.matmul += macs
        outs[0] = _Info(widths=widths)
    elif name == 'cond':
      total += _cond_macs(eqn, ins[1:])
    elif name == 'scan':
      body, _ = _walk(eqn.params['jaxpr'].jaxpr, ins, True)
      total += body.scaled(eqn.params['length'])
    elif name == 'while':
      raise ValueError('count_macs: a while loop has no static trip count')
    elif name == 'pad':
      if ins[1].zero:
        outs[0] = _Info(widths=_pad_widths(eqn, dict(ins[0].widths)),
                        constant=constant)
    elif name in _SAME_SHAPE or (
        name == 'mul' and not all(v.aval.shape for v in eqn.invars)) or (
            name == 'div' and not eqn.invars[1].aval.shape):
      # One array through an element-wise op (or scaled by a scalar): its
      # zero-padded axes stay zero.
      arrays = [i for v, i in zip(eqn.invars, ins) if v.aval.shape]
      outs[0] = _Info(widths=arrays[0].widths if arrays else (),
                      constant=constant,
                      zero=name == 'convert_element_type' and ins[0].zero)
    elif name in ('broadcast_in_dim', 'reshape', 'transpose', 'squeeze',
                  'expand_dims'):
      outs[0] = _Info(widths=_moved_widths(eqn, dict(ins[0].widths)),
                      constant=constant)
    else:
      subs = list(_sub_jaxprs(eqn.params))
      if subs:  # jit, custom_vjp_call, custom_jvp_call, closed_call, remat
        sub = subs[0]
        sub_ins = ins[len(ins) - len(sub.invars):]
        count, sub_outs = _walk(sub, sub_ins, True)
        total += count
        outs = [_Info(widths=o.widths, constant=o.constant)
                for o in sub_outs]
    for v, o in zip(eqn.outvars, outs):
      env[v] = o
  return total, [info(v) for v in jaxpr.outvars]


def _conv_macs(eqn) -> int:
  """Every tap of every output: |out| * kh * kw * Cin / groups.

  The kernel's input-feature axis already holds Cin / groups, so this is
  |out| * |kernel| / Cout (batch_group_count splits the output features
  the same way)."""
  rhs = eqn.invars[1].aval.shape
  out = eqn.outvars[0].aval.shape
  out_features = rhs[eqn.params['dimension_numbers'].rhs_spec[0]]
  return math.prod(out) * math.prod(rhs) // out_features


def _dot_macs(eqn, lhs_widths: Dict[int, int], rhs_widths: Dict[int, int]):
  """batch * free(lhs) * free(rhs) * contracted, at unpadded widths; and
  the unpadded widths of the output's free axes."""
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = (
      eqn.params['dimension_numbers'])
  lhs = eqn.invars[0].aval.shape
  rhs = eqn.invars[1].aval.shape
  size = lambda shape, widths, axis: widths.get(axis, shape[axis])
  macs = 1
  for a, b in zip(lhs_contract, rhs_contract):
    macs *= min(size(lhs, lhs_widths, a), size(rhs, rhs_widths, b))
  for a, b in zip(lhs_batch, rhs_batch):
    macs *= max(size(lhs, lhs_widths, a), size(rhs, rhs_widths, b))
  # Output axes: batch, then lhs free, then rhs free.
  out_widths = {}
  axis = len(lhs_batch)
  for shape, widths, used in ((lhs, lhs_widths, set(lhs_contract)
                               | set(lhs_batch)),
                              (rhs, rhs_widths, set(rhs_contract)
                               | set(rhs_batch))):
    for a in range(len(shape)):
      if a in used:
        continue
      macs *= size(shape, widths, a)
      if a in widths:
        out_widths[axis] = widths[a]
      axis += 1
  return macs, tuple(sorted(out_widths.items()))


def _cond_macs(eqn, operands: Sequence[_Info]) -> MacCount:
  """A platform_dependent's default branch; otherwise the costliest one."""
  branches = eqn.params['branches']
  counts = [_walk(b.jaxpr, operands, True)[0] for b in branches]
  platforms = eqn.params.get('branches_platforms')
  if platforms and None in platforms:
    return counts[platforms.index(None)]
  return max(counts, key=lambda c: c.total)


def _pad_widths(eqn, widths: Dict[int, int]):
  """Axes a zero pad widens keep their unpadded size (no interior pad)."""
  shape = eqn.invars[0].aval.shape
  out = dict(widths)
  for axis, (lo, hi, interior) in enumerate(eqn.params['padding_config']):
    if (lo or hi) and not interior and lo >= 0 and hi >= 0:
      out[axis] = widths.get(axis, shape[axis])
  return tuple(sorted(out.items()))


def _moved_widths(eqn, widths: Dict[int, int]):
  """Where a padded axis lands after a broadcast, reshape or transpose."""
  if not widths:
    return ()
  name = eqn.primitive.name
  shape = eqn.invars[0].aval.shape
  out_shape = eqn.outvars[0].aval.shape
  if name == 'transpose':
    perm = eqn.params['permutation']
    return tuple(sorted((perm.index(a), w) for a, w in widths.items()))
  if name == 'broadcast_in_dim':
    dims = eqn.params['broadcast_dimensions']
    return tuple(sorted((dims[a], w) for a, w in widths.items()
                        if out_shape[dims[a]] == shape[a]))
  # reshape / squeeze / expand_dims: an axis keeps its width where the same
  # size sits after the same number of elements.
  out = []
  for a, w in widths.items():
    before = math.prod(shape[:a])
    for b in range(len(out_shape)):
      if (out_shape[b] == shape[a]
          and math.prod(out_shape[:b]) == before):
        out.append((b, w))
        break
  return tuple(sorted(out))

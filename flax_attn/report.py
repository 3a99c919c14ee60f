"""Parameters and multiply-adds of named models, beside the papers' figures.

  python -m flax_attn.report hga_resnet50 resnet50 [--image-size 224]
      [--num-classes 1000] [--no-xla]
  python -m flax_attn.report --readings mgan mlan
      (parameters of each paper reading beside MGAN Tables 2, 3, 5 and
      MLAN Tables 6, 9; see `READINGS`)

Parameters are counted from `jax.eval_shape` of `model.init` (nothing is
computed). GMACs are multiply-adds counted as the papers, fvcore and
torchvision's model tables count them (`flax_attn.macs`, from the jaxpr of
the inference forward pass, nothing compiled): every kernel tap of every
output of every convolution, zero-padding taps included, and every product
of a dense layer or matrix product (attention's q k^T and S v included);
BatchNorm, activations, pooling and attention's element-wise gates are not
counted. resnet50 reads 4.089 (torchvision: 4.09), resnet18 1.814 (1.81).
Every paper figure is compared with this column.

The second column, XLA GMACs, is XLA's cost analysis of the compiled forward
pass (`.cost_analysis()['flops'] / 2`): it skips the padding taps of border
pixels and adds element-wise work, so it reads 2-7% below the papers'
convention for ResNets (resnet50: 3.999).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from flax_attn import macs
from flax_attn.models import create_model
from flax_attn.registry import MODELS, UnknownNameError


@dataclasses.dataclass(frozen=True)
class Published:
  """A figure a paper (or timm) reports for a model of this name."""
  source: str
  params_m: Optional[float] = None   # millions of parameters
  gflops: Optional[float] = None     # G multiply-adds, as the papers count
  setting: str = '224x224, 1000 classes'


_HGA = 'HGA Table 2'
_MGAN_T2 = 'MGAN Table 2'
_MGAN_SETTING = 'setting not stated (ImageNet-size counts)'

# Published figures, from the papers' tables and timm.
PUBLISHED: Dict[str, List[Published]] = {
    'resnet18': [Published('timm', 11.69),
                 Published(_MGAN_T2, 11.69, setting=_MGAN_SETTING)],
    'resnet34': [Published('timm', 21.80)],
    'resnet50': [Published(_HGA, 25.55, 4.11), Published('timm', 25.56)],
    'resnet101': [Published(_HGA, 44.54, 7.83)],
    'resnet152': [Published(_HGA, 60.19, 11.55)],
    'resnext50_32x4d': [Published(_HGA, 25.02, 4.25),
                        Published('timm', 25.03)],
    'resnext101_32x4d': [Published(_HGA, 44.17, 8.01)],
    'hga_resnet50': [Published(_HGA, 26.73, 4.38)],
    'hga_resnet101': [Published(_HGA, 47.07, 8.23)],
    'hga_resnet152': [Published(_HGA, 63.92, 12.13)],
    'hga_resnext50_32x4d': [Published(_HGA, 26.21, 4.53)],
    'hga_resnext101_32x4d': [Published(_HGA, 46.70, 8.71)],
    'seresnet50': [Published('timm', 28.09)],
    'wide_resnet50_2': [Published('timm', 68.88)],
    'skresnet18': [Published('timm', 11.96)],
    'res2net50_26w_4s': [Published('timm', 25.70),
                         Published('MGAN Table 3 ("Res2Net50")', 25.56,
                                   setting=_MGAN_SETTING)],
    'res2net18': [Published('MGAN Table 5', 23.2, setting=_MGAN_SETTING)],
    'mgan_resnet18': [Published(_MGAN_T2, 11.70, setting=_MGAN_SETTING)],
    'mgan_res2net50': [Published('MGAN Table 3', 28.6,
                                 setting=_MGAN_SETTING)],
    # torchvision's model table (GFLOPS there are multiply-adds).
    'vgg16': [Published('torchvision', 138.36, 15.47),
              Published('MGAN Table 5', 138, setting=_MGAN_SETTING)],
    'vgg16_bn': [Published('torchvision', 138.37, 15.47)],
}


def _abstract_init(model, image_size: int):
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, train=False), images)
  return variables, images


def count_params(model, image_size: int) -> int:
  """Trainable parameters (no BatchNorm statistics), without computing."""
  variables, _ = _abstract_init(model, image_size)
  return int(sum(np.prod(leaf.shape) for leaf in
                 jax.tree_util.tree_leaves(variables['params'])))


def count_macs(model, image_size: int) -> int:
  """Multiply-adds of one image's inference forward pass, the papers' way
  (`flax_attn.macs`: convolutions with their padding taps, dense layers and
  matrix products), from the jaxpr: nothing is compiled."""
  variables, images = _abstract_init(model, image_size)
  return macs.count_macs(lambda v, x: model.apply(v, x, train=False),
                         variables, images).total


def count_flops(model, image_size: int) -> float:
  """XLA's flop count of one image's inference forward pass (MAC = 2)."""
  variables, images = _abstract_init(model, image_size)
  forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
  cost = forward.lower(variables, images).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per program
    cost = cost[0]
  return float(cost['flops'])


def measure(name: str, image_size: int = 224, num_classes: int = 1000,
            flops: bool = True, xla: bool = True) -> Dict[str, Any]:
  """One table row: params, GMACs (the papers' count; with `flops`), XLA's
  GMACs (with `flops` and `xla`: compiles) and the published figures."""
  model = create_model(name, num_classes=num_classes)
  row = {'model': name, 'params': count_params(model, image_size),
         'gmacs': None, 'xla_gmacs': None,
         'published': PUBLISHED.get(name, [])}
  if flops:
    row['gmacs'] = count_macs(model, image_size) / 1e9
    if xla:
      row['xla_gmacs'] = count_flops(model, image_size) / 2e9
  return row


def _published_text(entries: Sequence[Published], field: str) -> str:
  values = [f'{getattr(p, field):g}' for p in entries
            if getattr(p, field) is not None]
  return ' / '.join(values) if values else '-'


FOOTNOTE = (
    "GMACs: multiply-adds as the papers, fvcore and torchvision count them "
    "(the papers' \"FLOPs\"):",
    '  counted: every kernel tap of every output of a convolution, '
    'zero-padding taps included (N*Hout*Wout*Cout*kh*kw*Cin/groups); dense '
    'layers (in*out); matrix products, attention\'s q k^T and S v included '
    '(at the unpadded widths).',
    '  not counted: BatchNorm, activations, pooling (adaptive pooling as a '
    'product with a constant matrix included), softmax, attention\'s '
    'element-wise gates and sums, residual additions.',
    'XLA GMACs = XLA cost-analysis flops / 2: skips padding taps, adds '
    'element-wise work (resnet50: 3.999 vs 4.089).',
)


def format_table(rows: Sequence[Dict[str, Any]], image_size: int,
                 num_classes: int) -> str:
  """A fixed-width table with a footnote on units and sources."""
  header = ('model', 'params (M)', 'GMACs', 'paper params (M)',
            'paper GFLOPs', 'XLA GMACs', 'source')
  number = lambda value: '-' if value is None else f'{value:.3f}'
  lines = []
  for row in rows:
    lines.append((row['model'], f'{row["params"] / 1e6:.3f}',
                  number(row['gmacs']),
                  _published_text(row['published'], 'params_m'),
                  _published_text(row['published'], 'gflops'),
                  number(row.get('xla_gmacs')),
                  ' / '.join(p.source for p in row['published']) or '-'))
  widths = [max(len(r[i]) for r in [header] + lines)
            for i in range(len(header))]
  fmt = lambda r: '  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
  out = [fmt(header), fmt(tuple('-' * w for w in widths))]
  out += [fmt(r) for r in lines]
  settings = sorted({f'{p.source}: {p.setting}' for row in rows
                     for p in row['published']})
  out.append('')
  out.append(f'measured at {image_size}x{image_size}, {num_classes} classes, '
             'batch 1, inference.')
  out.extend(FOOTNOTE)
  out.extend(f'published: {s}' for s in settings)
  return '\n'.join(out)


# --------------------------------------------------------------------------
# Readings: a paper's model built under each reading this library offers,
# parameters only, beside the paper's figure (`--readings mgan mlan`).
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Reading:
  """One model under one reading, and the paper's parameter figure."""
  table: str
  model: str
  reading: str
  options: Tuple[Tuple[str, Any], ...] = ()
  num_classes: int = 1000
  paper_m: Optional[float] = None


def _mgan_readings() -> List[Reading]:
  from flax_attn.models.zoo.mgan import MGAN_READINGS
  rows = []
  for table, base, paper_base, model, paper in (
      ('MGAN Table 2', 'resnet18', 11.69, 'mgan_resnet18', 11.70),
      ('MGAN Table 3', 'res2net50_26w_4s', 25.56, 'mgan_res2net50', 28.6),
      ('MGAN Table 5', 'res2net18', 23.2, 'mgan_res2net50', 28.2)):
    rows.append(Reading(table, base, 'backbone', paper_m=paper_base))
    rows += [Reading(table, model, name, (('reading', name),), paper_m=paper)
             for name in MGAN_READINGS]
  return rows


# Tables 6 (CIFAR-10, width 8) and 9 (CIFAR-100, width 16), ResNet14 / 32.
_MLAN_PAPER = {
    (8, 'se'): (0.07, 0.31), (8, 'cbam'): (0.07, 0.32),
    (8, 'gc'): (0.07, 0.32), (16, 'se'): (0.28, 1.24),
    (16, 'cbam'): (0.28, 1.26), (16, 'gc'): (0.28, 1.26)}


def _mlan_readings() -> List[Reading]:
  rows = []
  for (width, attn), papers in _MLAN_PAPER.items():
    table, classes = (('MLAN Table 6', 10) if width == 8
                      else ('MLAN Table 9', 100))
    exact = {'rd_divisor': 1} if attn == 'se' else {}
    for depth, paper in zip((14, 32), papers):
      model = f'mlan_resnet{depth}'
      base = (('width', width), ('attn', attn))
      rows.append(Reading(table, model, f'{attn}, 1 module (default)',
                          base, classes, paper))
      rows.append(Reading(
          table, model, f'{attn}, 3 modules, r=4',
          base + (('attn_kwargs', dict(exact, reduction=4)),
                  ('attn_copies', 3)), classes, paper))
  return rows


READINGS = {'mgan': _mgan_readings, 'mlan': _mlan_readings}
READING_NOTES = {
    'mgan': ("MGAN: 1000 classes (the paper's baselines are ImageNet counts; "
             'its setting is not stated). Table 5 names no depth for '
             '"MGAN-Res2Net" (28.2M; Table 3 gives 28.6M for Res2Net-50); its '
             'Res2Net18 (23.2M) is no Res2Net-18 we know (ours: basic-block '
             'Res2Net, 7.3M). Readings: flax_attn/models/zoo/mgan.py.'),
    'mlan': ('MLAN: CIFAR-10 (Table 6) / CIFAR-100 (Table 9) classes, widths '
             '8 / 16. Readings: flax_attn/models/mlan.py.'),
}


def count_reading(reading: Reading) -> int:
  """Parameters of `reading`'s model (eval_shape; the count does not
  depend on the image size, 32 x 32 keeps tracing cheap)."""
  model = create_model(reading.model, num_classes=reading.num_classes,
                       **dict(reading.options))
  return count_params(model, 32)


def format_readings(rows: Sequence[Tuple[Reading, int]], note: str = ''
                    ) -> str:
  """Table, model, reading, our count, the paper's and the difference."""
  header = ('table', 'model', 'reading', 'params (M)', 'paper (M)', 'diff')
  lines = []
  for reading, params in rows:
    paper = reading.paper_m
    diff = ('-' if paper is None
            else f'{(params / 1e6 - paper) / paper * 100:+.1f}%')
    lines.append((reading.table, reading.model, reading.reading,
                  f'{params / 1e6:.3f}', '-' if paper is None else f'{paper:g}',
                  diff))
  widths = [max(len(r[i]) for r in [header] + lines)
            for i in range(len(header))]
  fmt = lambda r: '  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
  out = [fmt(header), fmt(tuple('-' * w for w in widths))]
  out += [fmt(r) for r in lines]
  out.append('')
  if note:
    out.append(note)
  return '\n'.join(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m flax_attn.report',
      description='Parameters and FLOPs of named models beside published '
                  'figures.')
  parser.add_argument('models', nargs='*', metavar='MODEL',
                      help='names from flax_attn.list_models()')
  parser.add_argument('--image-size', type=int, default=224)
  parser.add_argument('--num-classes', type=int, default=1000)
  parser.add_argument('--no-flops', action='store_true',
                      help='parameters only (no multiply-adds)')
  parser.add_argument('--no-xla', action='store_true',
                      help="skip compiling for XLA's cost analysis")
  parser.add_argument('--readings', nargs='+', choices=sorted(READINGS),
                      default=[],
                      help="parameters of each paper reading beside the "
                           "paper's tables (MGAN Tables 2, 3, 5; MLAN "
                           "Tables 6, 9)")
  args = parser.parse_args(argv)
  if not args.models and not args.readings:
    parser.error('give model names, or --readings mgan / mlan')
  if args.image_size < 1 or args.num_classes < 1:
    parser.error(f'--image-size and --num-classes must be positive, got '
                 f'{args.image_size} and {args.num_classes}')
  try:
    for name in args.models:  # every name checked before anything compiles
      MODELS.get(name)
  except UnknownNameError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if args.models:
    rows = [measure(name, args.image_size, args.num_classes,
                    flops=not args.no_flops, xla=not args.no_xla)
            for name in args.models]
    print(format_table(rows, args.image_size, args.num_classes))
  for family in args.readings:
    readings = READINGS[family]()
    print(format_readings([(r, count_reading(r)) for r in readings],
                          READING_NOTES[family]))
  return 0


if __name__ == '__main__':
  from flax_attn import runtime  # pylint: disable=g-import-not-at-top
  runtime.before_imports()
  runtime.start()  # no experiment config: one device, the default cache
  sys.exit(main())

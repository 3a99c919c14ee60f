"""Training and evaluation curves of one or more workdirs, in one PNG.

  python -m flax_attn.plot runs/quickstart runs/cbam [--out curves.png]
      [--x step|epoch]

Reads WORKDIR's metrics (metrics.jsonl, or on a gs:// workdir the objects
under metrics/: flax_attn.records, written by
flax_attn.training.MetricWriter; one JSON object per log row, with
train_loss, train_top1, lr and images_per_sec, and per
evaluation, with eval_loss and top1) and draws four panels: loss (train
solid, eval dashed), top-1 (train solid, eval dashed), learning rate and
images per second; one colour per run. Default output: curves.png in the
first workdir.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

from flax_attn import records, storage
from flax_attn.errors import UserError

# Panel title -> ((column, line style, label suffix), ...).
PANELS = (
    ('loss', (('train_loss', '-', 'train'), ('eval_loss', '--', 'eval'))),
    ('top-1 accuracy', (('train_top1', '-', 'train'), ('top1', '--', 'eval'))),
    ('learning rate', (('lr', '-', ''),)),
    ('images / s', (('images_per_sec', '-', ''),)),
)


def read_metrics(workdir: str) -> List[Dict[str, float]]:
  """The rows of WORKDIR's metrics: the single file metrics.jsonl and/or the
  per-flush objects of a bucket workdir (flax_attn.records); fails with one
  line if there are none."""
  if not records.exists(workdir, 'metrics'):
    raise UserError(f'{storage.join(workdir, "metrics.jsonl")} does not '
                    'exist; train first with: python train.py --config ... '
                    f'--workdir {workdir}')
  return records.read_records(workdir, 'metrics')


def series(rows: Sequence[Dict[str, float]], column: str, x: str = 'step'):
  """(xs, ys) of the rows that have `column`, sorted by x; a resumed run's
  repeated steps keep their last value."""
  points = {}
  for row in rows:
    if column in row and x in row and row[column] is not None:
      points[row[x]] = float(row[column])
  xs = np.asarray(sorted(points), np.float64)
  return xs, np.asarray([points[v] for v in sorted(points)], np.float64)


def curves_figure(workdirs: Sequence[str], labels: Optional[Sequence[str]] =
                  None, x: str = 'step'):
  """A 2 x 2 matplotlib Figure (no pyplot) of every run's curves."""
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  if x not in ('step', 'epoch'):
    raise UserError(f'--x={x!r} is not valid; valid: step, epoch')
  labels = list(labels) if labels else [
      os.path.basename(os.path.normpath(w)) or w for w in workdirs]
  runs = [read_metrics(w) for w in workdirs]
  fig = Figure(figsize=(11, 7.5), dpi=100)
  backend_agg.FigureCanvasAgg(fig)
  axes = [fig.add_subplot(2, 2, k + 1) for k in range(len(PANELS))]
  colours = [f'C{k % 10}' for k in range(len(runs))]
  for ax, (title, columns) in zip(axes, PANELS):
    drawn = False
    for rows, label, colour in zip(runs, labels, colours):
      for column, style, suffix in columns:
        xs, ys = series(rows, column, x)
        if len(xs):
          ax.plot(xs, ys, style, color=colour, marker='.' if len(xs) < 30
                  else None, label=f'{label} {suffix}'.strip())
          drawn = True
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(x)
    ax.grid(alpha=0.3)
    if drawn:
      ax.legend(fontsize=7)
    else:
      ax.text(0.5, 0.5, 'not recorded', ha='center', va='center',
              transform=ax.transAxes)
  fig.tight_layout()
  return fig


def plot(workdirs: Sequence[str], out: Optional[str] = None,
         labels: Optional[Sequence[str]] = None, x: str = 'step') -> str:
  """Writes the curves of `workdirs` to `out` (default
  WORKDIR0/curves.png); returns the path."""
  if not workdirs:
    raise UserError('no workdir given')
  out = out or storage.join(workdirs[0], 'curves.png')
  fig = curves_figure(workdirs, labels, x)
  if storage.is_remote(out):
    png = io.BytesIO()
    fig.savefig(png, format='png', dpi=100)
    storage.write_atomic(out, png.getvalue())
    return out
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=100)
  return out


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m flax_attn.plot',
      description='Training and eval curves of workdirs (metrics.jsonl).')
  parser.add_argument('workdirs', nargs='+', metavar='DIR')
  parser.add_argument('--out', default=None,
                      help='PNG to write (default DIR0/curves.png)')
  parser.add_argument('--labels', default=None,
                      help='comma-separated run names (default: folder names)')
  parser.add_argument('--x', default='step', choices=('step', 'epoch'))
  args = parser.parse_args(argv)
  labels = args.labels.split(',') if args.labels else None
  if labels and len(labels) != len(args.workdirs):
    print(f'error: --labels has {len(labels)} names for '
          f'{len(args.workdirs)} workdirs', file=sys.stderr)
    return 2
  try:
    path = plot(args.workdirs, args.out, labels, args.x)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'wrote {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())

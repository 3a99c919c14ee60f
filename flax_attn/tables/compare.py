"""A table's runs beside the paper: ROOT/TABLE.md and ROOT/TABLE.png.

Measured top-1 (and top-5) from each row's eval.json, in the paper's own
metric (accuracy or error, %), the difference in percentage points, the
steps actually run, and parameters / GMACs counted by flax_attn.report
(`count_params`, `count_macs`: the papers' multiply-add convention) for the
row's full-size model, beside the paper's figures. Rows not run yet, still
running or failed are marked so.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence

from flax_attn.tables import runner
from flax_attn.tables.spec import Row, Table


def _uses_error(table: Table) -> bool:
  return any(r.top1_err is not None for r in table.rows)


def _steps_run(workdir: str) -> Optional[int]:
  """The last step metrics.jsonl logged (a row not finished yet)."""
  last = None
  try:
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      for line in f:
        if '"step"' in line:
          last = line
  except OSError:
    return None
  if last is None:
    return None
  import json  # pylint: disable=g-import-not-at-top
  try:
    return int(json.loads(last)['step'])
  except (ValueError, KeyError):
    return None


def row_result(table: Table, row: Row, root: str) -> Dict[str, Any]:
  """What ROOT/TABLE/ROW holds: state, measured metrics, steps, spec."""
  workdir = runner.row_dir(root, table, row)
  status = runner.read_json(os.path.join(workdir, runner.STATUS_FILE)) or {}
  evaluation = runner.read_json(os.path.join(workdir, 'eval.json'))
  state = status.get('status', 'not run')
  if state == 'finished' and (evaluation or {}).get('step') != status.get(
      'final_step'):
    state = 'running'  # an older evaluation than the final step
  result = {'row': row, 'state': state, 'smoke': bool(
      (status.get('spec') or {}).get('smoke')), 'error': status.get('error'),
            'overrides': tuple((k, tuple(v) if isinstance(v, list) else v)
                               for k, v in (status.get('spec') or {}).get(
                                   'overrides', [])),
            'top1': None, 'top5': None, 'steps': None}
  if evaluation and state == 'finished':
    result['top1'] = 100 * evaluation['top1']
    result['top5'] = 100 * evaluation['top5']
    result['steps'] = evaluation['step']
  else:
    result['steps'] = _steps_run(workdir)
  return result


def count_row(row: Row, overrides=()) -> Dict[str, float]:
  """Parameters (M) and GMACs of the row's full-size model (the command
  line's overrides applied, --smoke not), for its data set's classes and
  image size; nothing is trained or compiled."""
  from flax_attn import report  # pylint: disable=g-import-not-at-top
  from flax_attn.data.specs import get_dataset_spec  # pylint: disable=g-import-not-at-top
  from flax_attn.models import model_from_config  # pylint: disable=g-import-not-at-top
  config = runner.row_config(row, runner.RunSpec(overrides=tuple(overrides)))
  model = model_from_config(config,
                            get_dataset_spec(config.dataset).num_classes)
  return {'params_m': report.count_params(model, config.image_size) / 1e6,
          'gmacs': report.count_macs(model, config.image_size) / 1e9}


def _num(value: Optional[float], digits: int = 2) -> str:
  return '-' if value is None else f'{value:.{digits}f}'


def _pair(ours: Optional[float], paper: Optional[float], digits: int) -> str:
  """'ours / paper': ours to `digits` decimals, the paper's as printed."""
  if ours is None and paper is None:
    return '-'
  return f'{_num(ours, digits)} / {"-" if paper is None else f"{paper:g}"}'


def _measured_in_paper_metric(result, error: bool):
  top1, top5 = result['top1'], result['top5']
  if error and top1 is not None:
    return 100 - top1, 100 - top5
  return top1, top5


def _published(row: Row, error: bool):
  if error:
    return row.top1_err, row.top5_err
  return row.top1, row.top5


def format_markdown(table: Table, results: Sequence[Dict[str, Any]],
                    counts: Dict[str, Dict[str, float]]) -> str:
  """The table, measured beside published, as Markdown."""
  error = _uses_error(table)
  metric = 'top-1 / top-5 error %' if error else 'top-1 / top-5 %'
  smoke = any(r['smoke'] for r in results)
  lines = [f'# {table.name}: {table.paper}, {table.source}', '',
           table.title + '.', '']
  if table.note:
    lines += [f'Note: {table.note}', '']
  if smoke:
    lines += ['**SMOKE runs** (`--smoke`): tiny networks, a few steps on the '
              'embedded digits. The measured accuracies check the plumbing '
              'only; parameters and GMACs are of the full-size models.', '']
  lines += [f'| row | paper\'s row | published {metric} | measured {metric} '
            '| diff top-1 (pp) | steps run | params M (ours / paper) '
            '| GMACs (ours / paper) | state |',
            '|---|---|---|---|---|---|---|---|---|']
  for result in results:
    row: Row = result['row']
    pub1, pub5 = _published(row, error)
    ours1, ours5 = _measured_in_paper_metric(result, error)
    diff = (f'{ours1 - pub1:+.2f}' if ours1 is not None and pub1 is not None
            else '-')
    count = counts.get(row.name, {})
    state = result['state']
    if state == 'failed' and result['error']:
      state = f'failed: {result["error"]}'.replace('|', '/')
    elif state == 'not run':
      state = '**not run yet**'
    lines.append(
        f'| {row.name} | {row.label} | {_num(pub1)} / {_num(pub5)} | '
        f'{_num(ours1)} / {_num(ours5)} | {diff} | '
        f'{result["steps"] if result["steps"] is not None else "-"} | '
        f'{_pair(count.get("params_m"), row.params_m, 3)} | '
        f'{_pair(count.get("gmacs"), row.gmacs, 3)} | {state} |')
  done = sum(r['state'] == 'finished' for r in results)
  lines += ['', f'{done} of {len(results)} rows measured. GMACs: '
            'multiply-adds as the papers count them (flax_attn/report.py). '
            'diff: measured minus published, percentage points of the '
            "paper's metric."]
  return '\n'.join(lines) + '\n'


def plot_png(table: Table, results: Sequence[Dict[str, Any]], path: str
             ) -> str:
  """Measured beside published top-1 (the paper's metric) per row."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  error = _uses_error(table)
  names = [r['row'].name for r in results]
  published = [_published(r['row'], error)[0] for r in results]
  measured = [_measured_in_paper_metric(r, error)[0] for r in results]
  y = list(range(len(names)))
  fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.32 * len(names)))
  for i, (p, m) in enumerate(zip(published, measured)):
    if p is not None and m is not None:
      ax.plot([p, m], [i, i], color='0.7', lw=1, zorder=1)
  ax.scatter([p for p in published if p is not None],
             [i for i, p in zip(y, published) if p is not None],
             marker='|', s=200, color='k', label='published', zorder=2)
  ax.scatter([m for m in measured if m is not None],
             [i for i, m in zip(y, measured) if m is not None],
             marker='o', color='tab:blue', label='measured', zorder=3)
  not_run = [i for i, m in zip(y, measured) if m is None]
  ax.set_yticks(y)
  ax.set_yticklabels([n + (' (not run)' if i in not_run else '')
                      for i, n in enumerate(names)], fontsize=8)
  ax.invert_yaxis()
  ax.set_xlabel('top-1 error %' if error else 'top-1 accuracy %')
  smoke = ' (SMOKE runs)' if any(r['smoke'] for r in results) else ''
  ax.set_title(f'{table.name}: {table.paper}, {table.source}{smoke}',
               fontsize=9)
  ax.grid(axis='x', alpha=0.3)
  ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1.0))
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def write_report(table: Table, root: str, counts: bool = True
                 ) -> Dict[str, Any]:
  """Writes ROOT/TABLE.md and ROOT/TABLE.png; returns their paths, the
  Markdown text and the per-row results."""
  results = [row_result(table, row, root) for row in table.rows]
  row_counts: Dict[str, Dict[str, float]] = {}
  if counts:
    for result in results:
      row_counts[result['row'].name] = count_row(result['row'],
                                                 result['overrides'])
  text = format_markdown(table, results, row_counts)
  os.makedirs(root, exist_ok=True)
  md = os.path.join(root, f'{table.name}.md')
  with open(md, 'w') as f:
    f.write(text)
  png = plot_png(table, results, os.path.join(root, f'{table.name}.png'))
  return {'markdown': md, 'png': png, 'text': text, 'results': results}


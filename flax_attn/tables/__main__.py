"""python -m flax_attn.tables list | run | report | docstrings (see
flax_attn/tables/__init__.py)."""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from flax_attn.errors import UserError  # noqa: E402
from flax_attn.registry import UnknownNameError  # noqa: E402
from flax_attn.tables import TABLES, get_table  # noqa: E402
from flax_attn.tables import runner  # noqa: E402
from flax_attn.tables.spec import FIGURE_LABELS, repo_root  # noqa: E402


def _list(names: Sequence[str]) -> int:
  if not names:
    for table in TABLES.values():
      print(f'{table.name:14s} {len(table.rows):3d} rows  {table.paper}, '
            f'{table.source}: {table.title}')
    return 0
  for name in names:
    table = get_table(name)
    print(f'{table.name}: {table.paper}, {table.source}: {table.title}')
    if table.note:
      print(f'  note: {table.note}')
    for row in table.rows:
      figures = ', '.join(f'{FIGURE_LABELS[k]} {v:g}'
                          for k, v in row.figures().items())
      print(f'  {row.name}: {row.label}; {figures}')
      print(f'    configs/{row.config_module}.py'
            + (f':{row.variant}' if row.variant else '')
            + ''.join(f' {k}={v!r}' for k, v in row.overrides))
  return 0


def _run(args, overrides) -> int:
  table = get_table(args.table)
  spec = runner.RunSpec(smoke=args.smoke, overrides=overrides)
  rows = runner.select_rows(table, args.rows, args.shard)
  for row in rows:  # every row's config is checked before anything runs
    runner.row_config(row, spec)
  if args.plan:
    print('\n'.join(runner.plan_lines(table, rows, args.root, spec,
                                      args.topology)))
    return 0
  return runner.run_rows(table, rows, args.root, spec)


def _report(args) -> int:
  from flax_attn.tables import compare  # pylint: disable=g-import-not-at-top
  out = compare.write_report(get_table(args.table), args.root,
                             counts=not args.no_counts)
  print(out['text'])
  print(f'wrote {out["markdown"]} and {out["png"]}')
  return 0


def _docstrings(write: bool) -> int:
  from flax_attn.tables import docstrings  # pylint: disable=g-import-not-at-top
  configs = os.path.join(repo_root(), 'configs')
  stale = docstrings.stale_configs(configs, TABLES.values())
  for name, source in stale.items():
    if write:
      with open(os.path.join(configs, f'{name}.py'), 'w') as f:
        f.write(source)
    print(f'{"rewrote" if write else "out of date:"} configs/{name}.py')
  return 1 if stale and not write else 0


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog='python -m flax_attn.tables',
      description="The papers' tables: list them, run their rows, report "
                  'measured beside published.')
  sub = p.add_subparsers(dest='command', required=True)
  ls = sub.add_parser('list', help='the tables, or one table\'s rows')
  ls.add_argument('tables', nargs='*', metavar='TABLE')
  run = sub.add_parser(
      'run', help='train and evaluate rows into ROOT/TABLE/ROW (finished '
                  'rows skipped, killed ones resumed); extra '
                  '--config.FIELD=VALUE arguments change every row')
  for q in (run,):
    q.add_argument('table', metavar='TABLE')
    q.add_argument('--root', required=True, help='runs go to ROOT/TABLE/ROW')
    q.add_argument('--rows', nargs='+', metavar='ROW',
                   help='only these rows (default: all)')
    q.add_argument('--shard', metavar='i/N',
                   help='slice i of N of the rows (rows i, i+N, ...), one '
                        'per host or job')
    q.add_argument('--smoke', action='store_true',
                   help='tiny networks, a few steps on the embedded digits '
                        '(offline): checks the plumbing, not the paper')
    q.add_argument('--plan', action='store_true',
                   help='print each row\'s model, data, steps and fit; run '
                        'nothing')
    q.add_argument('--topology', metavar='NAME',
                   help='with --plan: the TPU topology to check the fit on '
                        '(e.g. v5e-8; needs libtpu)')
  rep = sub.add_parser('report', help='write ROOT/TABLE.md and .png')
  rep.add_argument('table', metavar='TABLE')
  rep.add_argument('--root', required=True)
  rep.add_argument('--no-counts', action='store_true',
                   help='skip counting parameters and GMACs')
  doc = sub.add_parser('docstrings', help="configs' published-figures "
                                          'blocks from the table data')
  doc.add_argument('--write', action='store_true')
  # _row: one row in this process (what `run` starts per row).
  one = sub.add_parser('_row')
  one.add_argument('table')
  one.add_argument('row')
  one.add_argument('--root', required=True)
  one.add_argument('--smoke', action='store_true')
  return p


def main(argv: Optional[List[str]] = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  config_args = [a for a in argv if a.startswith('--config.')]
  args = parser().parse_args([a for a in argv if a not in config_args])
  try:
    overrides = runner.parse_overrides(config_args)
    if config_args and args.command not in ('run', '_row'):
      raise UserError('--config.FIELD=VALUE overrides go with run')
    if args.command == 'list':
      return _list(args.tables)
    if args.command == 'run':
      return _run(args, overrides)
    if args.command == 'report':
      return _report(args)
    if args.command == 'docstrings':
      return _docstrings(args.write)
    table = get_table(args.table)
    return runner.run_one_row(table, table.row(args.row), args.root,
                              runner.RunSpec(args.smoke, overrides))
  except (UserError, UnknownNameError) as e:
    print(f'error: {str(e).splitlines()[0]}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())

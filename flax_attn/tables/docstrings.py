"""The published-figures block of each configs/*.py docstring, generated
from the table data (flax_attn/tables/papers.py): one source of truth.

  python -m flax_attn.tables docstrings          # lists configs out of date
  python -m flax_attn.tables docstrings --write  # rewrites their blocks

The block sits at the end of the docstring, from BEGIN to the closing
quotes; tests/test_tables.py checks every config's block is current.
"""
from __future__ import annotations

import os
from typing import Dict, Iterable, List, Tuple

from flax_attn.tables.spec import FIGURE_LABELS, Row, Table

BEGIN = 'Published figures (generated from flax_attn/tables/papers.py:'
HEADER = (BEGIN + '\n`python -m flax_attn.tables docstrings --write`; '
          'row: top-1 % or err %, M, G):')
_SHORT = {'top1': '{:g}%', 'top5': 'top-5 {:g}%', 'top1_err': 'err {:g}%',
          'top5_err': 'top-5 err {:g}%', 'params_m': '{:g}M',
          'gmacs': '{:g}G'}
assert set(_SHORT) == set(FIGURE_LABELS)


def _row_text(row: Row) -> str:
  figures = row.figures()
  return f'{row.name} ' + ' '.join(_SHORT[k].format(v)
                                   for k, v in figures.items())


def block(config_module: str, tables: Iterable[Table]) -> str:
  """The block for configs/<config_module>.py: per table that runs it, the
  table's name and source, then its rows' figures."""
  lines = [HEADER]
  for table in tables:
    rows = [r for r in table.rows if r.config_module == config_module]
    if not rows:
      continue
    lines.append(f'  {table.name} ({table.source}):')
    lines.extend(_pack([_row_text(r) for r in rows], width=78,
                       indent='    '))
  return '\n'.join(lines)


def _pack(items: List[str], width: int, indent: str) -> List[str]:
  """Items joined by '; ' into lines of at most `width` (an item longer
  than that gets a line of its own); no item is split."""
  lines: List[str] = []
  for item in items:
    if lines and len(lines[-1]) + 2 + len(item) <= width:
      lines[-1] += '; ' + item
    else:
      lines.append(indent + item)
  return lines


def config_modules(tables: Iterable[Table]) -> List[str]:
  return sorted({r.config_module for t in tables for r in t.rows})


def split_docstring(source: str) -> Tuple[str, str, str]:
  """(before the block, the block, after it: the closing quotes onwards) of
  a config file's module docstring; the block is '' when there is none."""
  start = source.index('"""')
  end = source.index('"""', start + 3)
  doc = source[start + 3:end]
  at = doc.find(BEGIN)
  if at < 0:
    return source[:end].rstrip('\n') + '\n', '', source[end:]
  return (source[:start + 3] + doc[:at], doc[at:].rstrip('\n'),
          source[end:])


def updated_source(source: str, config_module: str,
                   tables: Iterable[Table]) -> str:
  before, _, after = split_docstring(source)
  before = before.rstrip('\n') + '\n\n'
  return before + block(config_module, tables) + '\n' + after


def stale_configs(configs_dir: str, tables: Iterable[Table]
                  ) -> Dict[str, str]:
  """configs whose docstring block differs from the table data: name ->
  the source they should have."""
  tables = list(tables)
  stale = {}
  for name in config_modules(tables):
    path = os.path.join(configs_dir, f'{name}.py')
    with open(path) as f:
      source = f.read()
    wanted = updated_source(source, name, tables)
    if wanted != source:
      stale[name] = wanted
  return stale

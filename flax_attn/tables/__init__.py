"""The five papers' tables as data, and one command that reproduces them.

  python -m flax_attn.tables list [TABLE]
  python -m flax_attn.tables run TABLE --root DIR [--rows ROW ...]
      [--shard i/N] [--smoke] [--plan [--topology NAME]] [--config.x=...]
  python -m flax_attn.tables report TABLE --root DIR

`TABLES` maps a name (e.g. 'mlan_table5') to a `Table`: the paper, its table
number and rows; a `Row` names a config of configs/ (with variant and
overrides) and the paper's figures. Rows run into DIR/TABLE/ROW, one child
process each (flax_attn/tables/runner.py); `report` writes DIR/TABLE.md and
DIR/TABLE.png (flax_attn/tables/compare.py).
"""
from flax_attn.errors import ConfigError
from flax_attn.tables.papers import TABLES
from flax_attn.tables.spec import (FIGURES, Row, Table, load_config,
                                   rows_for_config)


def get_table(name: str) -> Table:
  """The table of that name; an unknown one fails in one line."""
  if name not in TABLES:
    raise ConfigError(f'unknown table {name!r}; valid: {", ".join(TABLES)}')
  return TABLES[name]


def published_for_config(config: str):
  """(table, row) pairs of the rows that run configs/<config>.py unchanged,
  e.g. published_for_config('mlan_resnet20_cifar10')."""
  return rows_for_config(TABLES.values(), config)


__all__ = ['FIGURES', 'Row', 'TABLES', 'Table', 'get_table', 'load_config',
           'published_for_config']

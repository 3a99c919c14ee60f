"""What a reproduced table is: rows of configs with the paper's figures.

Pure data classes and look-ups (no JAX): `python -m flax_attn.tables list`
imports only this and `papers`.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from typing import Any, Dict, Iterable, List, Optional, Tuple

import ml_collections

from flax_attn.errors import ConfigError

# The published figures a row may carry, in the order they are shown.
# Accuracies and errors are percentages, as the papers print them.
FIGURES = ('top1', 'top5', 'top1_err', 'top5_err', 'params_m', 'gmacs')
FIGURE_LABELS = {'top1': 'top-1 %', 'top5': 'top-5 %',
                 'top1_err': 'top-1 err %', 'top5_err': 'top-5 err %',
                 'params_m': 'params M', 'gmacs': 'GMACs'}

OPTION_BAGS = ('model_kwargs', 'attn_kwargs')


@dataclasses.dataclass(frozen=True)
class Row:
  """One row (or one cell of a row: one data set) of a paper's table.

  name: the row's directory under ROOT/TABLE and its `--rows` name.
  label: the paper's own name for it (with the column, where a table has
    one column per data set or depth).
  config: a file of configs/ without '.py', with ':variant' where the config
    takes one (`python train.py --config configs/NAME.py:variant`).
  overrides: config fields changed from the config file, as (dotted field,
    value) pairs; a dict value replaces the whole field.
  The published figures (None where the paper gives none): top1, top5
  (accuracy %), top1_err, top5_err (error %), params_m (millions), gmacs
  (G multiply-adds; the papers' "FLOPs").
  """
  name: str
  label: str
  config: str
  overrides: Tuple[Tuple[str, Any], ...] = ()
  top1: Optional[float] = None
  top5: Optional[float] = None
  top1_err: Optional[float] = None
  top5_err: Optional[float] = None
  params_m: Optional[float] = None
  gmacs: Optional[float] = None

  @property
  def config_module(self) -> str:
    return self.config.split(':', 1)[0]

  @property
  def variant(self) -> Optional[str]:
    return self.config.split(':', 1)[1] if ':' in self.config else None

  def figures(self) -> Dict[str, float]:
    """The published figures this row has, by FIGURES name."""
    return {f: getattr(self, f) for f in FIGURES
            if getattr(self, f) is not None}

  def published_top1(self) -> Optional[float]:
    """The paper's top-1 accuracy % (100 - its error where it gives that)."""
    if self.top1 is not None:
      return self.top1
    if self.top1_err is not None:
      return round(100.0 - self.top1_err, 4)
    return None


@dataclasses.dataclass(frozen=True)
class Table:
  """A paper's table: its source and its rows."""
  name: str          # e.g. 'mlan_table5'; the directory under ROOT
  paper: str         # authors, year
  source: str        # 'Table 5', as the paper numbers it
  title: str
  rows: Tuple[Row, ...]
  note: str = ''     # what of the paper's table is not here, and why

  def row(self, name: str) -> Row:
    for row in self.rows:
      if row.name == name:
        return row
    raise ConfigError(f'unknown row {name!r} of table {self.name}; valid: '
                      f'{", ".join(r.name for r in self.rows)}')


def repo_root() -> str:
  """The checkout holding configs/ beside the flax_attn package."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  if not os.path.isdir(os.path.join(root, 'configs')):
    raise ConfigError(f'no configs/ beside the flax_attn package in {root}; '
                      'the tables run from a checkout of the repository')
  return root


def load_config(row: Row) -> ml_collections.ConfigDict:
  """The row's config as its file builds it, with the row's overrides (the
  config stays unlocked: the runner adds its own overrides)."""
  root = repo_root()
  if root not in sys.path:  # configs/ is the checkout's, not the package's
    sys.path.insert(0, root)
  module = importlib.import_module(f'configs.{row.config_module}')
  config = (module.get_config(row.variant) if row.variant is not None
            else module.get_config())
  apply_overrides(config, row.overrides, what=f'row {row.name}')
  return config


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Iterable[Tuple[str, Any]], what: str) -> None:
  """Sets dotted `field` = value on `config`; a dict value replaces the
  field. A field the config does not have fails in one line (options under
  model_kwargs / attn_kwargs may be new)."""
  config.unlock()
  for field, value in overrides:
    *parents, leaf = field.split('.')
    node = config
    for part in parents:
      if part not in node:
        raise ConfigError(f'{what}: config has no field {field!r}')
      node = node[part]
    # model_kwargs / attn_kwargs are open option bags (create_model checks
    # their names); any other field must exist.
    open_bag = parents and parents[-1] in OPTION_BAGS
    if leaf not in node and not isinstance(value, dict) and not open_bag:
      raise ConfigError(f'{what}: config has no field {field!r}; '
                        f'config.{".".join(parents) or leaf} has: '
                        f'{", ".join(sorted(node))}')
    if isinstance(value, dict):
      node[leaf] = ml_collections.ConfigDict(dict(value))
    else:
      try:
        node[leaf] = value
      except TypeError as e:
        raise ConfigError(f'{what}: config.{field}={value!r}: '
                          f'{str(e).splitlines()[0]}') from None


def rows_for_config(tables: Iterable[Table], config: str
                    ) -> List[Tuple[Table, Row]]:
  """(table, row) of every row that runs `config` (a configs/ file name
  without '.py', optionally ':variant') with no other change."""
  return [(t, r) for t in tables for r in t.rows
          if r.config == config and not r.overrides]

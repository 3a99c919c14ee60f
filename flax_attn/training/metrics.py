"""What a run reports while it trains: WORKDIR/metrics.jsonl, TensorBoard
event files (tb_events) and the progress bar."""
from __future__ import annotations

import json
import os
from typing import Any, Dict

import jax
import numpy as np

from flax_attn import tb_events
from flax_attn.errors import WorkdirWriteError
from flax_attn.training.workdir import disk_fault


class MetricWriter:
  """metrics.jsonl (one JSON object per log / eval) + TensorBoard events."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self._path = os.path.join(workdir, 'metrics.jsonl')
    self._tb = (tb_events.EventWriter(os.path.join(workdir, 'tensorboard'))
                if enabled else None)

  def write(self, step: int, values: Dict[str, Any]) -> None:
    if not self.enabled:
      return
    row = {'step': int(step)}
    row.update({k: (float(v) if isinstance(v, (np.generic, np.ndarray, float,
                                               jax.Array)) else v)
                for k, v in values.items()})
    try:
      with open(self._path, 'a') as f:
        f.write(json.dumps(row) + '\n')
      self._tb.write(step, {k: v for k, v in row.items()
                            if k != 'step' and isinstance(v, (int, float))})
    except OSError as e:
      raise WorkdirWriteError(
          f'cannot write {e.filename or self._path}: '
          f'{disk_fault(e) or e.strerror}; the checkpoints are intact: free '
          'space (or fix permissions) and run again to resume') from None

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def progress_bar(total: int, initial: int, enabled: bool):
  """A tqdm bar over the train steps, or None when not `enabled`."""
  if not enabled:
    return None
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, initial=initial, unit='step', dynamic_ncols=True,
              smoothing=0.1)

"""What a run reports while it trains: WORKDIR's metrics records
(metrics.jsonl locally, objects under metrics/ on a bucket:
flax_attn.records), TensorBoard event files (tb_events) and the progress
bar."""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator

import jax
import numpy as np

from flax_attn import records, storage, tb_events
from flax_attn.errors import WorkdirWriteError
from flax_attn.training.workdir import disk_fault


class MetricWriter:
  """One JSON record per log / eval + TensorBoard events.

  resume_step: the checkpoint step the run starts from (0: a fresh run). On
  a bucket, records a killed run wrote after that step are superseded by
  the resumed run's (flax_attn.records), so nothing is duplicated.
  """

  def __init__(self, workdir: str, enabled: bool = True, resume_step: int = 0):
    self.enabled = enabled
    self._path = storage.join(workdir, 'metrics')
    self._records = None
    self._tb = None
    if enabled:
      with self._errors():
        self._records = records.RecordWriter(workdir, 'metrics',
                                             resume_step=int(resume_step))
        self._tb = tb_events.EventWriter(storage.join(workdir, 'tensorboard'))

  def write(self, step: int, values: Dict[str, Any]) -> None:
    if not self.enabled:
      return
    row = {'step': int(step)}
    row.update({k: (float(v) if isinstance(v, (np.generic, np.ndarray, float,
                                               jax.Array)) else v)
                for k, v in values.items()})
    with self._errors():
      self._records.write(row)
      self._tb.write(step, {k: v for k, v in row.items()
                            if k != 'step' and isinstance(v, (int, float))})

  def _errors(self):
    return _write_errors(self._path)

  def close(self) -> None:
    if self._records is not None:
      with self._errors():
        self._records.close()
    if self._tb is not None:
      self._tb.close()


@contextlib.contextmanager
def _write_errors(path: str) -> Iterator[None]:
  """Turns a failed write (a disk's OSError, a bucket's HTTP error) into one
  WorkdirWriteError line naming the path and the fault; anything else (a
  bug) keeps its traceback."""
  try:
    yield
  except Exception as error:  # pylint: disable=broad-except
    fault = disk_fault(error)
    if fault is None and not isinstance(error, OSError):
      raise
    where = getattr(error, 'filename', None) or path
    detail = fault or getattr(error, 'strerror', None) or error
    raise WorkdirWriteError(
        f'cannot write {where}: {detail}; the checkpoints are intact: free '
        'space (or fix permissions) and run again to resume') from None


def progress_bar(total: int, initial: int, enabled: bool):
  """A tqdm bar over the train steps, or None when not `enabled`."""
  if not enabled:
    return None
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, initial=initial, unit='step', dynamic_ncols=True,
              smoothing=0.1)

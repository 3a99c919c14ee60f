"""metrics / evaluation records (one JSON object per row) without appends.

Local workdirs keep the single file WORKDIR/NAME.jsonl, appended to and
flushed after every row, as before. A bucket cannot append, so there each
flush writes one new object

    WORKDIR/NAME/<session>-<flush number>-<kind>.jsonl

where <session> is the writer's start time in nanoseconds (zero-padded, so
names sort in time order) and <kind> is `resume<step>` for a training run
that (re)started from the checkpoint at <step>, or `append` for a writer
whose rows never replace earlier ones (eval.py).

Reading merges the objects in name order: a `resume<S>` session first drops
the rows of earlier sessions with step > S (a killed run logged them after
its last checkpoint; the resumed run logs those steps again), then adds its
own. So a kill and resume loses nothing that was flushed and duplicates
nothing. `read_records` also reads the single-file layout (rows first, as
they predate any bucket objects), so `flax_attn.plot` reads either.
"""
from __future__ import annotations

import json
import re
import time
from typing import Any, Dict, List, Optional

from flax_attn import storage
from flax_attn.errors import UserError

_OBJECT = re.compile(r'^(\d{20})-(\d{6})-(resume(\d+)|append)\.jsonl$')


def _encode(rows: List[Dict[str, Any]]) -> bytes:
  return ''.join(json.dumps(r) + '\n' for r in rows).encode('utf-8')


class RecordWriter:
  """Writes rows ({'step': int, ...}) of WORKDIR/NAME.

  resume_step: the step this training run starts from (0 for a fresh run):
    on a bucket, rows of earlier sessions after it are superseded. None:
    rows are only added (evaluations by eval.py).
  flush_every_s: on a bucket, rows are buffered and written as one object
    once this long has passed since the last flush (0: every row; a kill
    loses at most the rows of that interval). Locally every row is flushed.
  """

  def __init__(self, workdir: str, name: str,
               resume_step: Optional[int] = None, flush_every_s: float = 0.0):
    self.workdir = workdir
    self.name = name
    self.remote = storage.is_remote(workdir)
    self.flush_every_s = float(flush_every_s)
    self._kind = 'append' if resume_step is None else f'resume{int(resume_step)}'
    self._session = time.time_ns()
    self._seq = 0
    self._buffer: List[Dict[str, Any]] = []
    self._last_flush = time.monotonic()
    self._file = None
    if not self.remote:
      storage.makedirs(workdir)

  def write(self, row: Dict[str, Any]) -> None:
    if 'step' not in row:
      raise ValueError(f'a {self.name} record needs a "step": {row}')
    if not self.remote:
      if self._file is None:  # created by the first row, as before
        self._file = open(storage.join(self.workdir, f'{self.name}.jsonl'),
                          'a')
      self._file.write(json.dumps(row) + '\n')
      self._file.flush()
      return
    self._buffer.append(dict(row))
    if time.monotonic() - self._last_flush >= self.flush_every_s:
      self.flush()

  def flush(self) -> None:
    """Writes the buffered rows as one object (bucket); nothing if empty."""
    if not self.remote:
      if self._file is not None:
        self._file.flush()
      return
    if not self._buffer:
      return
    name = f'{self._session:020d}-{self._seq:06d}-{self._kind}.jsonl'
    storage.write_atomic(storage.join(self.workdir, self.name, name),
                         _encode(self._buffer))
    self._seq += 1
    self._buffer = []
    self._last_flush = time.monotonic()

  def close(self) -> None:
    self.flush()
    if self._file is not None:
      self._file.close()
      self._file = None


def _parse_lines(text: str, where: str) -> List[Dict[str, Any]]:
  rows = []
  for number, line in enumerate(text.splitlines(), 1):
    if line.strip():
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        raise UserError(f'{where} line {number} is not JSON: '
                        f'{line.strip()[:60]!r}') from None
  return rows


def exists(workdir: str, name: str) -> bool:
  """True if either layout of WORKDIR/NAME has been written."""
  return (storage.exists(storage.join(workdir, f'{name}.jsonl'))
          or bool(storage.listdir(storage.join(workdir, name))))


def read_records(workdir: str, name: str) -> List[Dict[str, Any]]:
  """Every row of WORKDIR/NAME in either layout, merged as described above
  (single file first, then the objects in time order)."""
  rows: List[Dict[str, Any]] = []
  single = storage.join(workdir, f'{name}.jsonl')
  if storage.exists(single):
    rows.extend(_parse_lines(storage.read_text(single), single))
  folder = storage.join(workdir, name)
  for object_name in storage.listdir(folder):
    match = _OBJECT.match(object_name)
    if match is None:
      continue  # not ours (e.g. a temporary file of a local copy)
    path = storage.join(folder, object_name)
    if match.group(4) is not None and match.group(2) == '000000':
      resume_step = int(match.group(4))
      rows = [r for r in rows if int(r.get('step', 0)) <= resume_step]
    rows.extend(_parse_lines(storage.read_text(path), path))
  return rows

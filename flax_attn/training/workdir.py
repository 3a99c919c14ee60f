"""The workdir: its write check, its lock (one run per workdir, across
processes), config.json, and the one-line names of disk faults.

Only process 0 takes the lock and writes the workdir's own files;
raise_everywhere makes a failure there stop every process at once.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
from typing import Iterator, Optional

import jax
import numpy as np

from flax_attn.errors import UserError, WorkdirWriteError
from flax_attn.workdir_lock import WorkdirLock

_DISK_ERRORS = {errno.ENOSPC: 'the disk is full', errno.EROFS:
                'the file system is read-only', errno.EACCES:
                'permission denied', errno.EPERM: 'permission denied',
                errno.EDQUOT: 'the disk quota is exceeded', errno.EFBIG:
                'a file is too large', errno.EIO: 'an I/O error'}
_DISK_MESSAGES = {os.strerror(code).lower(): text
                  for code, text in _DISK_ERRORS.items()}


def disk_fault(error: BaseException) -> Optional[str]:
  """What disk fault `error` (or what caused it) is, or None. orbax and
  TensorStore re-raise OSErrors as other types, keeping the message."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in _DISK_ERRORS:
      return _DISK_ERRORS[error.errno]
    text = str(error).lower()
    for message, fault in _DISK_MESSAGES.items():
      if message in text:
        return fault
    error = error.__cause__ or error.__context__
  return None


def write_config(workdir: str, config) -> None:
  """WORKDIR/config.json, atomically (eval.py reads it without --config)."""
  path = os.path.join(workdir, 'config.json')
  try:
    with open(path + '.tmp', 'w') as f:
      json.dump(config.to_dict(), f, indent=2, sort_keys=True, default=str)
    os.replace(path + '.tmp', path)
  except OSError as e:
    raise WorkdirWriteError(f'cannot write {path}: '
                            f'{disk_fault(e) or e.strerror}') from None


def raise_everywhere(error: Optional[BaseException], what: str) -> None:
  """Raises `error` (process 0's, or None) on every process.

  Work only process 0 does (the lock, manifests, last_good.json) can fail
  there alone; the other processes would wait for it at the next collective
  until the coordination timeout. One broadcast makes them all stop with a
  line at once. One process: raises `error` if any.
  """
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    failed = int(multihost_utils.broadcast_one_to_all(
        np.int32(error is not None)))
    if failed and error is None:
      error = WorkdirWriteError(f'{what} failed on process 0 (its error '
                                'line says why)')
  if error is not None:
    raise error


def prepare_workdir(workdir: str) -> None:
  """Creates `workdir` and checks that it can be written (one line if not)."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_test.{os.getpid()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise WorkdirWriteError(
        f'cannot write to workdir {workdir}: '
        f'{disk_fault(e) or e.strerror}') from None


@contextlib.contextmanager
def locked_workdir(workdir: str) -> Iterator[None]:
  """Prepares `workdir` and holds WORKDIR/.lock (process 0) while inside:
  one run per workdir. A busy lock stops every process with one line."""
  prepare_workdir(workdir)
  lock = WorkdirLock(workdir)
  busy = None
  if jax.process_index() == 0:
    try:
      lock.acquire()
    except UserError as e:
      busy = e
  raise_everywhere(busy, f'locking workdir {workdir}')
  try:
    yield
  finally:
    lock.release()

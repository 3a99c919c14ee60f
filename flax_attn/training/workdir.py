"""The workdir: its write check, its lock (one run per workdir, across
processes: the fcntl lock locally, a renewed lease object on a gs://
bucket), config.json, the one-line names of disk and bucket faults, and the
agreement that makes a failure on one process stop all of them.

Only process 0 takes the lock and writes the workdir's own files; `agree`
(and raise_everywhere, built on it) makes a failure on any one process stop
every process at once with the same line.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
from typing import Iterator, Optional

import jax
import numpy as np

from flax_attn import lease as lease_lib
from flax_attn import storage
from flax_attn.errors import UserError, WorkdirWriteError

_DISK_ERRORS = {errno.ENOSPC: 'the disk is full', errno.EROFS:
                'the file system is read-only', errno.EACCES:
                'permission denied', errno.EPERM: 'permission denied',
                errno.EDQUOT: 'the disk quota is exceeded', errno.EFBIG:
                'a file is too large', errno.EIO: 'an I/O error'}
_DISK_MESSAGES = {os.strerror(code).lower(): text
                  for code, text in _DISK_ERRORS.items()}
# Cloud Storage's answers (google-cloud-storage's exceptions and gcsfs's
# HttpError carry the HTTP status as `.code`; TensorStore and gcsfs's
# OSErrors only name it in the message).
_BUCKET_PERMISSION = 'permission denied by the bucket (403)'
_BUCKET_MESSAGES = {'permission_denied': _BUCKET_PERMISSION,
                    'forbidden': _BUCKET_PERMISSION,
                    'does not have storage.objects': _BUCKET_PERMISSION,
                    'too many requests': 'the bucket is throttling requests '
                                         '(429)',
                    'resource_exhausted': 'the bucket is throttling requests '
                                          '(429)',
                    'service unavailable': 'a bucket error (503)',
                    'unavailable:': 'a bucket error (unavailable)'}


def _bucket_fault(error: BaseException) -> Optional[str]:
  code = getattr(error, 'code', None)
  code = code if isinstance(code, int) else None
  if code == 403 or code == 401:
    return _BUCKET_PERMISSION
  if code == 429:
    return 'the bucket is throttling requests (429)'
  if code is not None and 500 <= code < 600:
    return f'a bucket error ({code})'
  text = str(error).lower()
  for message, fault in _BUCKET_MESSAGES.items():
    if message in text:
      return fault
  return None


def disk_fault(error: BaseException) -> Optional[str]:
  """What disk or bucket fault `error` (or what caused it) is, or None.
  orbax and TensorStore re-raise OSErrors as other types, keeping the
  message."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in _DISK_ERRORS:
      return _DISK_ERRORS[error.errno]
    text = str(error).lower()
    for message, fault in _DISK_MESSAGES.items():
      if message in text:
        return fault
    fault = _bucket_fault(error)
    if fault is not None:
      return fault
    error = error.__cause__ or error.__context__
  return None


def write_config(workdir: str, config) -> None:
  """WORKDIR/config.json, atomically (eval.py reads it without --config)."""
  path = storage.join(workdir, 'config.json')
  try:
    storage.write_atomic(path, json.dumps(config.to_dict(), indent=2,
                                          sort_keys=True, default=str))
  except Exception as e:  # pylint: disable=broad-except
    fault = disk_fault(e)
    if fault is None and not isinstance(e, OSError):
      raise
    raise WorkdirWriteError(f'cannot write {path}: {fault or e}') from None


class HostFailureError(UserError):
  """A failure on one process of a multi-process run, agreed on by all of
  them (`agree`): each process stops with this same line."""


# The cause travels in the all-gather as this many UTF-8 bytes (one line).
_CAUSE_BYTES = 400


def _cause(error: BaseException) -> str:
  text = str(error).splitlines()[0] if str(error) else ''
  if not isinstance(error, UserError):
    text = f'{type(error).__name__}: {text}'
  return text


def agree(failure: Optional[BaseException], stop_requested: bool = False,
          what: str = '') -> bool:
  """The processes' agreement at a boundary every process reaches (a log,
  evaluation or save step; the end of a restore; process 0's own work).

  Returns whether any process asked to stop (SIGTERM / SIGINT); raises if
  any process brings a `failure`. One process: raises `failure` itself.
  Several: one small all-gather of [stop flag, failure flag, the failure's
  line], so a failure on one host (a metrics or bucket write, a restore
  error, a lost workdir lease) stops every process within a step instead of
  leaving the others waiting at the next collective until JAX's
  coordination timeout; every process raises HostFailureError with the
  same line, naming the first failing process, its host and the cause. A
  failing process whose error is not a user error (a bug) raises its own
  error, with its traceback.
  """
  if jax.process_count() == 1:
    if failure is not None:
      raise failure
    return stop_requested
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  payload = np.zeros(2 + _CAUSE_BYTES, np.int32)
  payload[0] = int(bool(stop_requested))
  if failure is not None:
    payload[1] = 1
    cause = (f'process {jax.process_index()} on {socket.gethostname()}: '
             f'{_cause(failure)}').encode('utf-8')[:_CAUSE_BYTES]
    payload[2:2 + len(cause)] = np.frombuffer(cause, np.uint8)
  gathered = np.asarray(multihost_utils.process_allgather(payload))
  failed = np.nonzero(gathered[:, 1])[0]
  if failed.size:
    first = int(failed[0])
    cause = bytes(gathered[first, 2:].astype(np.uint8)).rstrip(b'\0').decode(
        'utf-8', errors='replace')
    where = f' ({what})' if what else ''
    if first == jax.process_index() and not isinstance(failure, UserError):
      raise failure
    raise HostFailureError(f'{cause}{where}; every process of the run '
                           'stopped') from failure
  return bool(np.any(gathered[:, 0]))


def raise_everywhere(error: Optional[BaseException], what: str) -> None:
  """Raises `error` (this process's, or None) on every process: work only
  process 0 does (the lock, manifests, last_good.json) can fail there alone;
  `agree` makes them all stop with its line at once. One process: raises
  `error` if any."""
  agree(error, what=what)


def prepare_workdir(workdir: str) -> None:
  """Creates `workdir` and checks that it can be written (one line if not):
  a probe file written and removed, on a local disk or a bucket (where the
  first write is also the permission check)."""
  try:
    storage.makedirs(workdir)
    probe = storage.join(workdir, f'.write_test.{socket.gethostname()}.'
                         f'{os.getpid()}')
    storage.write_atomic(probe, 'ok')
    storage.remove(probe)
  except Exception as e:  # pylint: disable=broad-except
    fault = disk_fault(e)
    if fault is None and not isinstance(e, OSError):
      raise
    raise WorkdirWriteError(
        f'cannot write to workdir {workdir}: '
        f'{fault or getattr(e, "strerror", None) or e}') from None


def lease_timeout_s() -> float:
  """How long a killed run's lease on a bucket workdir blocks a restart:
  FLAX_ATTN_LEASE_TIMEOUT_S, default flax_attn.lease.LEASE_TIMEOUT_S."""
  value = os.environ.get('FLAX_ATTN_LEASE_TIMEOUT_S', '')
  try:
    timeout = float(value) if value else lease_lib.LEASE_TIMEOUT_S
  except ValueError:
    timeout = -1.0
  if not timeout > 0:
    raise UserError(f'FLAX_ATTN_LEASE_TIMEOUT_S={value!r} is not a positive '
                    'number of seconds')
  return timeout


class _NoLock:
  def check(self) -> None:
    pass

  def release(self) -> None:
    pass


@contextlib.contextmanager
def locked_workdir(workdir: str) -> Iterator[object]:
  """Prepares `workdir` and holds it (process 0) while inside: one run per
  workdir (WORKDIR/.lock locally, the lease WORKDIR/.lease.json on a
  bucket; flax_attn.lease). A busy workdir stops every process with one
  line. Yields the lock: its check() raises LeaseLostError once another run
  took a bucket lease over (the loop checks at every boundary)."""
  lock, busy = _NoLock(), None
  try:
    prepare_workdir(workdir)
    if jax.process_index() == 0:
      lock = lease_lib.acquire_workdir(workdir, timeout_s=lease_timeout_s())
  except UserError as e:
    busy = e
  try:
    raise_everywhere(busy, f'locking workdir {workdir}')
  except BaseException:
    lock.release()  # another process could not start: nor does this one
    raise
  try:
    yield lock
  finally:
    lock.release()

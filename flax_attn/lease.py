"""One training run per workdir on a bucket: a renewed lease object.

A bucket has no flock. WORKDIR/.lease.json names the holder (host, pid,
run id, since when) and is only ever written with a generation
precondition:

  * acquire: create-if-absent (ifGenerationMatch=0). If it exists and was
    renewed less than `timeout_s` ago (by the storage server's clock), the
    run is refused with one line naming the holder. If it is older, the
    holder is dead (killed, preempted): it is taken over by a write
    conditional on the old lease's generation, so of two restarts racing
    for it exactly one wins and the other is refused naming the winner;
  * a daemon thread renews it every `renew_every_s` (a compare-and-swap on
    the generation this run wrote last); a failed renewal means another run
    took the lease (we were stalled past the timeout): `check()` raises so
    the trainer stops instead of writing beside it;
  * release: overwritten with a `released` mark, again only at our own
    generation (a conditional overwrite rather than a delete: the
    fake-gcs-server emulator ignores delete preconditions); the next run
    takes a released lease over at once.

Local workdirs keep the fcntl lock (flax_attn.workdir_lock): the kernel
releases it when the process dies, with no timeout to wait for.
`acquire_workdir` picks the right one.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from typing import Optional, Union

from flax_attn import storage
from flax_attn.workdir_lock import WorkdirBusyError, WorkdirLock

LEASE_NAME = '.lease.json'
# A killed run's workdir is free again after this long; renewal every
# third of it tolerates two missed renewals (a slow bucket request).
LEASE_TIMEOUT_S = 120.0
RENEW_FRACTION = 1 / 3


class LeaseLostError(WorkdirBusyError):
  """Another run took over this run's lease (it was not renewed in time)."""


def _describe(holder: dict) -> str:
  since = holder.get('since')
  when = (time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(since)) + ' UTC'
          if isinstance(since, (int, float)) else 'an unknown time')
  return (f'pid {holder.get("pid", "?")} on {holder.get("host", "?")}, '
          f'since {when}')


def _parse(data: bytes) -> dict:
  try:
    holder = json.loads(data.decode('utf-8'))
    return holder if isinstance(holder, dict) else {}
  except (ValueError, UnicodeDecodeError):
    return {}  # a foreign or damaged object: described as unknown


class WorkdirLease:
  """Context manager holding WORKDIR/.lease.json on a bucket."""

  def __init__(self, workdir: str, timeout_s: float = LEASE_TIMEOUT_S,
               renew_every_s: Optional[float] = None):
    if not storage.is_remote(workdir):
      raise ValueError(f'WorkdirLease is for gs:// workdirs, not {workdir}; '
                       'use acquire_workdir')
    self.workdir = workdir
    self.path = storage.join(workdir, LEASE_NAME)
    self.timeout_s = float(timeout_s)
    self.renew_every_s = float(renew_every_s if renew_every_s is not None
                               else timeout_s * RENEW_FRACTION)
    self.holder = {'host': socket.gethostname(), 'pid': os.getpid(),
                   'run': uuid.uuid4().hex, 'since': time.time()}
    self.generation: Optional[int] = None
    self.lost: Optional[str] = None
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None
    self._lock = threading.Lock()

  def _body(self, released: bool = False) -> bytes:
    body = dict(self.holder, renewed=time.time(), timeout_s=self.timeout_s)
    if released:
      body['released'] = True
    return json.dumps(body).encode()

  def _busy(self, holder: dict, age_s: float,
            timeout_s: float) -> WorkdirBusyError:
    left = max(0.0, timeout_s - age_s)
    return WorkdirBusyError(
        f'workdir {self.workdir} is in use by another train.py '
        f'({_describe(holder)}; lease renewed {age_s:.0f} s ago, expires in '
        f'{left:.0f} s if that run is gone); wait for it to finish or use '
        'another --workdir')

  def acquire(self, _attempts: int = 3) -> 'WorkdirLease':
    if self.generation is not None:
      return self  # already held (acquire_workdir's result used in `with`)
    body = self._body()
    if storage.write_if_absent(self.path, body):
      self.generation = storage.read_versioned(self.path).generation
      # Between the create and this read nobody else can have written: any
      # other writer needs our generation (or an expired lease).
    else:
      current = storage.read_versioned(self.path)
      if current is None and _attempts > 1:  # removed meanwhile: again
        return self.acquire(_attempts - 1)
      if current is None:
        raise WorkdirBusyError(f'workdir {self.workdir}: its lease keeps '
                               'appearing and disappearing; another run is '
                               'starting and stopping there')
      holder = _parse(current.data)
      # The holder's own timeout governs: it renews at its own pace.
      timeout_s = float(holder.get('timeout_s', self.timeout_s))
      age_s = time.time() - current.updated
      if not holder.get('released') and age_s < timeout_s:
        raise self._busy(holder, age_s, timeout_s)
      generation = storage.write_if_generation(self.path, body,
                                               current.generation)
      if generation is None:  # another restart took it over first
        winner = storage.read_versioned(self.path)
        winner_holder = _parse(winner.data) if winner else {}
        raise self._busy(winner_holder, 0.0,
                         float(winner_holder.get('timeout_s', timeout_s)))
      self.generation = generation
    self._thread = threading.Thread(target=self._renew_loop,
                                    name='workdir-lease', daemon=True)
    self._thread.start()
    return self

  def _renew_loop(self) -> None:
    while not self._stop.wait(self.renew_every_s):
      self.renew()

  def renew(self) -> bool:
    """One renewal (the thread calls this); False once the lease is lost."""
    with self._lock:
      if self.lost is not None or self.generation is None:
        return False
      try:
        generation = storage.write_if_generation(self.path, self._body(),
                                                 self.generation)
      except Exception as e:  # pylint: disable=broad-except
        # A transient bucket error: the next renewal retries; the lease only
        # goes if errors last past the timeout, which the CAS then reports.
        print(f'warning: could not renew the workdir lease {self.path}: '
              f'{type(e).__name__}: {e}', flush=True)
        return True
      if generation is None:
        current = storage.read_versioned(self.path)
        holder = _parse(current.data) if current else {}
        self.lost = (f'the lease on workdir {self.workdir} was taken over by '
                     f'{_describe(holder) if holder else "nobody (removed)"}'
                     f' after this run missed its renewals for '
                     f'{self.timeout_s:.0f} s; stopping so that two runs '
                     'do not write the same workdir')
        return False
      self.generation = generation
      return True

  def check(self) -> None:
    """Raises LeaseLostError (one line) if another run took the lease."""
    if self.lost is not None:
      raise LeaseLostError(self.lost)

  def release(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=30)
      self._thread = None
    with self._lock:
      if self.generation is not None and self.lost is None:
        # Marked released (a conditional overwrite, not a delete: the next
        # run takes a released lease over at once, and the precondition
        # keeps us from touching a lease another run took meanwhile).
        storage.write_if_generation(self.path, self._body(released=True),
                                    self.generation)
      self.generation = None

  def __enter__(self):
    return self if self.generation is not None else self.acquire()

  def __exit__(self, *exc):
    self.release()


def acquire_workdir(workdir: str, timeout_s: float = LEASE_TIMEOUT_S,
                    ) -> Union[WorkdirLock, WorkdirLease]:
  """Holds the workdir for one run: a renewed lease object on a bucket, the
  fcntl lock on a local disk. Use as a context manager or call release();
  raises WorkdirBusyError naming the holder."""
  if storage.is_remote(workdir):
    return WorkdirLease(workdir, timeout_s=timeout_s).acquire()
  return WorkdirLock(workdir).acquire()

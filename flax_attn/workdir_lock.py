"""One training run per workdir: an OS lock on WORKDIR/.lock.

`fcntl.flock` locks belong to the open file, so the kernel releases them when
the process dies in any way (kill -9 included): no stale lock to clean up.
The holder writes its pid and start time into the file so a second run can
say who holds it. eval.py does not take the lock: it only reads finished
checkpoints, and may run beside training.
"""
from __future__ import annotations

import errno
import os
import socket
import sys
import time
from typing import Optional

from flax_attn.errors import UserError

LOCK_NAME = '.lock'


class WorkdirBusyError(UserError):
  """Another process trains in this workdir."""


class WorkdirLock:
  """Context manager holding WORKDIR/.lock (a no-op where fcntl is missing
  or the workdir is not a local path, e.g. gs://)."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_NAME)
    self._fd: Optional[int] = None

  def acquire(self) -> 'WorkdirLock':
    if self._fd is not None:
      return self  # already held (acquire_workdir's result used in `with`)
    try:
      import fcntl  # pylint: disable=g-import-not-at-top
    except ImportError:  # not POSIX
      return self
    if '://' in self.workdir:
      return self
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        # A file system without locks (some NFS mounts): run unguarded.
        os.close(fd)
        print(f'warning: cannot lock {self.path} ({e.strerror}); a second '
              'train.py on this workdir would not be stopped', file=sys.stderr)
        return self
      holder = os.read(fd, 256).decode('utf-8', 'replace').strip()
      os.close(fd)
      raise WorkdirBusyError(
          f'workdir {self.workdir} is in use by another train.py '
          f'({holder or "pid unknown"}); wait for it to finish or use '
          'another --workdir') from None
    os.ftruncate(fd, 0)
    os.write(fd, f'pid {os.getpid()} on {socket.gethostname()}, since '
             f'{time.strftime("%Y-%m-%d %H:%M:%S")}'.encode())
    self._fd = fd
    return self

  def check(self) -> None:
    """The kernel never takes a held flock away (see lease.WorkdirLease)."""

  def release(self) -> None:
    if self._fd is not None:
      os.close(self._fd)  # closing the file releases the lock
      self._fd = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()

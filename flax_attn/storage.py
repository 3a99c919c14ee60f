"""Workdir files on a local disk or in a Cloud Storage bucket (gs://...).

The run's bookkeeping (config.json, checksum manifests, last_good.json,
metrics, the workdir lease) goes through these functions so that the same
code works on a POSIX disk and on a bucket, where objects cannot be appended
to, renamed atomically or locked:

  * local paths: the standard library (temporary file + fsync + rename for
    atomic writes, os.link for create-only writes);
  * gs:// paths: etils epath's fsspec backend (gcsfs, the backend epath uses
    when TensorFlow is absent; orbax goes through the same instance) for
    reading, listing and removing, and google-cloud-storage for the writes
    that need a generation precondition (create-if-absent, compare-and-swap),
    which gcsfs does not expose. A single object write is atomic on GCS: a
    reader sees the old object or the new one, never a part.

gcsfs caches directory listings per process; listings and existence checks
here drop that cache first, so a file written by another process or host is
seen.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import uuid
from typing import List, Optional, Tuple, Union

Data = Union[bytes, str]
REMOTE_SCHEMES = ('gs://',)


def is_remote(path: str) -> bool:
  """True for an object-store URL (gs://); False for a local path."""
  return str(path).startswith(REMOTE_SCHEMES)


def join(path: str, *parts: str) -> str:
  """os.path.join that keeps a URL's '//' (posixpath joins URLs fine)."""
  return os.path.join(str(path), *parts) if not is_remote(path) else (
      '/'.join([str(path).rstrip('/')] + [p.strip('/') for p in parts]))


def _bytes(data: Data) -> bytes:
  return data.encode('utf-8') if isinstance(data, str) else bytes(data)


# ----------------------------------------------------------------- remote --


def _fs(path: str):
  """The fsspec file system epath uses for `path` (one shared instance, so a
  write here invalidates the listings orbax sees)."""
  from etils.epath import backend  # pylint: disable=g-import-not-at-top
  return backend.fsspec_backend.fs(path)


def _fresh_fs(path: str):
  fs = _fs(path)
  fs.invalidate_cache()
  return fs


def split_url(path: str) -> Tuple[str, str]:
  """'gs://bucket/a/b' -> ('bucket', 'a/b')."""
  rest = str(path)[len('gs://'):]
  bucket, _, name = rest.partition('/')
  return bucket, name


@functools.lru_cache(maxsize=None)
def _client():
  # pylint: disable-next=g-import-not-at-top
  from google.cloud import storage as gcs
  # With STORAGE_EMULATOR_HOST set the client is anonymous and talks to the
  # emulator; otherwise Google's default credentials (a TPU VM's service
  # account).
  return gcs.Client()


def _blob(path: str):
  bucket, name = split_url(path)
  return _client().bucket(bucket).blob(name)


def _precondition_failed() -> type:
  from google.api_core import exceptions  # pylint: disable=g-import-not-at-top
  return exceptions.PreconditionFailed


def _not_found() -> type:
  from google.api_core import exceptions  # pylint: disable=g-import-not-at-top
  return exceptions.NotFound


# ------------------------------------------------------------ both kinds --


def exists(path: str) -> bool:
  if is_remote(path):
    return _fresh_fs(path).exists(path)
  return os.path.exists(path)


def isdir(path: str) -> bool:
  if is_remote(path):
    return _fresh_fs(path).isdir(path)
  return os.path.isdir(path)


def makedirs(path: str) -> None:
  """Local: os.makedirs(exist_ok=True). A bucket has no directories (a
  prefix exists once an object is under it): nothing to do."""
  if not is_remote(path):
    os.makedirs(path, exist_ok=True)


def listdir(path: str) -> List[str]:
  """Sorted names directly under `path` ([] if it does not exist)."""
  if is_remote(path):
    fs = _fresh_fs(path)
    try:
      entries = fs.ls(path, detail=False)
    except FileNotFoundError:
      return []
    prefix = str(path).rstrip('/')[len('gs://'):]
    names = {p.rstrip('/').rsplit('/', 1)[-1] for p in entries
             if p.rstrip('/') != prefix}
    return sorted(names)
  try:
    return sorted(os.listdir(path))
  except FileNotFoundError:
    return []


def read_bytes(path: str) -> bytes:
  """The file's bytes; FileNotFoundError if absent (both kinds)."""
  if is_remote(path):
    return _fs(path).cat_file(path)
  with open(path, 'rb') as f:
    return f.read()


def read_text(path: str) -> str:
  return read_bytes(path).decode('utf-8')


def write_atomic(path: str, data: Data) -> None:
  """Writes a small file so that a reader never sees a part of it.

  Local: a temporary file beside it, fsync, rename, fsync of the folder (a
  crash leaves the old file or the new one). Bucket: one object upload,
  atomic by itself.
  """
  data = _bytes(data)
  if is_remote(path):
    _fs(path).pipe_file(path, data)
    return
  folder = os.path.dirname(os.path.abspath(path))
  tmp = os.path.join(folder, f'.{os.path.basename(path)}.'
                     f'{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp')
  try:
    with open(tmp, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  fsync_dir(folder)


def fsync_dir(path: str) -> None:
  """Makes a rename in `path` durable (best effort; no-op on buckets)."""
  if is_remote(path):
    return
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def write_if_absent(path: str, data: Data) -> bool:
  """Creates `path` with `data` unless it exists; True if this call created
  it. Exactly one of several concurrent callers wins.

  Bucket: an upload with the precondition ifGenerationMatch=0. Local: the
  data goes to a temporary file that is hard-linked to `path` (link fails if
  `path` exists), so the winner's file is complete when it appears.
  """
  data = _bytes(data)
  if is_remote(path):
    try:
      _blob(path).upload_from_string(data, if_generation_match=0)
      return True
    except _precondition_failed():
      return False
  folder = os.path.dirname(os.path.abspath(path))
  tmp = os.path.join(folder, f'.{os.path.basename(path)}.'
                     f'{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp')
  with open(tmp, 'wb') as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  try:
    os.link(tmp, path)
    return True
  except FileExistsError:
    return False
  finally:
    os.remove(tmp)


@dataclasses.dataclass(frozen=True)
class Versioned:
  """An object's bytes with its generation and the server's update time."""
  data: bytes
  generation: int
  updated: float  # seconds since the epoch, by the storage server's clock


def read_versioned(path: str) -> Optional[Versioned]:
  """The object and its generation (bucket only), or None if absent."""
  if not is_remote(path):
    raise ValueError(f'read_versioned needs a gs:// path, not {path}')
  bucket, name = split_url(path)
  for _ in range(5):
    blob = _client().bucket(bucket).get_blob(name)
    if blob is None:
      return None
    try:
      # Pinned to the generation just listed, so data and generation belong
      # to the same version even if a writer replaces it meanwhile.
      data = blob.download_as_bytes(if_generation_match=blob.generation)
    except (_not_found(), _precondition_failed()):
      continue  # replaced or removed between the two requests: look again
    return Versioned(data, int(blob.generation), blob.updated.timestamp())
  raise OSError(f'{path} keeps changing while read')


def write_if_generation(path: str, data: Data, generation: int) -> Optional[int]:
  """Replaces the object only if its generation is still `generation`
  (compare-and-swap); returns the new generation, or None if another writer
  changed or removed it first."""
  if not is_remote(path):
    raise ValueError(f'write_if_generation needs a gs:// path, not {path}')
  blob = _blob(path)
  try:
    blob.upload_from_string(_bytes(data), if_generation_match=int(generation))
  except _precondition_failed():
    return None
  return int(blob.generation)


def remove_if_generation(path: str, generation: int) -> bool:
  """Deletes the object only if it is still at `generation`."""
  if not is_remote(path):
    raise ValueError(f'remove_if_generation needs a gs:// path, not {path}')
  try:
    _blob(path).delete(if_generation_match=int(generation))
    return True
  except (_precondition_failed(), _not_found()):
    return False


def remove(path: str) -> None:
  """Removes one file; no error if it is absent."""
  if is_remote(path):
    try:
      _fs(path).rm_file(path)
    except FileNotFoundError:
      pass
    _fs(path).invalidate_cache()
    return
  try:
    os.remove(path)
  except FileNotFoundError:
    pass


def remove_tree(path: str) -> None:
  """Removes a folder (every object under the prefix); no error if absent."""
  if is_remote(path):
    fs = _fresh_fs(path)
    if fs.exists(path):
      fs.rm(path, recursive=True)
    fs.invalidate_cache()
    return
  shutil.rmtree(path, ignore_errors=True)


def move(src: str, dst: str) -> None:
  """Moves a file or folder. Local: a rename (shutil.move across devices).
  Bucket: copy every object, then delete the source: not atomic, so a
  caller that can be killed in between must tolerate both copies existing
  (quarantine does: the copy is complete before the source is removed)."""
  if is_remote(src) != is_remote(dst):
    raise ValueError(f'cannot move between a bucket and a local disk: {src} '
                     f'-> {dst}')
  if is_remote(src):
    fs = _fresh_fs(src)
    if fs.isdir(src):
      fs.copy(src.rstrip('/') + '/', dst.rstrip('/') + '/', recursive=True)
      fs.invalidate_cache()
      fs.rm(src, recursive=True)
    else:
      fs.copy(src, dst)
      fs.rm_file(src)
    fs.invalidate_cache()
    return
  shutil.move(src, dst)


def walk_files(path: str) -> List[Tuple[str, str]]:
  """(path relative to `path`, full path) of every file below `path`,
  sorted; what the checksum manifest hashes."""
  out = []
  if is_remote(path):
    root = str(path).rstrip('/')
    for full in _fresh_fs(path).find(root):
      full = 'gs://' + full if not full.startswith('gs://') else full
      out.append((full[len(root) + 1:], full))
    return sorted(out)
  for folder, _, names in os.walk(path):
    for name in names:
      full = os.path.join(folder, name)
      out.append((os.path.relpath(full, path), full))
  return sorted(out)


def size(path: str) -> int:
  if is_remote(path):
    return int(_fs(path).size(path))
  return os.path.getsize(path)


def open_read(path: str):
  """A binary file object for reading (streams on a bucket)."""
  if is_remote(path):
    return _fs(path).open(path, 'rb')
  return open(path, 'rb')


# ------------------------------------------------- local-only disk probes --


def free_bytes(path: str) -> Optional[int]:
  """Free bytes on the disk holding `path`; None on a bucket (no such limit
  to check)."""
  if is_remote(path):
    return None
  stats = os.statvfs(_nearest_existing(path))
  return stats.f_bavail * stats.f_frsize


def is_read_only(path: str) -> Optional[bool]:
  """True if the local folder (or its nearest existing parent) cannot be
  written; None on a bucket (permissions there show at the first write)."""
  if is_remote(path):
    return None
  return not os.access(_nearest_existing(path), os.W_OK)


def _nearest_existing(path: str) -> str:
  """`path`, or its nearest parent that exists (a workdir not made yet)."""
  probe = path
  while probe and not os.path.exists(probe):
    parent = os.path.dirname(probe)
    if parent == probe:
      break
    probe = parent
  return probe or '.'

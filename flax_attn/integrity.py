"""Checkpoint integrity: a checksum manifest per checkpoint, verified before
every restore, and a place to set bad checkpoints aside.

orbax writes a step into a temporary folder and renames it when complete, so
a killed save never looks finished; it does not notice bytes that change
afterwards (a bad disk, a partial copy, a stray write). After each save the
trainer hashes every file of the step (SHA-256) into `MANIFEST` inside the
step folder, written atomically (temporary file, fsync, rename). Restores
(train.py's resume, eval.py) check it first:

  * 'ok'         every file listed is there with its size and hash, and no
                 file was added to the state's arrays;
  * 'unverified' no manifest: written by flax_attn before checksums, or killed
                 between orbax's rename and the manifest (the step is
                 complete, orbax's rename is atomic); restored with a warning;
  * anything else is a one-line reason: the checkpoint is bad.

Bad checkpoints are moved to WORKDIR/checkpoints_corrupt/ (kept, never
deleted) so that orbax no longer sees them.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from typing import Dict, Optional, Tuple

MANIFEST = 'flax_attn_checksums.json'
OK = 'ok'
UNVERIFIED = 'unverified'
_CHUNK = 1 << 20


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(_CHUNK), b''):
      digest.update(block)
  return digest.hexdigest()


def _files(step_dir: str):
  for root, _, names in os.walk(step_dir):
    for name in names:
      path = os.path.join(root, name)
      rel = os.path.relpath(path, step_dir)
      if rel != MANIFEST and not rel.startswith(MANIFEST + '.'):
        yield rel, path


def checksums(step_dir: str) -> Dict[str, Tuple[int, str]]:
  """{relative path: (size, sha256)} of every file of a checkpoint."""
  return {rel: (os.path.getsize(path), _sha256(path))
          for rel, path in sorted(_files(step_dir))}


def write_manifest(step_dir: str) -> None:
  """Hashes every file of a finished checkpoint into its manifest."""
  entries = {rel: {'size': size, 'sha256': digest}
             for rel, (size, digest) in checksums(step_dir).items()}
  tmp = os.path.join(step_dir, f'{MANIFEST}.{os.getpid()}.tmp')
  with open(tmp, 'w') as f:
    json.dump({'version': 1, 'files': entries}, f, indent=0, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, os.path.join(step_dir, MANIFEST))
  _fsync_dir(step_dir)


def _fsync_dir(path: str) -> None:
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


def verify(step_dir: str) -> str:
  """OK, UNVERIFIED, or a one-line reason why the checkpoint is bad."""
  if not os.path.isdir(step_dir):
    return 'missing'
  path = os.path.join(step_dir, MANIFEST)
  if not os.path.exists(path):
    return UNVERIFIED
  try:
    with open(path) as f:
      expected = json.load(f)['files']
    expected = {rel: (int(v['size']), str(v['sha256']))
                for rel, v in expected.items()}
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    return f'its checksum manifest is unreadable ({type(e).__name__})'
  for rel, (size, digest) in sorted(expected.items()):
    full = os.path.join(step_dir, rel)
    if not os.path.exists(full):
      return f'file {rel} is missing'
    actual = os.path.getsize(full)
    if actual != size:
      return f'file {rel} has {actual} bytes, {size} when saved'
    if _sha256(full) != digest:
      return f'file {rel} does not match its SHA-256 checksum'
  extra = sorted(set(rel for rel, _ in _files(step_dir)) - set(expected))
  if extra:
    return f'file {extra[0]} was not part of the checkpoint when saved'
  return OK


def quarantine(step_dir: str, workdir: str) -> str:
  """Moves a bad checkpoint to WORKDIR/checkpoints_corrupt/; returns where."""
  dest_root = os.path.join(workdir, 'checkpoints_corrupt')
  os.makedirs(dest_root, exist_ok=True)
  dest = os.path.join(dest_root, f'{os.path.basename(step_dir)}-'
                      f'{time.strftime("%Y%m%d-%H%M%S")}')
  suffix = 0
  while os.path.exists(dest + (f'-{suffix}' if suffix else '')):
    suffix += 1
  dest += f'-{suffix}' if suffix else ''
  shutil.move(step_dir, dest)
  return dest


def remove_partial(checkpoint_dir: str, step: Optional[int] = None) -> None:
  """Removes orbax's temporary folders (a save that never finished) and, if
  `step` is given, that step's folder when it has no manifest yet (a save
  that failed after orbax's rename)."""
  if not os.path.isdir(checkpoint_dir):
    return
  for name in os.listdir(checkpoint_dir):
    full = os.path.join(checkpoint_dir, name)
    if '.orbax-checkpoint-tmp' in name:
      shutil.rmtree(full, ignore_errors=True)
    elif (step is not None and name == str(step)
          and not os.path.exists(os.path.join(full, MANIFEST))):
      shutil.rmtree(full, ignore_errors=True)

"""Checkpoint integrity: a checksum manifest per checkpoint, verified before
every restore, and a place to set bad checkpoints aside.

orbax writes a step into a temporary folder and renames it when complete (on
a gs:// bucket, where nothing renames, it writes the step in place and marks
it finished with `commit_success.txt` last; it lists no step without it), so
a killed save never looks finished; it does not notice bytes that change
afterwards (a bad disk, a partial copy, a stray write). After each save the
trainer hashes every file of the step (SHA-256) into `MANIFEST` inside the
step folder, written atomically (flax_attn.storage.write_atomic: temporary
file, fsync, rename locally; one object upload on a bucket). Restores
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
import time
from typing import Dict, Optional, Tuple

from flax_attn import storage

MANIFEST = 'flax_attn_checksums.json'
OK = 'ok'
UNVERIFIED = 'unverified'
_CHUNK = 1 << 20
# orbax's mark of a finished step on object stores (no atomic rename there).
COMMIT_MARK = 'commit_success.txt'


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with storage.open_read(path) as f:
    for block in iter(lambda: f.read(_CHUNK), b''):
      digest.update(block)
  return digest.hexdigest()


def _files(step_dir: str):
  for rel, path in storage.walk_files(step_dir):
    if rel != MANIFEST and not rel.startswith(MANIFEST + '.'):
      yield rel, path


def checksums(step_dir: str) -> Dict[str, Tuple[int, str]]:
  """{relative path: (size, sha256)} of every file of a checkpoint."""
  return {rel: (storage.size(path), _sha256(path))
          for rel, path in sorted(_files(step_dir))}


def write_manifest(step_dir: str) -> None:
  """Hashes every file of a finished checkpoint into its manifest."""
  entries = {rel: {'size': size, 'sha256': digest}
             for rel, (size, digest) in checksums(step_dir).items()}
  storage.write_atomic(storage.join(step_dir, MANIFEST), json.dumps(
      {'version': 1, 'files': entries}, indent=0, sort_keys=True))


def verify(step_dir: str) -> str:
  """OK, UNVERIFIED, or a one-line reason why the checkpoint is bad."""
  if not storage.isdir(step_dir):
    return 'missing'
  path = storage.join(step_dir, MANIFEST)
  if not storage.exists(path):
    return UNVERIFIED
  try:
    expected = json.loads(storage.read_text(path))['files']
    expected = {rel: (int(v['size']), str(v['sha256']))
                for rel, v in expected.items()}
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    return f'its checksum manifest is unreadable ({type(e).__name__})'
  present = dict(_files(step_dir))  # one listing (a bucket has no stat)
  for rel, (size, digest) in sorted(expected.items()):
    full = present.get(rel)
    if full is None:
      return f'file {rel} is missing'
    actual = storage.size(full)
    if actual != size:
      return f'file {rel} has {actual} bytes, {size} when saved'
    if _sha256(full) != digest:
      return f'file {rel} does not match its SHA-256 checksum'
  extra = sorted(set(present) - set(expected))
  if extra:
    return f'file {extra[0]} was not part of the checkpoint when saved'
  return OK


def quarantine(step_dir: str, workdir: str) -> str:
  """Moves a bad checkpoint to WORKDIR/checkpoints_corrupt/; returns where.

  On a bucket the move is a copy then a delete: a run killed in between
  leaves both copies, and the next run finds the step bad again and moves
  it aside once more (harmless: both copies are kept)."""
  dest_root = storage.join(workdir, 'checkpoints_corrupt')
  storage.makedirs(dest_root)
  dest = storage.join(dest_root, f'{os.path.basename(step_dir.rstrip("/"))}-'
                      f'{time.strftime("%Y%m%d-%H%M%S")}')
  suffix = 0
  while storage.exists(dest + (f'-{suffix}' if suffix else '')):
    suffix += 1
  dest += f'-{suffix}' if suffix else ''
  storage.move(step_dir, dest)
  return dest


def remove_partial(checkpoint_dir: str, step: Optional[int] = None) -> None:
  """Removes orbax's temporary folders (a save that never finished) and, if
  `step` is given, that step's folder when it has no manifest yet (a save
  that failed after orbax's rename).

  On a bucket orbax writes steps in place: an unfinished save is a step
  folder without orbax's commit mark (COMMIT_MARK)."""
  remote = storage.is_remote(checkpoint_dir)
  for name in storage.listdir(checkpoint_dir):
    full = storage.join(checkpoint_dir, name)
    unfinished = ('.orbax-checkpoint-tmp' in name or (
        remote and name.isdigit()
        and not storage.exists(storage.join(full, COMMIT_MARK))))
    if unfinished or (step is not None and name == str(step)
                      and not storage.exists(storage.join(full, MANIFEST))):
      storage.remove_tree(full)

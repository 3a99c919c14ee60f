"""Checkpoints, all in one place: the orbax manager and the saved tree,
save and restore, the shape check before a restore, the writer (finishing
asynchronous saves, checksums, rotation that keeps the last known good
checkpoint), and the restore that verifies checksums and falls back to an
older intact checkpoint.

WORKDIR/checkpoints/STEP holds 'state' (the TrainState's arrays), 'data' (the
input iterator's position and the divergence guard's recent losses) and
'config'; integrity.py writes each step's manifest of checksums.
"""
from __future__ import annotations

import base64
import contextlib
import json
import math
import os
from typing import Any, Dict, Optional, Sequence, Tuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from flax_attn import integrity, storage
from flax_attn.errors import (CheckpointError, CheckpointMismatchError,
                              DivergenceError, UserError, WorkdirWriteError)
from flax_attn.training.guard import GUARD_WINDOW, init_guard
from flax_attn.training.state import TrainState, warn
from flax_attn.training.workdir import disk_fault, raise_everywhere


def encode_iterator_state(state) -> Dict[str, Any]:
  if isinstance(state, bytes):
    return {'bytes_b64': base64.b64encode(state).decode('ascii')}
  return {'json': state}


def decode_iterator_state(blob: Dict[str, Any]):
  if 'bytes_b64' in blob:
    return base64.b64decode(blob['bytes_b64'])
  return blob['json']


def state_tree(state: TrainState) -> Dict[str, Any]:
  """The saved tree: its key paths are the checkpoint format (pinned by a
  test, so that existing checkpoints restore)."""
  return {'step': state.step, 'params': state.params,
          'batch_stats': state.batch_stats, 'opt_state': state.opt_state,
          'ema_params': state.ema_params}


def _flat_shapes(tree) -> Dict[str, Tuple[int, ...]]:
  flat = flax.traverse_util.flatten_dict(
      flax.serialization.to_state_dict(tree), sep='/')
  return {k: tuple(getattr(v, 'shape', ())) for k, v in flat.items()
          if v is not None and not (isinstance(v, dict) and not v)}


def check_checkpoint_fits(manager: ocp.CheckpointManager, step: int,
                          state: TrainState, model_name: str) -> None:
  """Compares the stored tree with the model's before restoring anything."""
  try:
    meta = ocp.StandardCheckpointHandler().metadata(
        epath.Path(manager.directory) / str(step) / 'state')
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f'checkpoint step {step} in {manager.directory} is '
                          f'unreadable: {type(e).__name__}: {e}'.splitlines()[0])
  stored = _flat_shapes(getattr(meta, 'tree', meta))
  wanted = _flat_shapes(state_tree(state))
  for key in sorted(set(wanted) | set(stored)):
    if stored.get(key) != wanted.get(key):
      raise CheckpointMismatchError(
          f'checkpoint step {step} in {manager.directory} does not fit model '
          f'{model_name!r}: first mismatch at {key!r}: checkpoint '
          f'{stored.get(key, "missing")} vs model {wanted.get(key, "missing")};'
          ' use another --workdir or the matching --config.model')


def state_handler() -> ocp.PyTreeCheckpointHandler:
  """The train state's handler: on one host, arrays saved without replica
  parallelism.

  orbax's replica-parallel save gives each replica a slice of every
  replicated array to write, cut with one eager `lax.slice` per array; each
  new shape compiles, which cost the first checkpoint 2.3 s on 2 CPU
  devices. On one host the replicas share
  a process and a file system, so replica 0 writes every array whole. The
  files are those StandardCheckpointHandler writes (it wraps this handler).
  """
  if jax.process_count() > 1:
    return ocp.PyTreeCheckpointHandler()
  registry = ocp.type_handlers.create_type_handler_registry(
      (jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False)))
  return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


def create_checkpoint_manager(workdir: str, config, create: bool = True
                              ) -> ocp.CheckpointManager:
  """orbax's manager for WORKDIR/checkpoints. It deletes nothing:
  CheckpointWriter rotates, so that the last known good checkpoint survives.
  `create=False` (eval.py) also leaves other runs' temporary folders alone."""
  del config  # rotation is CheckpointWriter's
  options = ocp.CheckpointManagerOptions(
      max_to_keep=None, create=create, cleanup_tmp_directories=create)
  # A gs:// URL as it is (abspath would make it a local path); orbax and
  # TensorStore write buckets natively.
  directory = (storage.join(workdir, 'checkpoints') if storage.is_remote(
      workdir) else os.path.join(os.path.abspath(workdir), 'checkpoints'))
  return ocp.CheckpointManager(
      directory, options=options,
      item_handlers={'state': state_handler(),
                     'data': ocp.JsonCheckpointHandler(),
                     'config': ocp.JsonCheckpointHandler()})


def save_checkpoint(manager, state: TrainState, data_state, config,
                    guard_losses: Optional[Sequence[float]] = None) -> None:
  """Saves asynchronously; `guard_losses` (the divergence guard's recent
  losses) ride with the data iterator's position, so a resumed run's guard
  compares with the losses before the checkpoint."""
  step = int(jax.device_get(state.step))
  data = encode_iterator_state(data_state)
  if guard_losses is not None:
    data['guard_losses'] = np.asarray(guard_losses, np.float64).tolist()
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.PyTreeSave(state_tree(state)),
      data=ocp.args.JsonSave(data),
      config=ocp.args.JsonSave(config.to_dict())), force=True)


def restore_checkpoint(manager, step: int, state: TrainState, model_name: str
                       ) -> Tuple[TrainState, Any]:
  check_checkpoint_fits(manager, step, state, model_name)
  target = state_tree(state)
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore(
          target, restore_args=ocp.checkpoint_utils.construct_restore_args(
              target)),
      data=ocp.args.JsonRestore()))
  tree = restored['state']
  new_state = state.replace(**tree)
  return new_state, decode_iterator_state(restored['data'])


def restored_guard(manager, step: Optional[int]) -> Dict[str, jnp.ndarray]:
  """The divergence guard, with the recent losses saved at `step`."""
  guard = init_guard()
  if step is None:
    return guard
  try:
    blob = manager.restore(step, args=ocp.args.Composite(
        data=ocp.args.JsonRestore()))['data']
    guard['losses'] = jnp.asarray(np.asarray(
        blob['guard_losses'], np.float32).reshape(GUARD_WINDOW))
  except Exception:  # pylint: disable=broad-except
    pass  # saved before the guard existed: it warms up again
  return guard


def checkpoint_config(manager, step: int) -> Dict[str, Any]:
  """The config a checkpoint was trained with ({} if unreadable)."""
  try:
    return dict(manager.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore()))['config'] or {})
  except Exception:  # pylint: disable=broad-except
    return {}


@jax.jit
def all_finite(tree) -> jnp.ndarray:
  """Whether every float array of `tree` is finite (one device scalar)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def restore_intact(manager, workdir: str, state: TrainState, model_name: str,
                   set_aside: bool, only_step: Optional[int] = None):
  """Restores the newest intact checkpoint (or `only_step`).

  Each candidate is verified against its checksums (integrity.py) and must
  restore to a finite state. A bad one gets a one-line warning and, with
  `set_aside` (train.py), is moved to WORKDIR/checkpoints_corrupt/; eval.py
  only skips it. Returns (state, data_state, step), or None when there is
  no checkpoint; raises CheckpointError when none is intact.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  if only_step is not None:
    steps = [only_step]
  bad = []
  for step in steps:
    step_dir = storage.join(str(manager.directory), str(step))
    status = integrity.verify(step_dir)
    if status == integrity.UNVERIFIED:
      warn(f'checkpoint {step_dir} has no checksums (saved before they '
           'existed, or stopped before writing them); restoring it unverified')
    if status in (integrity.OK, integrity.UNVERIFIED):
      try:
        restored, data_state = restore_checkpoint(manager, step, state,
                                                  model_name)
        if bool(jax.device_get(all_finite(state_tree(restored)))):
          if set_aside and bad:
            manager.reload()  # it still lists the steps moved aside
          return restored, data_state, step
        status = 'its arrays are not finite'
      except CheckpointMismatchError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        reason = (f'{type(e).__name__}: '
                  f'{str(e).splitlines()[0] if str(e) else ""}')[:200]
        if status == integrity.OK:
          # Its files are as saved: not corruption (memory, a flaky file
          # system...), so nothing is set aside; the run stops instead.
          raise CheckpointError(
              f'checkpoint {step_dir} passed its checksums but could not be '
              f'restored ({reason}); nothing was moved, run again') from None
        status = f'it cannot be read ({reason})'

    if only_step is not None:
      raise CheckpointError(f'checkpoint step {step} in {manager.directory} is '
                            f'corrupt: {status}')
    bad.append(step)
    if set_aside and jax.process_index() == 0:
      try:
        dest = integrity.quarantine(step_dir, workdir)
      except Exception as e:  # pylint: disable=broad-except
        fault = disk_fault(e)
        if fault is None and not isinstance(e, OSError):
          raise
        raise WorkdirWriteError(
            f'checkpoint {step_dir} is corrupt ({status}) and cannot be moved '
            f'aside: {fault or e}') from None
      warn(f'checkpoint {step_dir} is corrupt ({status}); moved to {dest}, '
           'falling back to an older one')
    else:
      warn(f'checkpoint {step_dir} is corrupt ({status}); skipping it')
  if set_aside and bad:
    manager.reload()
  if bad:
    where = (f'; they were moved to '
             f'{storage.join(workdir, "checkpoints_corrupt")}'
             if set_aside else '')
    raise CheckpointError(
        f'no intact checkpoint in {manager.directory}: all {len(bad)} are '
        f'corrupt{where}; use another --workdir to start over')
  return None


class CheckpointWriter:
  """Saves, verifies and rotates checkpoints so that none is ever lost.

  * A save is asynchronous (orbax); it is finished (and its manifest of
    checksums written, integrity.py) before the next save and at the end.
  * A state that is not finite is never written.
  * Rotation keeps the newest `keep` checkpoints plus the last known good
    one: the newest saved while the divergence guard was clear and the
    latest evaluation was finite and within divergence_factor x the best
    one; recorded in WORKDIR/last_good.json.
  * A full disk or read-only workdir raises WorkdirWriteError (one line)
    after removing the partial checkpoint, so a restart after freeing space
    works.
  """

  def __init__(self, manager, workdir: str, config, is_main: bool):
    self.manager = manager
    self.workdir = workdir
    self.keep = config.keep_checkpoints
    self.factor = config.get('divergence_factor', 0.0)
    self.is_main = is_main
    self.last_saved: Optional[int] = manager.latest_step()
    self._pending: Optional[Tuple[int, bool]] = None
    self._good_path = storage.join(workdir, 'last_good.json')
    self._good = self._read_good()
    # Whether the latest evaluation was healthy, kept across restarts: a
    # resumed run's first save must not become "last good" after a bad eval.
    self._eval_ok = bool(self._good.get('eval_ok', True))

  def _read_good(self) -> Dict[str, Any]:
    try:
      good = json.loads(storage.read_text(self._good_path))
      return good if isinstance(good, dict) else {}
    except (OSError, ValueError):
      return {}

  def note_eval(self, step: int, result: Dict[str, float]) -> None:
    """Records whether the evaluation at `step` looks healthy."""
    loss = result.get('eval_loss', float('nan'))
    best = self._good.get('best_eval_loss')
    self._eval_ok = math.isfinite(loss) and not (
        self.factor and best is not None and loss > self.factor * best)
    if self._eval_ok and (best is None or loss < best):
      self._good['best_eval_loss'] = loss
    self._good['eval_ok'] = self._eval_ok
    if self.is_main:
      self._write_good()
    del step

  def save(self, state: TrainState, data_state, config,
           guard: Optional[Dict[str, Any]] = None) -> None:
    self.finish()
    step = int(jax.device_get(state.step))
    if not bool(jax.device_get(all_finite(state_tree(state)))):
      raise DivergenceError(
          f'the train state at step {step} is not finite; it was not saved '
          f'and the last checkpoint, step {self.last_saved}, is intact; '
          'lower config.learning_rate and run again to resume')
    with self._disk_errors(step):
      save_checkpoint(self.manager, state, data_state, config,
                      None if guard is None else jax.device_get(
                          guard['losses']))
    self._pending = (step, self._eval_ok)

  @property
  def newest(self) -> Optional[int]:
    """The newest checkpoint written or being written (finish() completes
    it even when the run stops with an error)."""
    return self._pending[0] if self._pending else self.last_saved

  def finish(self) -> None:
    """Waits for the pending save; writes its manifest; rotates."""
    if self._pending is None:
      return
    step, healthy = self._pending
    self._pending = None
    with self._disk_errors(step):
      self.manager.wait_until_finished()
    failure = None
    if self.is_main:
      try:
        with self._disk_errors(step):
          integrity.write_manifest(storage.join(str(self.manager.directory),
                                                str(step)))
        if healthy:
          self._good['step'] = step
          self._write_good()
      except UserError as e:
        failure = e
    raise_everywhere(failure, f'finishing checkpoint step {step}')
    self.last_saved = step
    if healthy:
      self._good['step'] = step
    with self._disk_errors(None, f'{self.manager.directory} (deleting old '
                           'checkpoints)'):
      self._rotate()  # every process: orbax's delete is a collective

  def _write_good(self) -> None:
    with self._disk_errors(None):
      storage.write_atomic(self._good_path, json.dumps(self._good))

  def _rotate(self) -> None:
    steps = sorted(self.manager.all_steps())
    keep = set(steps[-self.keep:]) | {self._good.get('step')}
    for old in steps:
      if old not in keep:
        self.manager.delete(old)

  @contextlib.contextmanager
  def _disk_errors(self, step: Optional[int], what: Optional[str] = None):
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except
      fault = disk_fault(e)
      if fault is None:
        raise
      if step is not None and self.is_main:
        integrity.remove_partial(str(self.manager.directory), step)
      what = what or (f'checkpoint step {step} in {self.manager.directory}'
                      if step is not None else self._good_path)
      raise WorkdirWriteError(
          f'cannot write {what}: {fault}; the partial checkpoint was removed '
          'and the earlier ones are intact: free space (or fix permissions) '
          'and run again to resume') from None

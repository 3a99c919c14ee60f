"""The training loop: train_and_evaluate, with resume, periodic evaluation,
logging, checkpoints, the divergence guard, and preemption (SIGTERM / Ctrl-C
save a checkpoint and stop; several processes agree on the step to stop at).
"""
from __future__ import annotations

import signal
import sys
import time
from typing import Any, Dict, Optional

import jax
import ml_collections
import numpy as np

from flax_attn import data as data_lib
from flax_attn import integrity
from flax_attn.errors import WorkdirWriteError
from flax_attn.training.checkpoints import (CheckpointWriter,
                                            checkpoint_config,
                                            create_checkpoint_manager,
                                            restore_intact, restored_guard)
from flax_attn.training.evaluation import run_evaluation
from flax_attn.training.experiment import (Experiment, build_experiment,
                                           global_batch, jit_eval_step,
                                           jit_train_step)
from flax_attn.training.guard import check_guard
from flax_attn.training.metrics import MetricWriter, progress_bar
from flax_attn.training.pretrained import (load_pretrained,
                                           no_pretrained_warning)
from flax_attn.training.state import warn
from flax_attn.training.workdir import locked_workdir, write_config


class _Preemption:
  """Turns SIGTERM and SIGINT (Ctrl-C) into a flag the loop checks after each
  step: it then saves a checkpoint and stops. A second Ctrl-C stops at once
  (KeyboardInterrupt; the last checkpoint is intact)."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signum: Optional[int] = None
    self._previous = {}

  @property
  def requested(self) -> bool:
    return self.signum is not None

  def __enter__(self):
    for signum in self.SIGNALS:
      try:
        self._previous[signum] = signal.signal(signum, self._handler)
      except ValueError:  # not the main thread (e.g. some notebooks)
        pass
    return self

  def _handler(self, signum, frame):
    del frame
    if self.signum == signal.SIGINT and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signum = signum

  def __exit__(self, *exc):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)


class Preempted(Exception):
  """Raised after SIGTERM / SIGINT once the checkpoint is safely written;
  `exit_code` is 128 + the signal number (143, 130)."""

  def __init__(self, message: str, exit_code: int = 143):
    super().__init__(message)
    self.exit_code = exit_code


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str
                       ) -> Dict[str, float]:
  """Trains (resuming from the newest intact checkpoint in `workdir`),
  evaluates every `eval_every_steps` and at the end; returns the final eval
  metrics. One run per workdir (WORKDIR/.lock)."""
  with locked_workdir(workdir):
    return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config, workdir):
  exp = build_experiment(config)
  state, mesh = exp.state, exp.mesh
  total_steps = exp.total_steps
  is_main = jax.process_index() == 0
  manager = create_checkpoint_manager(workdir, config)
  restored = restore_intact(manager, workdir, state, config.model,
                            set_aside=True)
  data_state = None
  if restored is not None:
    state, data_state, latest = restored
    print(f'resumed from {manager.directory}/{latest}', flush=True)
    _warn_resume_changes(checkpoint_config(manager, latest), config, latest,
                         total_steps)
  elif config.pretrained_path:
    state, report = load_pretrained(state, config.pretrained_path)
    state = jax.device_put(state, exp.replicated)
    print(report, flush=True)
  elif is_main and (warning := no_pretrained_warning(config)):
    print(warning, flush=True)
  if is_main:
    write_config(workdir, config)
    print(f'training on {mesh.size} {mesh.devices.flat[0].platform} '
          f'device(s), {config.batch_size // mesh.size} images each per step',
          flush=True)

  train_iter = data_lib.create_train_iterator(
      config, seed=config.seed, process_index=jax.process_index(),
      process_count=jax.process_count())
  if data_state is not None:
    train_iter.set_state(data_state)

  writer = MetricWriter(workdir, enabled=is_main)
  ckpt = CheckpointWriter(manager, workdir, config, is_main)
  start = int(jax.device_get(state.step))
  bar = progress_bar(total_steps, start, is_main and config.progress_bar)
  last_eval: Dict[str, float] = {}
  if start >= total_steps:
    last_eval = run_evaluation(config, state, jit_eval_step(exp),
                               exp.batch_sharding)

  try:
    result = _train_loop(config, exp, state, ckpt, train_iter, writer, bar,
                         start, last_eval)
    ckpt.finish()
    return result
  finally:
    # Whatever ended the loop, finished checkpoints and metrics are on disk.
    failure = sys.exc_info()[1]
    if failure is not None and not isinstance(failure, WorkdirWriteError):
      try:  # a save in flight when the run stopped (divergence, Ctrl-C x 2)
        ckpt.finish()
      except Exception:  # pylint: disable=broad-except
        pass  # the error already being raised is the one to report
    try:
      manager.wait_until_finished()
      manager.close()
    except Exception:  # pylint: disable=broad-except
      if failure is None:
        raise
      # Already failing (e.g. a full disk): that error is the one to report.
    if isinstance(failure, WorkdirWriteError) and is_main:
      # orbax's writer threads may have gone on after the first error.
      integrity.remove_partial(str(manager.directory))
    writer.close()
    if bar is not None:
      bar.close()
    if hasattr(train_iter, 'close'):  # grain worker processes
      train_iter.close()


def _warn_resume_changes(saved: Dict[str, Any], config, step: int,
                         total_steps: int) -> None:
  """One line for each change from the checkpoint's run that surprises."""
  for field in ('batch_size', 'dataset', 'image_size', 'seed'):
    if field in saved and saved[field] != config[field]:
      warn(f'resuming step {step} with config.{field}={config[field]!r}; the '
           f'checkpoint was trained with {saved[field]!r} (the data order and '
           'schedule change from here)')
  if step > total_steps:
    warn(f'the checkpoint is at step {step}, past config.num_train_steps='
         f'{total_steps}: nothing to train, evaluating step {step}')


def _train_loop(config, exp: Experiment, state, ckpt, train_iter, writer,
                bar, start, last_eval):
  total_steps = exp.total_steps
  steps_per_epoch = exp.steps_per_epoch
  eval_fn = jit_eval_step(exp)
  eval_every = config.eval_every_steps or steps_per_epoch
  step_fn = jit_train_step(exp, config)
  guard = jax.device_put(restored_guard(ckpt.manager, ckpt.last_saved),
                         exp.replicated)
  t_log, n_log = time.perf_counter(), 0
  with jax.set_mesh(exp.mesh), _Preemption() as preemption:
    for step in range(start + 1, total_steps + 1):
      batch = global_batch(next(train_iter), exp.batch_sharding)
      state, guard, metrics = step_fn(state, guard, batch)
      n_log += 1
      if bar is not None:
        bar.update(1)
      log = step % config.log_every_steps == 0 or step == total_steps
      evaluate_now = step % eval_every == 0 or step == total_steps
      periodic_save = (step % config.checkpoint_every_steps == 0
                       or step == total_steps)
      boundary = log or evaluate_now or periodic_save
      if boundary:
        # The one host read of the guard: nothing flagged is logged or saved.
        check_guard(guard, config, ckpt.newest)
      if log:
        metrics = jax.device_get(metrics)
        elapsed = time.perf_counter() - t_log
        ips = n_log * config.batch_size / max(elapsed, 1e-9)
        row = {'epoch': step / steps_per_epoch, **metrics,
               'images_per_sec': ips}
        writer.write(step, row)
        if bar is not None:
          bar.set_postfix(loss=f'{float(metrics["train_loss"]):.4f}',
                          img_s=f'{ips:.0f}')
        t_log, n_log = time.perf_counter(), 0
      if evaluate_now:
        last_eval = run_evaluation(config, state, eval_fn,
                                   exp.batch_sharding)
        ckpt.note_eval(step, last_eval)
        writer.write(step, {'epoch': step / steps_per_epoch, **last_eval})
        if bar is not None:
          bar.write(f'step {step}: eval loss {last_eval["eval_loss"]:.4f} '
                    f'top1 {last_eval["top1"]:.4f} top5 '
                    f'{last_eval["top5"]:.4f}')
        t_log, n_log = time.perf_counter(), 0  # eval time is not train time
      # Decided after the log and the evaluation, so that a signal that
      # arrived during them still gets its checkpoint.
      stop = _stop_agreed(preemption.requested, boundary)
      if stop and not boundary:
        check_guard(guard, config, ckpt.newest)
      if periodic_save or stop:
        ckpt.save(state, train_iter.get_state(), config, guard)
      if stop and step < total_steps:
        ckpt.finish()
        signum = preemption.signum or signal.SIGTERM
        name = (signal.Signals(signum).name if preemption.signum
                else 'signal to another process')
        raise Preempted(f'{name}: stopped at step {step}, checkpoint saved '
                        f'in {ckpt.manager.directory}', 128 + signum)
  return {**last_eval, 'step': total_steps}


def _stop_agreed(requested: bool, boundary: bool) -> bool:
  """Whether to save and stop after this step for a SIGTERM / SIGINT.

  One process: as soon as it is signalled. Several: the processes must
  save together (orbax's save is collective) but may be signalled at
  different steps, or only one of them; so they agree, with one small
  all-gather, at the steps where every process logs, evaluates or saves
  anyway, and all stop at the first such step after any was signalled.
  """
  if jax.process_count() == 1:
    return requested
  if not boundary:
    return False
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  flags = multihost_utils.process_allgather(np.asarray(requested, np.int32))
  return bool(np.any(flags))

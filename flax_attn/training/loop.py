"""The training loop: train_and_evaluate, with resume, periodic evaluation,
logging, checkpoints, the divergence guard, and preemption (SIGTERM / Ctrl-C
save a checkpoint and stop; several processes agree on the step to stop at).
"""
from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any, Dict, Optional

import jax
import ml_collections

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
from flax_attn.training.workdir import agree, locked_workdir, write_config


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
  metrics. One run per workdir (WORKDIR/.lock, or a lease on a gs://
  bucket)."""
  with locked_workdir(workdir) as lock:
    return _train_and_evaluate(config, workdir, lock)


def _train_and_evaluate(config, workdir, lock):
  exp = build_experiment(config)
  state, mesh = exp.state, exp.mesh
  total_steps = exp.total_steps
  is_main = jax.process_index() == 0
  manager = create_checkpoint_manager(workdir, config)
  restored, failure = None, None
  try:
    restored = restore_intact(manager, workdir, state, config.model,
                              set_aside=True)
  except Exception as e:  # pylint: disable=broad-except
    if jax.process_count() == 1:
      raise
    failure = e  # every process stops with its line, not only this one
  agree(failure, what='restoring the checkpoint')
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
  failure = None
  if is_main:
    try:
      write_config(workdir, config)
    except Exception as e:  # pylint: disable=broad-except
      failure = e
  agree(failure, what='writing config.json')
  if is_main:
    print(f'training on {mesh.size} {mesh.devices.flat[0].platform} '
          f'device(s), {config.batch_size // mesh.size} images each per step',
          flush=True)

  train_iter = data_lib.create_train_iterator(
      config, seed=config.seed, process_index=jax.process_index(),
      process_count=jax.process_count())
  if data_state is not None:
    train_iter.set_state(data_state)

  start = int(jax.device_get(state.step))
  failure, writer = None, None
  try:
    writer = MetricWriter(workdir, enabled=is_main, resume_step=start)
  except Exception as e:  # pylint: disable=broad-except
    failure = e
  agree(failure, what='opening the metrics')
  ckpt = CheckpointWriter(manager, workdir, config, is_main)
  bar = progress_bar(total_steps, start, is_main and config.progress_bar)
  last_eval: Dict[str, float] = {}
  if start >= total_steps:
    last_eval = run_evaluation(config, state, jit_eval_step(exp),
                               exp.batch_sharding)

  try:
    result = _train_loop(config, exp, state, ckpt, train_iter, writer, bar,
                         start, last_eval, lock)
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
    if writer is not None:
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


class _HostLocal:
  """Collects the first failure of work that only this process does at a
  boundary (its metrics writes, the workdir lease's check): with several
  processes it is held until the boundary's agreement (`agree`), so that
  every process stops together; with one it is raised at once."""

  def __init__(self):
    self.failure: Optional[BaseException] = None

  def run(self, fn, *args) -> None:
    if self.failure is not None:
      return
    if jax.process_count() == 1:
      fn(*args)
      return
    try:
      fn(*args)
    except Exception as e:  # pylint: disable=broad-except
      self.failure = e

  def take(self) -> Optional[BaseException]:
    failure, self.failure = self.failure, None
    return failure


def _injected_fault(step: int) -> None:
  """A test hook: FLAX_ATTN_INJECT_FAULT_AT_STEP=N makes this process fail
  at the boundary of step N as a failed metrics write would (the
  multi-process tests set it on one process only)."""
  if os.environ.get('FLAX_ATTN_INJECT_FAULT_AT_STEP') == str(step):
    raise WorkdirWriteError(f'injected fault at step {step} '
                            '(FLAX_ATTN_INJECT_FAULT_AT_STEP)')


def _train_loop(config, exp: Experiment, state, ckpt, train_iter, writer,
                bar, start, last_eval, lock):
  total_steps = exp.total_steps
  steps_per_epoch = exp.steps_per_epoch
  eval_fn = jit_eval_step(exp)
  eval_every = config.eval_every_steps or steps_per_epoch
  step_fn = jit_train_step(exp, config)
  guard = jax.device_put(restored_guard(ckpt.manager, ckpt.last_saved),
                         exp.replicated)
  t_log, n_log = time.perf_counter(), 0
  local = _HostLocal()
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
        local.run(lock.check)  # a bucket lease another run took over
        local.run(_injected_fault, step)
      if log:
        metrics = jax.device_get(metrics)
        elapsed = time.perf_counter() - t_log
        ips = n_log * config.batch_size / max(elapsed, 1e-9)
        row = {'epoch': step / steps_per_epoch, **metrics,
               'images_per_sec': ips}
        local.run(writer.write, step, row)
        if bar is not None:
          bar.set_postfix(loss=f'{float(metrics["train_loss"]):.4f}',
                          img_s=f'{ips:.0f}')
        t_log, n_log = time.perf_counter(), 0
      if evaluate_now:
        last_eval = run_evaluation(config, state, eval_fn,
                                   exp.batch_sharding)
        ckpt.note_eval(step, last_eval)
        local.run(writer.write, step,
                  {'epoch': step / steps_per_epoch, **last_eval})
        if bar is not None:
          bar.write(f'step {step}: eval loss {last_eval["eval_loss"]:.4f} '
                    f'top1 {last_eval["top1"]:.4f} top5 '
                    f'{last_eval["top5"]:.4f}')
        t_log, n_log = time.perf_counter(), 0  # eval time is not train time
      # Decided after the log and the evaluation, so that a signal that
      # arrived during them still gets its checkpoint.
      stop = _stop_agreed(preemption.requested, boundary, local.take())
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


def _stop_agreed(requested: bool, boundary: bool,
                 failure: Optional[BaseException] = None) -> bool:
  """Whether to save and stop after this step for a SIGTERM / SIGINT;
  raises if any process brings a host-local `failure`.

  One process: as soon as it is signalled (a failure was raised already).
  Several: the processes must save together (orbax's save is collective)
  but may be signalled at different steps, or only one of them; so they
  agree, with one small all-gather (`agree`: the stop flag and any
  failure), at the steps where every process logs, evaluates or saves
  anyway, and all stop at the first such step after any was signalled, or
  with the same line at once after a failure on any of them.
  """
  if jax.process_count() == 1:
    if failure is not None:
      raise failure
    return requested
  if not boundary:
    return False
  return agree(failure, requested)

"""train.py, eval.py, flax_attn.visualize and flax_attn.plot on a gs://
workdir, against the fake-gcs-server emulator on 127.0.0.1 (the
`gcs_emulator` fixture): a run killed with -9 and resumed to the
uninterrupted result, a second run refused while the first holds the lease,
the killed run's lease expiring, a corrupt checkpoint moved aside on the
bucket, and two processes sharing a bucket workdir and compilation cache
where a failure on one stops both with the same line.

Every command-line run is a subprocess with one XLA:CPU device, under a
timeout (its process group is killed on expiry).
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import chex
import numpy as np
import pytest

import gcs_emulator as emu
from flax_attn import integrity, lease as lease_lib, records, storage
from flax_attn.workdir_lock import WorkdirBusyError
from helpers import kill_process_groups

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, 'tests', 'tiny_config.py')
XLA_FLAGS = ('--xla_force_host_platform_device_count=1 '
             '--xla_llvm_disable_expensive_passes=true')
STEPS = 24
ARGS = ['--config', TINY, f'--config.num_train_steps={STEPS}',
        '--config.checkpoint_every_steps=6', '--config.log_every_steps=6',
        f'--config.eval_every_steps={STEPS}', '--config.cpu_devices=0']
TIMEOUT_S = 300  # one run on a busy 2-core machine
# Long enough that a run renews its lease on a busy machine (15 s was not,
# with the other test worker compiling), short enough for the test to wait
# for a killed run's lease to expire.
LEASE_TIMEOUT_S = 30


@pytest.fixture
def bucket(gcs_emulator):
  """A fresh gs:// folder per test."""
  return f'gs://{emu.BUCKET}/{uuid.uuid4().hex[:10]}', gcs_emulator.env


def _launch(script, workdir, env, *extra, multihost=None):
  cmd = [sys.executable, *([script] if script.endswith('.py') else
                           ['-m', script]), '--workdir', workdir, *extra]
  if multihost is not None:
    port, count, process = multihost
    cmd += ['--multihost', f'--coordinator_address=127.0.0.1:{port}',
            f'--num_processes={count}', f'--process_id={process}',
            '--coordinator_timeout=120']
  return subprocess.Popen(
      cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      start_new_session=True,
      env={**os.environ, **env, 'XLA_FLAGS': XLA_FLAGS, 'JAX_PLATFORMS': 'cpu',
           'FLAX_ATTN_HUGEPAGES': '0',
           'FLAX_ATTN_LEASE_TIMEOUT_S': str(LEASE_TIMEOUT_S)})


def _kill(*procs):
  kill_process_groups(procs)


def _finish(*procs, timeout=TIMEOUT_S, code=0):
  """(returncode, stdout, stderr, exit time) of each; kills all on a timeout
  or an unexpected exit code."""
  out = [None] * len(procs)

  def wait(i, proc):
    try:
      stdout, stderr = proc.communicate(timeout=timeout)
      out[i] = (proc.returncode, stdout, stderr, time.time())
    except subprocess.TimeoutExpired:
      pass

  threads = [threading.Thread(target=wait, args=(i, p), daemon=True)
             for i, p in enumerate(procs)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout + 10)
  if any(o is None for o in out):
    _kill(*procs)
    raise AssertionError(f'still running after {timeout} s')
  for rc, stdout, stderr, _ in out:
    if rc != code:
      _kill(*procs)
      raise AssertionError(f'exit code {rc}, not {code}:\n{stdout[-2000:]}\n'
                           f'{stderr[-3000:]}')
  return out


def _committed_steps(workdir):
  """Checkpoint steps orbax finished on the bucket (its commit mark)."""
  ckpt = storage.join(workdir, 'checkpoints')
  return [int(n) for n in storage.listdir(ckpt) if n.isdigit() and
          storage.exists(storage.join(ckpt, n, integrity.COMMIT_MARK))]


def _wait_for_checkpoint(workdir, proc):
  deadline = time.time() + TIMEOUT_S
  while time.time() < deadline:
    if _committed_steps(workdir):
      return
    if proc.poll() is not None:
      raise AssertionError(f'ended before its first checkpoint: '
                           f'{proc.returncode} {proc.communicate()}')
    time.sleep(0.2)
  _kill(proc)
  raise AssertionError('no checkpoint appeared')


def _final_eval(workdir):
  rows = records.read_records(workdir, 'metrics')
  evals = [r for r in rows if 'eval_loss' in r]
  assert evals[-1]['step'] == STEPS, evals
  return evals[-1]['eval_loss'], rows


def test_bucket_run_killed_resumed_refused_corrupted_evaluated_and_plotted(
    bucket, tmp_path):
  root, env = bucket
  work, straight = f'{root}/killed', f'{root}/straight'
  cache = f'--config.compilation_cache_dir={root}/jax_cache'
  killed = _launch('train.py', work, env, *ARGS, cache)
  uninterrupted = _launch('train.py', straight, env, *ARGS, cache)
  try:
    _wait_for_checkpoint(work, killed)
    # A second run on the busy workdir is refused, naming the holder.
    with pytest.raises(WorkdirBusyError,
                       match=f'in use by another train.py \\(pid {killed.pid} '):
      lease_lib.acquire_workdir(work, timeout_s=LEASE_TIMEOUT_S)
    assert killed.poll() is None, 'the run ended before the kill'
    os.killpg(killed.pid, signal.SIGKILL)
    killed.communicate()
    newest = max(_committed_steps(work))
    assert newest < STEPS
    # Its lease outlives it until the timeout, naming the dead holder...
    with pytest.raises(WorkdirBusyError, match=f'pid {killed.pid} .* expires '
                       'in [0-9]+ s if that run is gone'):
      lease_lib.acquire_workdir(work, timeout_s=LEASE_TIMEOUT_S)
    # ...and once it has expired a restart takes over and resumes.
    lease = storage.read_versioned(storage.join(work, lease_lib.LEASE_NAME))
    assert json.loads(lease.data)['pid'] == killed.pid
    time.sleep(max(0.0, lease.updated + LEASE_TIMEOUT_S + 1 - time.time()))
    (_, out, err, _), = _finish(_launch('train.py', work, env, *ARGS, cache))
    assert f'resumed from {work}/checkpoints/{newest}' in out, (
        out + err[-2000:])
    _finish(uninterrupted)
  except BaseException:
    _kill(killed, uninterrupted)
    raise
  loss, rows = _final_eval(work)
  straight_loss, straight_rows = _final_eval(straight)
  assert abs(loss - straight_loss) < 1e-5, (loss, straight_loss)
  # The records merged across the kill: each step logged once, as the
  # uninterrupted run logged them.
  assert [r['step'] for r in rows] == [r['step'] for r in straight_rows] == [
      6, 12, 18, 24, 24]
  chex.assert_trees_all_close(
      [r['train_loss'] for r in rows if 'train_loss' in r],
      [r['train_loss'] for r in straight_rows if 'train_loss' in r],
      atol=1e-5)
  assert any(n.startswith('jit_guarded_train_step')
             for n in storage.listdir(f'{root}/jax_cache'))

  # Corruption: one byte of the newest checkpoint flipped on the bucket.
  step_dir = f'{work}/checkpoints/{STEPS}'
  assert integrity.verify(step_dir) == integrity.OK
  victim = max(storage.walk_files(step_dir),
               key=lambda f: storage.size(f[1]))[1]
  data = bytearray(storage.read_bytes(victim))
  data[len(data) // 2] ^= 0xFF
  storage.write_atomic(victim, bytes(data))
  assert 'does not match its SHA-256 checksum' in integrity.verify(step_dir)
  # eval.py (its config read from the bucket's config.json) skips it...
  (_, out, err, _), = _finish(_launch('eval.py', work, env))
  assert f'checkpoint {step_dir} is corrupt' in err, err[-2000:]
  assert json.loads(out.strip().splitlines()[-1])['step'] == 18
  # ...and train.py moves it aside and trains the last steps again.
  (_, out, err, _), = _finish(_launch('train.py', work, env, *ARGS, cache))
  assert f'moved to {work}/checkpoints_corrupt/{STEPS}-' in err, err[-2000:]
  assert f'resumed from {work}/checkpoints/18' in out
  aside, = storage.listdir(f'{work}/checkpoints_corrupt')
  assert 'does not match' in integrity.verify(
      f'{work}/checkpoints_corrupt/{aside}')
  assert integrity.verify(step_dir) == integrity.OK
  evals = [r for r in records.read_records(work, 'metrics')
           if 'eval_loss' in r]
  assert [r['step'] for r in evals] == [STEPS]
  assert abs(evals[-1]['eval_loss'] - straight_loss) < 1e-5

  # flax_attn.visualize restores from the bucket; flax_attn.plot reads it.
  pictures = tmp_path / 'pictures'
  (_, out, err, _), = _finish(_launch('flax_attn.visualize', work, env,
                                      *ARGS, cache, '--num_images=2',
                                      f'--out={pictures}'))
  assert 'wrote ' in out and os.listdir(pictures), out + err[-2000:]
  from flax_attn import plot  # pylint: disable=g-import-not-at-top
  xs, ys = plot.series(plot.read_metrics(work), 'train_loss')
  np.testing.assert_array_equal(xs, [6, 12, 18, 24])
  assert np.all(np.isfinite(ys))
  assert storage.read_bytes(plot.plot([work]))[:4] == b'\x89PNG'

  # train.py on a workdir whose lease another run holds: one line.
  held = lease_lib.acquire_workdir(work, timeout_s=LEASE_TIMEOUT_S)
  try:
    (_, _, err, _), = _finish(_launch('train.py', work, env, *ARGS, cache),
                              code=2)
  finally:
    held.release()
  assert err.strip().splitlines()[-1].startswith(
      f'error: workdir {work} is in use by another train.py (pid '
      f'{os.getpid()} on '), err[-2000:]


def _free_port():
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_on_a_bucket_stop_together_on_one_hosts_failure(
    bucket):
  root, env = bucket
  work = f'{root}/two'
  cache = f'--config.compilation_cache_dir={root}/jax_cache'

  def launch(fault_on_1=None):
    port = _free_port()
    procs = []
    for process in range(2):
      extra = dict(env, JAX_LOG_COMPILES='1')
      if process == 1 and fault_on_1:
        extra['FLAX_ATTN_INJECT_FAULT_AT_STEP'] = str(fault_on_1)
      procs.append(_launch('train.py', work, extra, *ARGS, cache,
                           multihost=(port, 2, process)))
    return procs

  # A failure on process 1 only, at step 12 (after the checkpoint at 6):
  # both stop with the same line naming process 1 and the cause.
  outputs = _finish(*launch(fault_on_1=12), code=2)
  lines = [err.strip().splitlines()[-1] for _, _, err, _ in outputs]
  assert lines[0] == lines[1], lines
  assert lines[0].startswith('error: process 1 on '), lines
  assert 'injected fault at step 12' in lines[0], lines
  assert abs(outputs[0][3] - outputs[1][3]) < 10, 'not stopped together'
  assert _committed_steps(work) == [6]
  # Started again: both resume from the bucket; the shared gs:// cache
  # serves process 1 the steps process 0 compiled and wrote there.
  outputs = _finish(*launch())
  for process, (_, out, err, _) in enumerate(outputs):
    assert f'resumed from {work}/checkpoints/6' in out + err, process
    assert ("Persistent compilation cache hit for 'jit_guarded_train_step'"
            in err), f'process {process}:\n{err[-3000:]}'
  assert [r['step'] for r in records.read_records(work, 'metrics')] == [
      6, 12, 18, 24, 24]


def test_tfds_dataset_in_a_bucket_reads_as_on_disk(gcs_emulator, tmp_path):
  """data_dir=gs://...: tfds finds the prepared dataset through etils epath
  and grain reads its array_record files through array_record's own
  Cloud Storage client; the batches equal those of the same files on disk."""
  from test_datasets import _write_mini_imagenet  # pylint: disable=g-import-not-at-top
  from flax_attn import data  # pylint: disable=g-import-not-at-top
  from flax_attn.data import prepare  # pylint: disable=g-import-not-at-top
  import tiny_config  # pylint: disable=g-import-not-at-top
  del gcs_emulator
  manual, local = str(tmp_path / 'manual'), str(tmp_path / 'data')
  _write_mini_imagenet(manual)
  prepare.prepare('mini_imagenet', data_dir=local, manual_dir=manual)
  remote = f'gs://{emu.BUCKET}/{uuid.uuid4().hex[:10]}/tensorflow_datasets'
  for rel, full in storage.walk_files(local):
    with open(full, 'rb') as f:
      storage.write_atomic(storage.join(remote, rel), f.read())

  def batches(data_dir):
    config = tiny_config.get_config()
    config.dataset, config.image_size, config.batch_size = (
        'mini_imagenet', 84, 8)
    config.data_dir = data_dir
    config.augment.crop_padding, config.augment.flip = 8, True
    train = next(data.create_train_iterator(config, seed=0))
    evaluation = list(data.create_eval_iterator(config, batch_size=3))
    return data.num_examples(config, 'train'), train, evaluation

  on_disk, in_bucket = batches(local), batches(remote)
  assert in_bucket[0] == on_disk[0] == 20
  chex.assert_trees_all_equal(in_bucket[1:], on_disk[1:])


def test_bucket_errors_are_named_in_one_line():
  from google.api_core import exceptions  # pylint: disable=g-import-not-at-top
  from gcsfs.retry import HttpError  # pylint: disable=g-import-not-at-top
  from flax_attn.training import disk_fault  # pylint: disable=g-import-not-at-top

  def wrapped(error):  # as orbax / TensorStore re-raise it
    try:
      try:
        raise error
      except Exception as e:  # pylint: disable=broad-except
        raise RuntimeError('save failed') from e
    except RuntimeError as outer:
      return outer

  assert disk_fault(wrapped(exceptions.Forbidden('no access'))) == (
      'permission denied by the bucket (403)')
  assert disk_fault(exceptions.TooManyRequests('slow down')) == (
      'the bucket is throttling requests (429)')
  assert disk_fault(wrapped(HttpError({'code': 503, 'message': 'x'}))) == (
      'a bucket error (503)')
  assert disk_fault(ValueError('PERMISSION_DENIED: caller does not have '
                               'storage.objects.create access')) == (
      'permission denied by the bucket (403)')
  assert disk_fault(exceptions.NotFound('no such object')) is None
  assert disk_fault(ValueError('shapes differ')) is None

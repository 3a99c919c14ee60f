"""flax_attn.storage / lease / records on a local disk and on a gs:// bucket
(a fake-gcs-server emulator on 127.0.0.1, started by the `gcs_emulator`
fixture in conftest.py)."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import chex
import jax.numpy as jnp
import numpy as np
import pytest

import gcs_emulator as emu
from flax_attn import lease as lease_lib
from flax_attn import records, storage
from flax_attn.workdir_lock import WorkdirBusyError, WorkdirLock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def bucket_dir(gcs_emulator):
  """A fresh gs:// folder per test."""
  del gcs_emulator
  return f'gs://{emu.BUCKET}/{uuid.uuid4().hex[:10]}'


@pytest.fixture(params=['local', 'bucket'])
def workdir(request, tmp_path):
  if request.param == 'local':
    return str(tmp_path / 'run')
  return request.getfixturevalue('bucket_dir')


def test_files_write_read_list_move_remove(workdir):
  storage.makedirs(workdir)
  storage.write_atomic(storage.join(workdir, 'config.json'), '{"lr": 0.1}')
  storage.write_atomic(storage.join(workdir, 'config.json'), '{"lr": 0.2}')
  step = storage.join(workdir, 'checkpoints', '100')
  storage.makedirs(storage.join(step, 'state'))
  storage.write_atomic(storage.join(step, 'state', 'a'), b'\x00\x01')
  storage.write_atomic(storage.join(step, 'meta'), b'xyz')

  assert json.loads(storage.read_text(storage.join(workdir, 'config.json'))) \
      == {'lr': 0.2}
  assert storage.listdir(workdir) == ['checkpoints', 'config.json']
  assert storage.listdir(storage.join(workdir, 'absent')) == []
  assert [rel for rel, _ in storage.walk_files(step)] == ['meta', 'state/a']
  assert storage.size(storage.join(step, 'meta')) == 3

  assert storage.write_if_absent(storage.join(workdir, 'once'), 'first')
  assert not storage.write_if_absent(storage.join(workdir, 'once'), 'second')
  assert storage.read_text(storage.join(workdir, 'once')) == 'first'

  dest = storage.join(workdir, 'checkpoints_corrupt', '100-x')
  storage.makedirs(storage.join(workdir, 'checkpoints_corrupt'))
  storage.move(step, dest)
  assert not storage.exists(step)
  assert storage.listdir(storage.join(workdir, 'checkpoints')) == []
  assert [(rel, storage.read_bytes(full)) for rel, full in
          storage.walk_files(dest)] == [('meta', b'xyz'), ('state/a', b'\x00\x01')]

  storage.remove_tree(storage.join(workdir, 'checkpoints_corrupt'))
  # (A local disk keeps the emptied folder, a bucket has no folders.)
  storage.remove_tree(storage.join(workdir, 'checkpoints'))
  storage.remove(storage.join(workdir, 'once'))
  storage.remove(storage.join(workdir, 'once'))  # absent: no error
  assert storage.listdir(workdir) == ['config.json']
  # Disk probes are meaningless on a bucket and skipped there.
  if storage.is_remote(workdir):
    assert storage.free_bytes(workdir) is None
    assert storage.is_read_only(workdir) is None
  else:
    assert storage.free_bytes(workdir) > 0
    assert storage.is_read_only(workdir) is False


def test_compare_and_swap_on_bucket(bucket_dir):
  path = storage.join(bucket_dir, 'x')
  assert storage.read_versioned(path) is None
  assert storage.write_if_absent(path, 'a')
  first = storage.read_versioned(path)
  assert first.data == b'a'
  second = storage.write_if_generation(path, 'b', first.generation)
  assert second is not None and second != first.generation
  assert storage.write_if_generation(path, 'c', first.generation) is None
  assert storage.read_text(path) == 'b'
  # (fake-gcs-server ignores preconditions on deletes, so only the
  # successful case is checked for remove_if_generation.)
  assert storage.remove_if_generation(path, second)
  assert not storage.exists(path)


def test_lease_refuses_second_run_naming_holder(bucket_dir):
  with lease_lib.acquire_workdir(bucket_dir) as held:
    with pytest.raises(WorkdirBusyError) as error:
      lease_lib.acquire_workdir(bucket_dir)
    message = str(error.value)
    assert '\n' not in message
    assert f'pid {os.getpid()} on ' in message and bucket_dir in message
    held.check()  # still ours
  # Released on exit: the next run gets it at once.
  lease_lib.acquire_workdir(bucket_dir).release()


def test_lease_of_killed_run_expires_and_restart_takes_over(bucket_dir):
  timeout_s = 4.0
  child = subprocess.Popen(
      [sys.executable, '-c',
       'import sys, time; from flax_attn import lease; '
       f'lease.acquire_workdir({bucket_dir!r}, timeout_s={timeout_s}); '
       'print("held", flush=True); time.sleep(60)'],
      cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE,
      text=True)
  try:
    assert child.stdout.readline().strip() == 'held'
    with pytest.raises(WorkdirBusyError, match=f'pid {child.pid} on '):
      lease_lib.acquire_workdir(bucket_dir, timeout_s=timeout_s)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    killed_at = time.time()
    while True:  # refused until the lease is older than its timeout
      try:
        restart = lease_lib.acquire_workdir(bucket_dir, timeout_s=timeout_s)
        break
      except WorkdirBusyError:
        assert time.time() - killed_at < timeout_s + 10
        time.sleep(0.5)
    holder = json.loads(storage.read_text(
        storage.join(bucket_dir, lease_lib.LEASE_NAME)))
    assert holder['pid'] == os.getpid()
    restart.release()
  finally:
    if child.poll() is None:
      child.kill()
      child.wait(timeout=10)


def test_racing_takeovers_exactly_one_wins(bucket_dir):
  stale = lease_lib.WorkdirLease(bucket_dir, timeout_s=1.0,
                                 renew_every_s=3600).acquire()
  time.sleep(1.5)  # expired: nobody renewed it
  barrier = threading.Barrier(4)
  outcomes = []

  def restart():
    contender = lease_lib.WorkdirLease(bucket_dir, timeout_s=30.0)
    barrier.wait(timeout=30)
    try:
      contender.acquire()
      outcomes.append(contender)
    except WorkdirBusyError as e:
      outcomes.append(str(e))

  threads = [threading.Thread(target=restart) for _ in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=60)
  winners = [o for o in outcomes if isinstance(o, lease_lib.WorkdirLease)]
  losers = [o for o in outcomes if isinstance(o, str)]
  assert len(winners) == 1 and len(losers) == 3
  assert all('is in use by another train.py' in m for m in losers)
  # The stale holder finds out at its next renewal and stops.
  assert not stale.renew()
  with pytest.raises(lease_lib.LeaseLostError, match='taken over by pid'):
    stale.check()
  stale.release()  # does not delete the winner's lease
  assert storage.read_versioned(winners[0].path).generation == \
      winners[0].generation
  assert winners[0].renew()
  winners[0].release()
  assert json.loads(storage.read_text(winners[0].path))['released'] is True
  lease_lib.acquire_workdir(bucket_dir, timeout_s=30.0).release()


def test_lease_renewal_keeps_it(bucket_dir):
  held = lease_lib.WorkdirLease(bucket_dir, timeout_s=1.5,
                                renew_every_s=0.3).acquire()
  try:
    first = held.generation
    time.sleep(2.0)  # past the timeout, but renewed meanwhile
    assert held.generation != first
    with pytest.raises(WorkdirBusyError):
      lease_lib.acquire_workdir(bucket_dir, timeout_s=1.5)
    held.check()
  finally:
    held.release()


def test_local_workdir_keeps_flock(tmp_path):
  held = lease_lib.acquire_workdir(str(tmp_path))
  try:
    assert isinstance(held, WorkdirLock)
    with pytest.raises(WorkdirBusyError, match=f'pid {os.getpid()}'):
      lease_lib.acquire_workdir(str(tmp_path))
  finally:
    held.release()


def test_records_kill_and_resume_lose_and_duplicate_nothing(workdir):
  first = records.RecordWriter(workdir, 'metrics', resume_step=0)
  for step in (1, 2, 3, 4, 5):
    first.write({'step': step, 'train_loss': 10.0 - step})
  first.write({'step': 4, 'top1': 0.25})  # an evaluation row at step 4
  # Killed here (no close); the last checkpoint was at step 3: the restart
  # logs steps 4 and 5 again, with other values, then goes on.
  resumed = records.RecordWriter(workdir, 'metrics', resume_step=3)
  for step in (4, 5, 6):
    resumed.write({'step': step, 'train_loss': 100.0 + step})
  resumed.close()
  rows = records.read_records(workdir, 'metrics')
  if storage.is_remote(workdir):
    assert [(r['step'], r.get('train_loss')) for r in rows] == [
        (1, 9.0), (2, 8.0), (3, 7.0), (4, 104.0), (5, 105.0), (6, 106.0)]
  else:  # the single file keeps both; plot's series() keeps the last value
    from flax_attn import plot  # pylint: disable=g-import-not-at-top
    xs, ys = plot.series(rows, 'train_loss')
    chex.assert_trees_all_close(xs, np.array([1., 2., 3., 4., 5., 6.]))
    chex.assert_trees_all_close(ys, np.array([9., 8., 7., 104., 105., 106.]))


def test_records_append_mode_and_both_layouts(workdir, tmp_path):
  evals = records.RecordWriter(workdir, 'evals', flush_every_s=3600)
  evals.write({'step': 10, 'top1': 0.5})
  evals.write({'step': 5, 'top1': 0.4})  # eval.py of an older checkpoint
  evals.close()  # buffered on a bucket until close
  later = records.RecordWriter(workdir, 'evals')
  later.write({'step': 10, 'top1': 0.5})
  later.close()
  assert [(r['step'], r['top1']) for r in records.read_records(
      workdir, 'evals')] == [(10, .5), (5, .4), (10, .5)]
  assert records.exists(workdir, 'evals')
  assert not records.exists(workdir, 'metrics')
  # The single file of an older run is read first, then bucket-style objects.
  legacy = str(tmp_path / 'legacy')
  os.makedirs(os.path.join(legacy, 'metrics'))
  with open(os.path.join(legacy, 'metrics.jsonl'), 'w') as f:
    f.write('{"step": 1, "lr": 0.1}\n{"step": 2, "lr": 0.2}\n')
  with open(os.path.join(legacy, 'metrics',
                         f'{1:020d}-000000-resume1.jsonl'), 'w') as f:
    f.write('{"step": 2, "lr": 0.3}\n')
  assert [(r['step'], r['lr']) for r in records.read_records(
      legacy, 'metrics')] == [(1, .1), (2, .3)]


_ORBAX_ROUNDTRIP = """
import sys
import chex, jax.numpy as jnp, orbax.checkpoint as ocp
from flax_attn import storage
directory = storage.join(sys.argv[1], 'checkpoints')
tree = {'w': jnp.arange(12.0).reshape(3, 4), 'b': jnp.arange(5)}
with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
    max_to_keep=1)) as manager:
  for step in (1, 2):
    manager.save(step, args=ocp.args.StandardSave(
        {'w': tree['w'] * step, 'b': tree['b'] + step}))
  manager.wait_until_finished()
assert storage.listdir(directory) == ['2']  # rotation removed step 1
# Array data went through TensorStore's gcs kvstore to the emulator.
files = [rel for rel, _ in storage.walk_files(storage.join(directory, '2'))]
assert 'commit_success.txt' in files, files
with ocp.CheckpointManager(directory) as manager:
  restored = manager.restore(manager.latest_step(),
                             args=ocp.args.StandardRestore(tree))
chex.assert_trees_all_close(restored, {'w': tree['w'] * 2,
                                       'b': tree['b'] + 2})
print('roundtrip ok')
"""


def test_orbax_roundtrip_on_bucket(bucket_dir):
  """orbax saves, rotates and restores on the bucket (in a fresh process
  under a timeout: TensorStore reads its GCS endpoint once per process, and
  a hang must fail rather than stall the suite)."""
  proc = subprocess.run([sys.executable, '-c', _ORBAX_ROUNDTRIP, bucket_dir],
                        capture_output=True, text=True, timeout=180,
                        cwd=os.path.dirname(os.path.dirname(
                            os.path.abspath(__file__))),
                        env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert proc.returncode == 0 and 'roundtrip ok' in proc.stdout, (
      proc.stdout + proc.stderr[-3000:])


def test_tensorboard_events_on_bucket(bucket_dir):
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  from flax_attn import tb_events  # pylint: disable=g-import-not-at-top
  logdir = storage.join(bucket_dir, 'tensorboard')
  writer = tb_events.EventWriter(logdir)
  writer.write(1, {'train_loss': 2.5})
  writer.write(2, {'train_loss': 1.5, 'top1': 0.25})
  writer.close()
  names = storage.listdir(logdir)
  assert len(names) == 2 and names == sorted(names)
  got = []
  for name in names:
    data, pos, events = storage.read_bytes(storage.join(logdir, name)), 0, []
    while pos < len(data):  # TFRecord frames (CRCs: test_tb_events.py)
      (length,) = np.frombuffer(data[pos:pos + 8], '<u8')
      events.append(event_pb2.Event.FromString(
          data[pos + 12:pos + 12 + int(length)]))
      pos += 16 + int(length)
    assert events[0].file_version == 'brain.Event:2'
    got += [(e.step, {v.tag: v.simple_value for v in e.summary.value})
            for e in events[1:]]
  assert got == [(1, {'train_loss': 2.5}),
                 (2, {'train_loss': 1.5, 'top1': 0.25})]


def test_plot_reads_and_writes_bucket_workdir(bucket_dir):
  from flax_attn import plot  # pylint: disable=g-import-not-at-top
  with pytest.raises(Exception, match='does not exist; train first'):
    plot.read_metrics(bucket_dir)
  writer = records.RecordWriter(bucket_dir, 'metrics', resume_step=0)
  for step in (1, 2, 3):
    writer.write({'step': step, 'train_loss': 1.0 / step, 'lr': 0.1})
  writer.close()
  xs, ys = plot.series(plot.read_metrics(bucket_dir), 'train_loss')
  chex.assert_trees_all_close(ys, 1.0 / xs)
  out = plot.plot([bucket_dir])
  assert out == storage.join(bucket_dir, 'curves.png')
  assert storage.read_bytes(out)[:8] == b'\x89PNG\r\n\x1a\n'

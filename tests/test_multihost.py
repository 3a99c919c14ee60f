"""Two JAX processes on 127.0.0.1 (Gloo collectives) train like one.

The multi-process runs are train.py subprocesses, each with one XLA:CPU
device and a timeout (a hang fails the test, the process group is killed);
the one-process reference and the evaluation of the two-process checkpoint
run in this process on one of conftest's devices.
"""
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import tiny_config as tiny_config_file
from flax_attn import distributed, train
from flax_attn.errors import ConfigError
from helpers import kill_process_groups

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Each child: one CPU device (not conftest's 8) and the suite's fast compile.
CHILD_XLA_FLAGS = ('--xla_force_host_platform_device_count=1 '
                   '--xla_llvm_disable_expensive_passes=true '
                   '--xla_backend_optimization_level=1')
STEPS = 24
OVERRIDES = {'num_train_steps': STEPS, 'eval_every_steps': STEPS,
             'checkpoint_every_steps': 12, 'cpu_devices': 0}
TIMEOUT_S = 420  # one launch on a busy 2-core machine


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _child_env(**extra):
  env = {**os.environ, 'XLA_FLAGS': CHILD_XLA_FLAGS, 'JAX_PLATFORMS': 'cpu',
         'FLAX_ATTN_HUGEPAGES': '0', **extra}
  return env


def _launch(workdir, cache_dir, count=2, script='train.py', env=None):
  """`count` processes of `script` joined by a coordinator on a free port;
  `cache_dir` may be a list, one per process."""
  port = _free_port()
  procs = []
  if not isinstance(cache_dir, list):
    cache_dir = [cache_dir] * count
  for process in range(count):
    cmd = [sys.executable, os.path.join(REPO, script), '--config',
           os.path.join(REPO, 'tests', 'tiny_config.py'), '--workdir',
           str(workdir), f'--config.compilation_cache_dir={cache_dir[process]}',
           *[f'--config.{k}={v}' for k, v in OVERRIDES.items()]]
    if count > 1:
      cmd += ['--multihost', f'--coordinator_address=127.0.0.1:{port}',
              f'--num_processes={count}', f'--process_id={process}',
              '--coordinator_timeout=120']
    procs.append(subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=_child_env(**(env or {})), start_new_session=True))
  return procs


def _kill(procs):
  kill_process_groups(procs)


def _finish(procs, timeout=TIMEOUT_S):
  """Waits for every process; kills them all on a timeout or a failure."""
  deadline = time.time() + timeout
  outputs = []
  try:
    for proc in procs:
      out, err = proc.communicate(timeout=max(1.0, deadline - time.time()))
      outputs.append((proc.returncode, out, err))
  except subprocess.TimeoutExpired:
    _kill(procs)
    raise AssertionError(f'{len(procs)} processes still running after '
                         f'{timeout} s')
  for rc, out, err in outputs:
    if rc != 0:
      _kill(procs)
      raise AssertionError(f'exit code {rc}:\n{out[-2000:]}\n{err[-3000:]}')
  return outputs


def _wait_for_checkpoint(workdir, procs, timeout=TIMEOUT_S):
  """Until a finished checkpoint step directory appears under workdir."""
  ckpt = os.path.join(workdir, 'checkpoints')
  deadline = time.time() + timeout
  while time.time() < deadline:
    if os.path.isdir(ckpt) and any(d.isdigit() for d in os.listdir(ckpt)):
      return
    for proc in procs:
      if proc.poll() is not None:
        _kill(procs)
        raise AssertionError(f'a process ended before the first checkpoint: '
                             f'{proc.returncode} {proc.communicate()}')
    time.sleep(0.05)
  _kill(procs)
  raise AssertionError('no checkpoint appeared')


def _final_eval_loss(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  evals = [r for r in rows if 'eval_loss' in r]
  assert evals[-1]['step'] == STEPS, evals
  return evals[-1]['eval_loss']


def _one_process_config():
  config = tiny_config_file.get_config()
  for key, value in OVERRIDES.items():
    config[key] = value
  config.num_devices = 1
  return config


def test_two_processes_match_one_resume_after_kill_and_evaluate_in_one(
    tmp_path):
  cache = tmp_path / 'jax_cache'
  # (a) Two processes (cold cache) vs one process, same config and data.
  two = tmp_path / 'two'
  procs = _launch(two, cache)
  try:
    one = train.train_and_evaluate(_one_process_config(),
                                   str(tmp_path / 'one'))
  except BaseException:
    _kill(procs)
    raise
  outputs = _finish(procs)
  assert 'training on 2 cpu device(s), 16 images each' in outputs[0][1]
  two_loss = _final_eval_loss(two)
  rel = abs(two_loss - one['eval_loss']) / one['eval_loss']
  assert rel < 1e-3, (two_loss, one['eval_loss'])
  assert any(n.startswith('jit_guarded_train_step') for n in os.listdir(cache))

  # (b) kill -9 both after the first checkpoint, restart: the warm cache
  # serves every process (the same key in each), the run ends as (a).
  killed = tmp_path / 'killed'
  log_hits = {'JAX_LOG_COMPILES': '1'}
  procs = _launch(killed, cache, env=log_hits)
  _wait_for_checkpoint(killed, procs)
  _kill(procs)
  assert not os.path.exists(killed / 'checkpoints' / str(STEPS))
  outputs = _finish(_launch(killed, cache, env=log_hits))
  for process, (_, out, err) in enumerate(outputs):
    assert 'resumed from' in out + err, process
    assert "Persistent compilation cache hit for 'jit_guarded_train_step'" in err, (
        f'process {process} missed the warm cache:\n{err[-3000:]}')
  assert abs(_final_eval_loss(killed) - two_loss) <= 1e-6 * two_loss, (
      _final_eval_loss(killed), two_loss)

  # (c) The two-process checkpoint evaluates in one process, and the
  # one-process checkpoint in two (each example once, padding masked).
  evaluated = train.evaluate(_one_process_config(), str(two))
  assert evaluated['step'] == STEPS and evaluated['num_examples'] == 300
  assert abs(evaluated['loss'] - two_loss) <= 1e-5 * two_loss, (
      evaluated['loss'], two_loss)
  # Process 1 given a cache directory of its own: it could never read
  # process 0's entries, so the cache is switched off on both, with a line.
  outputs = _finish(_launch(tmp_path / 'one', [cache, tmp_path / 'private'],
                            script='eval.py'))
  assert ('compilation cache off: process 1 cannot see '
          f'{cache}') in outputs[0][2], outputs[0][2][-2000:]
  by_two = json.loads(outputs[0][1].strip().splitlines()[-1])
  assert by_two['step'] == STEPS and by_two['num_examples'] == 300, by_two
  assert abs(by_two['loss'] - one['eval_loss']) <= 1e-5 * one['eval_loss'], (
      by_two, one)


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_processes=1, process_id=0), '--num_processes=1 with'),
    (dict(num_processes=2, process_id=2), '--process_id=2 is out of range'),
    (dict(num_processes=2, process_id=-1), '--process_id=-1 is out of range'),
    (dict(coordinator_address='host-without-port'), "'host-without-port' is "
     'not HOST:PORT'),
    (dict(coordinator_address='h:99999'), "'h:99999' is not HOST:PORT"),
    (dict(timeout_s=0), '--coordinator_timeout=0'),
])
def test_multihost_misuse_is_named(kwargs, message):
  args = dict(coordinator_address='127.0.0.1:1234', num_processes=2,
              process_id=0, timeout_s=10)
  args.update(kwargs)
  with pytest.raises(ConfigError, match=message):
    distributed.check_arguments(**args)


def test_unreachable_coordinator_fails_with_one_line_in_time(tmp_path):
  port = _free_port()  # nothing listens there
  cmd = [sys.executable, os.path.join(REPO, 'train.py'), '--config',
         os.path.join(REPO, 'tests', 'tiny_config.py'), '--workdir',
         str(tmp_path), '--multihost', f'--coordinator_address=127.0.0.1:{port}',
         '--num_processes=2', '--process_id=1', '--coordinator_timeout=3']
  # The child stamps the moment its set-up starts waiting (as close to the
  # watchdog's start as the command line allows), so the wait is measured
  # without the imports' time.
  stamp = tmp_path / 'started'
  script = textwrap.dedent(f'''
      import runpy, sys, time
      sys.path.insert(0, {REPO!r})
      from flax_attn import distributed
      initialize = distributed.initialize
      def stamped(*args, **kwargs):
        open({str(stamp)!r}, 'w').write(repr(time.time()))
        return initialize(*args, **kwargs)
      distributed.initialize = stamped
      sys.argv = cmd = sys.argv[1:]
      runpy.run_path(cmd[0], run_name='__main__')
      ''')
  cmd = [sys.executable, '-c', script] + cmd[1:]
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True,
                          env={**_child_env(), 'FLAX_ATTN_HUGEPAGES': '0'},
                          start_new_session=True)
  try:
    _, err = proc.communicate(timeout=180)
  except subprocess.TimeoutExpired:
    _kill([proc])
    raise
  waited = time.time() - float(stamp.read_text())
  # The watchdog's 3 s, not JAX's own deadline (timeout + 30 s) or at once.
  assert 3.0 <= waited < 3.0 + 10, waited
  assert proc.returncode == 2, err
  lines = [line for line in err.splitlines() if line.strip()]
  assert len(lines) == 1, err
  assert lines[0].startswith('error: no coordinator (process 0) answered at '
                             f'--coordinator_address=127.0.0.1:{port}'), err
  assert '--coordinator_timeout=3 s' in lines[0]

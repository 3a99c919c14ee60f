"""Fault injection: nothing a hostile user or a bad machine does loses a
checkpoint or prints a traceback (issue 19).

Divergence, corrupted / truncated / missing checkpoint files (a seeded
randomized campaign), two runs on one workdir, SIGINT, kill -9 at random
moments of saves, a full disk, a read-only workdir, and the one-line errors
of the command-line tools.
"""
import io
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import redirect_stderr

import chex
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import tiny_config as tiny_config_file
from flax_attn import cli, integrity, train
from flax_attn.errors import (CheckpointError, DivergenceError,
                              WorkdirWriteError)
from flax_attn.workdir_lock import WorkdirBusyError, WorkdirLock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One CPU device and the fast-compile flags for every child process.
CHILD_ENV = {'XLA_FLAGS': '--xla_force_host_platform_device_count=1 '
                          '--xla_llvm_disable_expensive_passes=true',
             'FLAX_ATTN_HUGEPAGES': '0'}
CORRUPTIONS = 24  # the randomized campaign's size (issue 19 asks >= 20)


def tiny_config(**overrides):
  config = tiny_config_file.get_config()
  config.num_train_steps = 12
  config.lr_schedule = 'constant'
  config.log_every_steps = 3
  config.eval_every_steps = 6
  config.checkpoint_every_steps = 6
  config.num_devices = 1
  for key, value in overrides.items():
    config[key] = value
  return config


def one_line_error(fn, code=2):
  """Runs fn under cli.run_main; returns its one error line (one-line
  warnings may come before it, nothing else)."""
  stderr = io.StringIO()
  with redirect_stderr(stderr):
    got = cli.run_main(fn)
  lines = stderr.getvalue().strip().splitlines()
  assert got == code and lines, (got, stderr.getvalue())
  assert all(l.startswith('warning: ') for l in lines[:-1]), lines
  return lines[-1]


def steps_in(workdir):
  ckpt = os.path.join(workdir, 'checkpoints')
  return sorted(int(d) for d in os.listdir(ckpt) if d.isdigit())


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A tiny run with checkpoints at steps 6 and 12 (read-only for tests:
  copy it before changing anything)."""
  workdir = str(tmp_path_factory.mktemp('trained'))
  result = train.train_and_evaluate(tiny_config(), workdir)
  return workdir, result


def copy_of(trained, tmp_path):
  dest = str(tmp_path / 'work')
  shutil.copytree(trained[0], dest)
  return dest


# ---------------------------------------------------------------------------
# Divergence
# ---------------------------------------------------------------------------


def _feed(losses, factor, grad_norms=None, floor=0.0):
  guard = train.init_guard()
  update = jax.jit(train.update_guard, static_argnums=(3, 4))
  for i, loss in enumerate(losses):
    metrics = {'train_loss': jnp.float32(loss), 'grad_norm': jnp.float32(
        1.0 if grad_norms is None else grad_norms[i])}
    guard = update(guard, jnp.int32(i + 1), metrics, factor, floor)
  return jax.device_get(guard)


@pytest.mark.parametrize('bad', [np.nan, np.inf, 1e27])
def test_guard_flags_the_step_where_the_loss_diverges(bad):
  losses = list(np.linspace(2.3, 1.5, 20)) + [bad, 1.0, np.nan]
  guard = _feed(losses, 10.0)
  assert guard['bad_step'] == 21  # the step, not a later logging step
  if np.isfinite(bad):
    np.testing.assert_allclose(guard['bad_loss'], 1e27, rtol=1e-6)
    np.testing.assert_allclose(guard['median'], np.median(losses[-32:20]),
                               rtol=1e-6)
  else:
    assert not np.isfinite(guard['bad_loss'])


def test_guard_factor_zero_flags_only_non_finite_and_bad_gradients():
  assert _feed([2.0] * 10 + [1e27], 0.0)['bad_step'] == -1
  assert _feed([2.0] * 10 + [1e27], 10.0)['bad_step'] == 11
  # Warm-up: fewer than GUARD_WARMUP losses seen, no median to compare with.
  assert _feed([2.0] * 3 + [1e27], 10.0)['bad_step'] == -1
  grads = [1.0] * 5 + [np.inf]
  assert _feed([2.0] * 6, 10.0, grads)['bad_step'] == 6
  # Within bounds: a loss that rises 5x is training, not divergence.
  assert _feed([1.0] * 10 + [5.0], 10.0)['bad_step'] == -1
  # Near zero (a trained quick-start: median 0.006), a noisy batch of 0.08
  # is 13x the median but far below chance level (ln 10): not flagged.
  chance = np.log(10)
  settled = [0.006] * 20
  assert _feed(settled + [0.08], 10.0, floor=chance)['bad_step'] == -1
  guard = _feed(settled + [50.0], 10.0, floor=chance)
  assert guard['bad_step'] == 21
  np.testing.assert_allclose(guard['median'], chance, rtol=1e-6)


def test_divergent_resume_stops_at_once_and_keeps_every_good_checkpoint(
    trained, tmp_path):
  workdir = copy_of(trained, tmp_path)
  before = {s: integrity.checksums(os.path.join(workdir, 'checkpoints',
                                                 str(s)))
            for s in steps_in(workdir)}
  config = tiny_config(num_train_steps=30, learning_rate=1e6,
                       log_every_steps=100, eval_every_steps=100,
                       checkpoint_every_steps=1)
  line = one_line_error(lambda: train.train_and_evaluate(config, workdir),
                        code=3)
  # Step 13 trains from step 12's sane weights at lr 1e6; its loss is fine,
  # and its checkpoint (still being written when step 14 was flagged) is
  # finished, checksums and all.
  assert line.startswith('error: training diverged at step 14: train loss ')
  assert 'the last checkpoint, step 13, is intact' in line
  assert steps_in(workdir) == [6, 12, 13]
  assert integrity.verify(os.path.join(workdir, 'checkpoints', '13')) == 'ok'
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '13'))
  # Nothing after step 13 was written, nothing was rotated out or changed.
  for s, sums in before.items():
    assert integrity.checksums(os.path.join(workdir, 'checkpoints',
                                            str(s))) == sums
  # Resuming at a sane learning rate continues from the intact step 12.
  result = train.train_and_evaluate(tiny_config(num_train_steps=18), workdir)
  assert result['step'] == 18 and np.isfinite(result['eval_loss'])


def _with_first_leaf(tree, value):
  """`tree` with one element of its first array set to `value`."""
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  leaves[0] = leaves[0].at[(0,) * leaves[0].ndim].set(value)
  return jax.tree_util.tree_unflatten(treedef, leaves)


def test_a_non_finite_state_is_never_written(trained, tmp_path):
  """The writer itself refuses (whatever called it): a NaN weight or an
  infinite BatchNorm statistic raises, and no checkpoint appears or
  changes; the same writer then saves a finite state."""
  workdir = copy_of(trained, tmp_path)
  before = {s: integrity.checksums(os.path.join(workdir, 'checkpoints',
                                                 str(s)))
            for s in steps_in(workdir)}
  manager = train.create_checkpoint_manager(workdir, tiny_config())
  writer = train.CheckpointWriter(manager, workdir, tiny_config(), True)
  exp = train.build_experiment(tiny_config())
  state, _, _ = train.restore_intact(manager, workdir, exp.state,
                                     'cifar_resnet8', set_aside=False)
  state = state.replace(step=jnp.int32(13))
  bad_states = (
      state.replace(params=_with_first_leaf(state.params, np.nan)),
      state.replace(batch_stats=_with_first_leaf(state.batch_stats, np.inf)))
  for bad in bad_states:
    with pytest.raises(DivergenceError, match=r'^the train state at step 13 '
                       'is not finite; it was not saved and the last '
                       'checkpoint, step 12, is intact'):
      writer.save(bad, {'json': 0}, tiny_config())
    writer.finish()
    assert steps_in(workdir) == [6, 12]
  for s, sums in before.items():
    assert integrity.checksums(os.path.join(workdir, 'checkpoints',
                                            str(s))) == sums
  writer.save(state, {'json': 0}, tiny_config())
  writer.finish()
  assert steps_in(workdir) == [6, 12, 13]
  assert integrity.verify(os.path.join(workdir, 'checkpoints', '13')) == (
      integrity.OK)
  manager.close()


def test_last_good_checkpoint_survives_rotation(trained, tmp_path):
  workdir = copy_of(trained, tmp_path)
  manager = train.create_checkpoint_manager(workdir, tiny_config())
  writer = train.CheckpointWriter(manager, workdir,
                                  tiny_config(keep_checkpoints=1), True)
  assert writer._good['step'] == 12  # pylint: disable=protected-access
  # Evaluations that blow up (finite, but 10x the best) mark later
  # checkpoints unhealthy: they rotate, step 12 stays protected.
  exp = train.build_experiment(tiny_config())
  state, _, _ = train.restore_intact(manager, workdir, exp.state,
                                     'cifar_resnet8', set_aside=False)
  for step in (13, 14, 15):
    writer.note_eval(step, {'eval_loss': 1e3})
    writer.save(state.replace(step=jnp.int32(step)), {'json': 0},
                tiny_config())
  writer.finish()
  assert steps_in(workdir) == [12, 15]
  # A restart remembers the bad evaluation: its first save (before any
  # evaluation of its own) is not "good" either.
  writer = train.CheckpointWriter(manager, workdir,
                                  tiny_config(keep_checkpoints=1), True)
  writer.save(state.replace(step=jnp.int32(17)), {'json': 0}, tiny_config())
  writer.finish()
  assert steps_in(workdir) == [12, 17]
  writer.note_eval(16, {'eval_loss': 1.0})
  writer.save(state.replace(step=jnp.int32(18)), {'json': 0}, tiny_config())
  writer.finish()
  assert steps_in(workdir) == [18]
  manager.close()


# ---------------------------------------------------------------------------
# Integrity
# ---------------------------------------------------------------------------


def _corrupt(rng, step_dir):
  """One random corruption of a random file; returns what was done."""
  files = sorted(rel for rel, _ in integrity._files(step_dir))  # pylint: disable=protected-access
  rel = rng.choice(files)
  path = os.path.join(step_dir, rel)
  size = os.path.getsize(path)
  kind = rng.choice(['flip', 'flip', 'flip', 'truncate', 'delete', 'append'])
  if kind == 'flip' and size:
    with open(path, 'r+b') as f:
      for _ in range(rng.randint(1, 8)):
        offset = rng.randrange(size)
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ rng.randint(1, 255)]))
  elif kind == 'truncate' and size:
    with open(path, 'r+b') as f:
      f.truncate(rng.randrange(size))
  elif kind == 'append':
    with open(path, 'ab') as f:
      f.write(os.urandom(rng.randint(1, 4096)))
  else:
    kind = 'delete'
    os.remove(path)
  return f'{kind} {rel}'


def test_randomized_corruption_is_always_detected(trained, tmp_path):
  rng = random.Random(19)
  source = os.path.join(trained[0], 'checkpoints', '12')
  assert integrity.verify(source) == integrity.OK
  detected = []
  for trial in range(CORRUPTIONS):
    step_dir = str(tmp_path / f'trial{trial}')
    shutil.copytree(source, step_dir)
    what = _corrupt(rng, step_dir)
    status = integrity.verify(step_dir)
    assert status not in (integrity.OK, integrity.UNVERIFIED), what
    detected.append((what, status))
    shutil.rmtree(step_dir)
  assert len(detected) == CORRUPTIONS
  # The seed's draws cover every kind of damage.
  assert {what.split()[0] for what, _ in detected} == {
      'flip', 'truncate', 'delete', 'append'}, detected
  # The manifest itself: a changed or cut one is detected; a deleted one
  # leaves the checkpoint 'unverified' (restored with a warning, as one
  # written before checksums existed or killed before writing them).
  manifest_cases = {}
  for case in ('flip', 'truncate', 'delete'):
    step_dir = str(tmp_path / f'manifest_{case}')
    shutil.copytree(source, step_dir)
    path = os.path.join(step_dir, integrity.MANIFEST)
    data = open(path, 'rb').read()
    if case == 'flip':
      i = data.index(b'sha256') + 12
      data = data[:i] + bytes([data[i] ^ 1]) + data[i + 1:]
      open(path, 'wb').write(data)
    elif case == 'truncate':
      open(path, 'wb').write(data[:len(data) // 2])
    else:
      os.remove(path)
    manifest_cases[case] = integrity.verify(step_dir)
  assert manifest_cases['flip'].endswith('does not match its SHA-256 checksum')
  assert manifest_cases['truncate'].startswith('its checksum manifest is '
                                               'unreadable')
  assert manifest_cases['delete'] == integrity.UNVERIFIED
  print(f'{len(detected)}/{CORRUPTIONS} corruptions detected:',
        *(f'{w}: {s}' for w, s in detected), sep='\n  ')


@pytest.mark.parametrize('damage', ['truncate_array', 'flip_array',
                                    'delete_array'])
def test_train_and_eval_fall_back_from_a_bad_latest_checkpoint(
    trained, tmp_path, damage):
  """Each kind of damage to the largest array file: eval.py names it; then
  (once: the fall-backs are the same for every kind) eval.py falls back to
  step 6, and train.py moves step 12 aside and retrains it."""
  workdir = copy_of(trained, tmp_path)
  step_dir = os.path.join(workdir, 'checkpoints', '12')
  arrays = sorted(rel for rel, _ in integrity._files(step_dir)  # pylint: disable=protected-access
                  if '/d/' in rel)
  path = os.path.join(step_dir, max(arrays, key=lambda r: os.path.getsize(
      os.path.join(step_dir, r))))
  if damage == 'flip_array':
    with open(path, 'r+b') as f:
      f.seek(os.path.getsize(path) // 2)
      f.write(b'\x00\x01\x02\x03' * 1024)
  elif damage == 'truncate_array':
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 3)
  else:
    os.remove(path)
  rel = os.path.relpath(path, step_dir)
  problem = {'truncate_array': f'file {rel} has ',
             'flip_array': f'file {rel} does not match its SHA-256 checksum',
             'delete_array': f'file {rel} is missing'}[damage]
  assert integrity.verify(step_dir).startswith(problem)
  config = tiny_config()
  # eval.py: --checkpoint 12 says it is bad; without it, step 6 is used.
  line = one_line_error(lambda: train.evaluate(config, workdir, 12))
  assert line.startswith(f'error: checkpoint step 12 in {workdir}')
  assert f'is corrupt: {problem}' in line
  if damage != 'truncate_array':  # the fall-backs are the same for each
    return
  stderr = io.StringIO()
  with redirect_stderr(stderr):
    result = train.evaluate(config, workdir)
  assert result['step'] == 6
  assert f'warning: checkpoint {step_dir} is corrupt' in stderr.getvalue()
  assert os.path.isdir(step_dir)  # eval.py only reads
  # train.py: moves step 12 aside (kept) and resumes from step 6.
  stderr = io.StringIO()
  with redirect_stderr(stderr):
    result = train.train_and_evaluate(config, workdir)
  assert 'moved to' in stderr.getvalue()
  assert result['step'] == 12
  aside = os.listdir(os.path.join(workdir, 'checkpoints_corrupt'))
  assert len(aside) == 1 and aside[0].startswith('12-')
  # The retrained step 12 equals the original one: same data, same steps.
  np.testing.assert_allclose(result['eval_loss'], trained[1]['eval_loss'],
                             rtol=1e-5)


def test_no_intact_checkpoint_fails_with_one_line(trained, tmp_path):
  workdir = copy_of(trained, tmp_path)
  for step in (6, 12):
    os.remove(os.path.join(workdir, 'checkpoints', str(step), 'state',
                           '_METADATA'))
  line = one_line_error(lambda: train.evaluate(tiny_config(), workdir))
  assert line.startswith('error: no intact checkpoint in ')
  line = one_line_error(lambda: train.train_and_evaluate(tiny_config(),
                                                         workdir))
  assert 'all 2 are corrupt; they were moved to' in line
  assert len(os.listdir(os.path.join(workdir, 'checkpoints_corrupt'))) == 2


def test_checkpoints_without_manifest_restore_with_a_warning(trained,
                                                             tmp_path):
  workdir = copy_of(trained, tmp_path)
  os.remove(os.path.join(workdir, 'checkpoints', '12', integrity.MANIFEST))
  stderr = io.StringIO()
  with redirect_stderr(stderr):
    result = train.evaluate(tiny_config(), workdir)
  assert result['step'] == 12
  assert 'has no checksums' in stderr.getvalue()


# ---------------------------------------------------------------------------
# One run per workdir; surprises; eval.py's outputs
# ---------------------------------------------------------------------------


def _hold_lock(workdir):
  code = (f'import sys; sys.path.insert(0, {REPO!r}); import time\n'
          'from flax_attn.workdir_lock import WorkdirLock\n'
          f'WorkdirLock({workdir!r}).acquire(); print("locked", flush=True); '
          'time.sleep(120)')
  proc = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE,
                          text=True)
  assert proc.stdout.readline().strip() == 'locked'
  return proc


def test_second_run_on_a_busy_workdir_names_the_holder(trained, tmp_path):
  workdir = copy_of(trained, tmp_path)
  holder = _hold_lock(workdir)
  try:
    line = one_line_error(lambda: train.train_and_evaluate(tiny_config(),
                                                           workdir))
    assert f'is in use by another train.py (pid {holder.pid} on ' in line
    # eval.py may run beside training.
    assert train.evaluate(tiny_config(), workdir)['step'] == 12
  finally:
    holder.kill()  # kill -9: the kernel releases the lock
    holder.wait(timeout=30)
  WorkdirLock(workdir).acquire().release()


def test_surprises_warn_or_fail_with_one_line(trained, tmp_path, capsys):
  workdir = copy_of(trained, tmp_path)
  # Resuming with another batch size; num_train_steps below the checkpoint.
  train.train_and_evaluate(tiny_config(batch_size=16, num_train_steps=10),
                           workdir)
  err = capsys.readouterr().err
  assert ('warning: resuming step 12 with config.batch_size=16; the '
          'checkpoint was trained with 32') in err
  assert ('the checkpoint is at step 12, past config.num_train_steps=10: '
          'nothing to train, evaluating step 12') in err
  assert steps_in(workdir) == [6, 12]
  # num_train_steps=0 alone.
  config = tiny_config(num_train_steps=0, num_epochs=1)
  train.validate_config(config, 1)
  assert 'config.num_train_steps=0 means "use num_epochs"' in (
      capsys.readouterr().err)
  # A pretrained file with none of the model's arrays is an error.
  other = str(tmp_path / 'other')
  ocp.StandardCheckpointer().save(other, {'params': {'fc': {
      'kernel': np.zeros((3, 3), np.float32)}}})
  line = one_line_error(lambda: train.train_and_evaluate(
      tiny_config(num_train_steps=6, pretrained_path=other),
      str(tmp_path / 'fresh')))
  assert "matches none of the model's" in line and "file 'fc/kernel'" in line
  # keep_checkpoints must keep at least one.
  line = one_line_error(lambda: train.train_and_evaluate(
      tiny_config(keep_checkpoints=0), str(tmp_path / 'k0')))
  assert line.startswith('error: config.keep_checkpoints=0 must be a '
                         'positive integer')
  # eval.py keeps every evaluation.
  train.evaluate(tiny_config(), workdir, 6)
  train.evaluate(tiny_config(), workdir, 12)
  rows = [json.loads(l) for l in open(os.path.join(workdir, 'evals.jsonl'))]
  assert [r['step'] for r in rows] == [6, 12]
  assert json.load(open(os.path.join(workdir, 'eval.json')))['step'] == 12


# ---------------------------------------------------------------------------
# The command-line tools: signals, kills, disks, one-line errors
# ---------------------------------------------------------------------------


def _cli(script, *args, env=None):
  return subprocess.Popen([sys.executable, os.path.join(REPO, script),
                           *map(str, args)], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True,
                          env={**os.environ, **CHILD_ENV, **(env or {})},
                          start_new_session=True)


def _run(script, *args, timeout=240):
  proc = _cli(script, *args)
  try:
    out, err = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    raise
  return proc.returncode, out, err


TINY = os.path.join(REPO, 'tests', 'tiny_config.py')


@pytest.fixture(scope='module')
def cache_flag(tmp_path_factory):
  """One persistent compilation cache for this module's command-line runs
  (the same flags and program: each later start loads the compiled steps)."""
  return ('--config.compilation_cache_dir='
          f'{tmp_path_factory.mktemp("jax_cache")}')


def test_cli_inputs_fail_with_one_line(tmp_path):
  bad_syntax = tmp_path / 'bad.py'
  bad_syntax.write_text('def get_config(:\n  pass\n')
  text = tmp_path / 'weights.pth'
  text.write_text('hello\n')
  script = textwrap.dedent(f'''
      import sys, runpy, io, contextlib
      sys.path.insert(0, {REPO!r}); sys.argv = sys.argv[:1]
      from flax_attn import cli
      cli.define_flags()
      cases = [
        ['--config', {str(bad_syntax)!r}],
        ['--config', 'configs/hga_resnet101_ablation.py:bogus'],
        ['--config', 'configs/quickstart.py', '--config.attn_kwargs.foo=1'],
        ['--config', 'configs/quickstart.py', '--config.augment.fo=1'],
      ]
      for case in cases:
        err = io.StringIO()
        try:
          with contextlib.redirect_stderr(err):
            cli.parse_flags(['train.py', '--workdir', 'w'] + case)
        except SystemExit as e:
          print(e.code, err.getvalue().strip().replace(chr(10), ' | '))
      from flax_attn import report, convert
      for main, argv in ((report.main, ['nosuchmodel']),
                         (convert.main, ['--model', 'resnet18',
                                         {str(text)!r}, {str(tmp_path / 'o')!r}])):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
          code = main(argv)
        print(code, err.getvalue().strip().replace(chr(10), ' | '))
      ''')
  proc = subprocess.run([sys.executable, '-c', script], cwd=REPO,
                        capture_output=True, text=True, timeout=120)
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == 6, proc.stdout + proc.stderr
  assert all(l.startswith('2 error: ') and ' | ' not in l for l in lines), lines
  assert f'{bad_syntax}:1 does not parse: invalid syntax' in lines[0]
  assert "unknown HGA ablation 'bogus'; valid: no_mfe" in lines[1]
  assert ("unknown option 'foo' for attention 'se'; valid options: "
          'reduction') in lines[2]
  assert 'config.augment has: color_jitter, crop' in lines[3]
  assert "unknown model 'nosuchmodel'" in lines[4]
  assert 'is not a PyTorch checkpoint' in lines[5]


def test_sigint_saves_and_exits_130_and_eval_reads_the_workdir_config(
    tmp_path, cache_flag):
  work = tmp_path / 'work'
  proc = _cli('train.py', '--config', TINY, '--workdir', work, cache_flag,
              '--config.num_train_steps=100000',
              '--config.checkpoint_every_steps=1000')
  try:
    t0 = time.time()
    while time.time() - t0 < 240 and proc.poll() is None:
      if os.path.exists(work / 'metrics.jsonl'):
        break
      time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
  assert proc.returncode == 130, err
  last = err.strip().splitlines()[-1]
  assert last.startswith('SIGINT: stopped at step ') and 'Traceback' not in err
  stopped = int(last.split('stopped at step ')[1].split(',')[0])
  assert steps_in(str(work)) == [stopped] and stopped >= 20
  # eval.py without --config reads WORKDIR/config.json.
  code, out, err = _run('eval.py', '--workdir', work)
  assert code == 0, err
  assert json.loads(out.strip().splitlines()[-1])['step'] == stopped


def test_kill9_during_saves_resumes_to_the_uninterrupted_result(tmp_path,
                                                                 cache_flag):
  """kill -9 at random moments of a run that saves every step."""
  args = ['--config', TINY, '--config.num_train_steps=40',
          '--config.checkpoint_every_steps=1', '--config.keep_checkpoints=2',
          '--config.log_every_steps=10', '--config.eval_every_steps=40',
          cache_flag]
  rng = random.Random(20)
  work = tmp_path / 'killed'
  newest = lambda: max(steps_in(str(work)), default=0) if os.path.isdir(
      work / 'checkpoints') else 0
  kills = []  # (newest step before the start, newest at the kill)
  for _ in range(3):
    start = newest()
    proc = _cli('train.py', *args, '--workdir', work)
    t0 = time.time()
    # Wait for this process to save a new step (old checkpoints exist after
    # the first round), then a random moment of the saves that follow.
    while time.time() - t0 < 240 and proc.poll() is None and (
        newest() <= start):
      time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 0.3))
    if proc.poll() is None:
      at_kill = newest()
      os.killpg(proc.pid, signal.SIGKILL)
      kills.append((start, at_kill))
    proc.communicate(timeout=60)
    for step in steps_in(str(work)):
      status = integrity.verify(str(work / 'checkpoints' / str(step)))
      assert status in (integrity.OK, integrity.UNVERIFIED), (step, status)
  # Every round was killed while training, after it had saved a step of its
  # own, before the end.
  assert len(kills) == 3, kills
  assert all(start < at_kill < 40 for start, at_kill in kills), kills
  code, _, err = _run('train.py', *args, '--workdir', work)
  assert code == 0, err
  assert 'corrupt' not in err
  code, _, err = _run('train.py', *args, '--workdir', tmp_path / 'straight')
  assert code == 0, err
  rows = [json.loads(l) for l in open(work / 'metrics.jsonl')]
  a = [r for r in rows if 'eval_loss' in r][-1]
  b = [json.loads(l) for l in open(tmp_path / 'straight' / 'metrics.jsonl')
       if 'eval_loss' in l][-1]
  assert a['step'] == b['step'] == 40
  assert abs(a['eval_loss'] - b['eval_loss']) < 1e-5, (a, b)


def _in_private_mount(script, timeout=400):
  """Runs a bash script in a private mount namespace (its tmpfs mounts
  vanish with it)."""
  return subprocess.run(['unshare', '-m', 'bash', '-euc', script],
                        capture_output=True, text=True, timeout=timeout,
                        env={**os.environ, **CHILD_ENV}, cwd=REPO)


# Inside the private mount (its tmpfs vanishes with it): every entry of a
# checkpoints folder and integrity.verify's verdict on it, as JSON. Loads
# flax_attn/integrity.py by path: the standard library only, no JAX start.
VERIFY_ALL = textwrap.dedent(f'''
    import importlib.util, json, os, sys
    spec = importlib.util.spec_from_file_location(
        'integrity', {os.path.join(REPO, 'flax_attn', 'integrity.py')!r})
    integrity = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(integrity)
    folder = sys.argv[1]
    print(json.dumps({{name: integrity.verify(os.path.join(folder, name))
                      for name in sorted(os.listdir(folder))}}))
    ''')


def test_full_disk_and_read_only_workdir_fail_with_one_line(tmp_path,
                                                           cache_flag):
  disk = tmp_path / 'disk'
  disk.mkdir()
  out = tmp_path / 'out'
  out.mkdir()
  py = sys.executable
  train_cmd = (f'{py} train.py --config {TINY} --workdir {disk}/work '
               '--config.num_train_steps=60 --config.checkpoint_every_steps=6 '
               f'--config.keep_checkpoints=1 {cache_flag}')
  script = f'''
    mount -t tmpfs -o size=300k tmpfs {disk}
    set +e
    {train_cmd} > {out}/full.out 2> {out}/full.err; echo $? > {out}/full.code
    {py} -c {shlex.quote(VERIFY_ALL)} {disk}/work/checkpoints > {out}/full.ls
    mount -o remount,size=8m {disk}
    {train_cmd} > {out}/resume.out 2> {out}/resume.err
    echo $? > {out}/resume.code
    mount -o remount,ro {disk}
    {train_cmd} > {out}/ro.out 2> {out}/ro.err; echo $? > {out}/ro.code
    '''
  proc = _in_private_mount(script)
  assert proc.returncode == 0, proc.stderr
  read = lambda name: (out / name).read_text().strip()
  assert read('full.code') == '2', read('full.err')
  err = read('full.err').splitlines()
  assert len(err) == 1 and err[0].startswith('error: cannot write '), err
  assert 'the disk is full' in err[0] and str(disk) in err[0]
  # The partial checkpoint is gone: what is left are finished checkpoints,
  # each intact (its files match the checksums written when it finished).
  left = json.loads(read('full.ls'))
  assert left and all(status == integrity.OK for status in left.values()), (
      left)
  assert all(name.isdigit() for name in left), left
  assert read('resume.code') == '0', read('resume.err')
  assert f'resumed from {disk}/work/checkpoints/' in read('resume.out')
  assert read('ro.code') == '2'
  assert read('ro.err') == (f'error: cannot write to workdir {disk}/work: the '
                            'file system is read-only')

"""flax_attn.tables: the papers' tables as data, their runner and report.

The end-to-end test runs a whole table in SMOKE mode through the CLI
(subprocesses under timeouts): one row is killed with SIGKILL after it wrote
a checkpoint, the rerun skips the finished row, resumes the killed one from
that checkpoint and finishes the rest, and the report has every row.
"""
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import FAST_COMPILE
from flax_attn import tables
from flax_attn.errors import ConfigError
from flax_attn.models import list_models
from flax_attn.tables import compare, docstrings, runner
from flax_attn.tables.spec import Row, Table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, 'configs')
# Not experiments of a paper: the base every config derives from, and the
# offline quick start on the embedded digits.
NOT_PAPER_CONFIGS = {'default', 'quickstart'}


def test_every_paper_config_is_run_by_a_table_row():
  files = {os.path.basename(p)[:-3]
           for p in glob.glob(os.path.join(CONFIGS, '*.py'))} - {'__init__'}
  used = {r.config_module for t in tables.TABLES.values() for r in t.rows}
  assert files - NOT_PAPER_CONFIGS - used == set()
  assert used <= files  # no row names a config that does not exist


def test_config_docstrings_carry_the_table_figures():
  # The one source is papers.py; each config's docstring block is generated
  # from it, and must be current (python -m flax_attn.tables docstrings).
  assert docstrings.stale_configs(CONFIGS, tables.TABLES.values()) == {}
  source = open(os.path.join(CONFIGS, 'hga_resnet50.py')).read()
  block = docstrings.split_docstring(source)[1]
  assert 'hga_resnet50 err 22.48% top-5 err 6.22% 26.73M 4.38G' in block
  # Every figure of every row is in its config's docstring.
  for table in tables.TABLES.values():
    for row in table.rows:
      with open(os.path.join(CONFIGS, f'{row.config_module}.py')) as f:
        block = docstrings.split_docstring(f.read())[1]
      assert f'{table.name} ({table.source})' in block
      assert docstrings._row_text(row) in block.replace('\n    ', '; ')  # pylint: disable=protected-access


def test_a_changed_figure_makes_the_docstring_stale():
  table = tables.TABLES['mlan_table5']
  changed = table.rows[0].__class__(**{**table.rows[0].__dict__,
                                       'top1': 90.24})
  edited = Table(**{**table.__dict__, 'rows': (changed,) + table.rows[1:]})
  others = [t for t in tables.TABLES.values() if t.name != 'mlan_table5']
  stale = docstrings.stale_configs(CONFIGS, others + [edited])
  assert 'mlan_resnet20_cifar10' in stale
  assert 'fusion_plus_r20 90.24% 0.1M' in stale['mlan_resnet20_cifar10']


def test_every_row_builds_its_config_and_smoke_config():
  models = set(list_models())
  names = set()
  for table in tables.TABLES.values():
    assert table.name not in names
    names.add(table.name)
    assert len({r.name for r in table.rows}) == len(table.rows)
    for row in table.rows:
      assert row.figures(), (table.name, row.name)
      config = runner.row_config(row)
      assert config.model in models
      smoke = runner.row_config(row, runner.RunSpec(smoke=True))
      assert (smoke.dataset, smoke.num_train_steps) == ('digits', 6)
      assert smoke.model == config.model


def test_rows_carry_the_papers_figures():
  t5 = tables.get_table('mlan_table5')
  assert [(r.name, r.top1, r.params_m) for r in t5.rows] == [
      ('fusion_plus_r20', 90.23, 0.10), ('fusion_concat_r20', 91.00, 0.21),
      ('fusion_conv1x1_r20', 90.72, 0.11),
      ('fusion_weighted_plus_r20', 90.11, 0.10)]
  hga = tables.get_table('hga_table2').row('hga_resnet50')
  assert (hga.top1_err, hga.top5_err, hga.gmacs, hga.params_m) == (
      22.48, 6.22, 4.38, 26.73)
  assert hga.published_top1() == pytest.approx(77.52)
  # The configs a notebook looks up by name.
  found = tables.published_for_config('mlan_resnet20_cifar10')
  assert {(t.name, r.top1) for t, r in found} >= {('mlan_table2', 90.23)}


def test_smoke_makes_every_network_small():
  kwargs = runner.smoke_model_kwargs(
      runner.row_config(tables.get_table('hga_table2').row('hga_resnet152')))
  assert kwargs == {'stage_widths': (16, 32, 64, 128), 'stem_width': 16,
                    'stage_sizes': (2, 2, 2, 2)}
  mlan = runner.row_config(tables.get_table('mlan_table5').row(
      'fusion_concat_r20'), runner.RunSpec(smoke=True))
  assert mlan.model_kwargs.to_dict() == {
      'width': 4, 'fusion': 'concat', 'stage_sizes': (2, 2, 2)}
  assert mlan.image_size == 8
  t5 = tables.get_table('mgan_table5')
  wrn = runner.row_config(t5.row('wrn28_10_c10'), runner.RunSpec(smoke=True))
  assert wrn.model_kwargs.widen_factor == 2.0
  # VGG's five max-pools need 32 x 32 (the digits are upsampled).
  vgg = runner.row_config(t5.row('vgg16_c10'), runner.RunSpec(smoke=True))
  assert (vgg.image_size, vgg.model_kwargs.hidden) == (32, 16)
  assert vgg.model_kwargs.stage_widths == (16, 32, 64, 128, 256)


def test_unknown_names_and_bad_values_fail_in_one_line():
  with pytest.raises(ConfigError, match="unknown table 'nope'; valid: mgan"):
    tables.get_table('nope')
  with pytest.raises(ConfigError, match="unknown row 'x' of table "
                                        'mlan_table5; valid: fusion_plus'):
    tables.get_table('mlan_table5').row('x')
  with pytest.raises(ConfigError, match="--shard '3/3' is not valid"):
    runner.select_rows(tables.get_table('mlan_table5'), shard='3/3')
  with pytest.raises(ConfigError, match="config has no field 'bogus'"):
    runner.row_config(tables.get_table('mlan_table5').rows[0],
                      runner.RunSpec(overrides=(('bogus', 1),)))
  result = subprocess.run(
      [sys.executable, '-m', 'flax_attn.tables', 'run', 'mlan_table5',
       '--root', '/nonexistent', '--rows', 'nope'], cwd=REPO,
      capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      "error: unknown row 'nope' of table mlan_table5; valid: "
      'fusion_plus_r20, fusion_concat_r20, fusion_conv1x1_r20, '
      'fusion_weighted_plus_r20']


def test_shards_split_the_rows_between_hosts():
  table = tables.get_table('mlan_table6')
  shards = [runner.select_rows(table, shard=f'{i}/5') for i in range(5)]
  assert [len(s) for s in shards] == [5, 5, 5, 5, 4]
  names = [r.name for s in shards for r in s]
  assert sorted(names) == sorted(r.name for r in table.rows)
  assert runner.parse_overrides(['--config.batch_size=32',
                                 "--config.model_kwargs.stem=small",
                                 '--config.position_stages=(3, 4)']) == (
      ('batch_size', 32), ('model_kwargs.stem', 'small'),
      ('position_stages', (3, 4)))


def test_plan_without_libtpu_says_fit_is_not_available(monkeypatch):
  import importlib.util
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec',
                      lambda name, *a: None if name == 'libtpu'
                      else real(name, *a))
  table = tables.get_table('mlan_table5')
  lines = runner.plan_lines(table, table.rows[:2], '/nonexistent',
                            runner.RunSpec(smoke=True), 'v5e-8')
  assert lines[1] == ('  fusion_plus_r20: mlan_resnet20 on digits 8px, 6 '
                      'steps x batch 16; to run; fit: n/a (libtpu not '
                      'installed)')
  full = runner.plan_lines(table, table.rows[:1], '/nonexistent',
                           runner.RunSpec(), 'v5e-8')
  assert full[1].startswith('  fusion_plus_r20: mlan_resnet20 on cifar10 '
                            '32px, ')
  assert '200 epochs' in full[1] and 'x batch 128; to run' in full[1]


def test_plan_compiles_a_smoke_row_for_a_tpu():
  """With libtpu (CI installs it), --plan asks the TPU compiler whether the
  row's train step fits the topology, per chip."""
  table = tables.get_table('mlan_table5')
  lines = runner.plan_lines(table, table.rows[:1], '/nonexistent',
                            runner.RunSpec(smoke=True), 'v5e-4')
  assert lines[1].startswith('  fusion_plus_r20: mlan_resnet20 on digits '
                             '8px, 6 steps x batch 16; to run; fit on v5e-4: '
                             'yes ('), lines[1]
  used, hbm = map(float, re.search(r'\(([\d.]+) of ([\d.]+) GiB',
                                    lines[1]).groups())
  assert 0 < used < 1 and hbm == 16.0


def _fake_table():
  rows = tuple(Row(n, n, 'mlan_resnet20_cifar10', top1=90.0)
               for n in ('bad', 'crash', 'good'))
  return Table('fake', 'nobody', 'Table 0', 'fake', rows)


def test_a_failed_row_is_reported_and_the_rest_go_on(tmp_path, monkeypatch,
                                                     capsys):
  # Children that fail (one line) or finish as a row's child does.
  table = _fake_table()
  calls = []

  def child(tbl, row, root, spec):
    del spec
    calls.append(row.name)
    workdir = runner.row_dir(root, tbl, row)
    if row.name == 'bad':
      return [sys.executable, '-c',
              "import sys; print('step 1'); print('error: config.x=3 is "
              "not valid'); sys.exit(2)"]
    if row.name == 'crash':  # an unexpected exception: its traceback
      return [sys.executable, '-c',
              "import sys; print('Traceback (most recent call last):\\n"
              "  File x\\nZeroDivisionError: float division by zero\\n"
              "---\\nFor simplicity, JAX has removed its internal frames')"
              "; sys.exit(1)"]
    return [sys.executable, '-c', (
        'import json, os\n'
        f'w = {workdir!r}\n'
        "json.dump({'top1': 0.5, 'top5': 0.9, 'step': 6}, "
        "open(os.path.join(w, 'eval.json'), 'w'))\n"
        "s = json.load(open(os.path.join(w, 'row.json')))\n"
        "s.update(status='finished', final_step=6)\n"
        "json.dump(s, open(os.path.join(w, 'row.json'), 'w'))\n")]

  monkeypatch.setattr(runner, 'child_command', child)
  spec = runner.RunSpec(smoke=True)
  root = str(tmp_path)
  assert runner.run_rows(table, table.rows, root, spec) == 1
  out = capsys.readouterr().out
  assert ('[1/3] fake/bad: FAILED (exit 2): error: config.x=3 is not valid'
          in out)
  assert ('[2/3] fake/crash: FAILED (exit 1): ZeroDivisionError: float '
          'division by zero') in out
  assert '[3/3] fake/good: finished: top-1 50.00% after 6 steps' in out
  assert '2 of 3 rows failed: bad, crash' in out
  bad = runner.read_json(os.path.join(root, 'fake', 'bad', 'row.json'))
  assert (bad['status'], bad['exit_code'], bad['error']) == (
      'failed', 2, 'error: config.x=3 is not valid')
  # Again: the finished row is skipped, the failed one tried again.
  assert runner.run_rows(table, table.rows, root, spec) == 1
  assert calls == ['bad', 'crash', 'good', 'bad', 'crash']
  assert '[3/3] fake/good: finished already, skipped' in (
      capsys.readouterr().out)
  # Another spec (here: not smoke) makes the finished row stale.
  assert not runner.is_finished(os.path.join(root, 'fake', 'good'),
                                runner.RunSpec())
  results = [compare.row_result(table, r, root) for r in table.rows]
  text = compare.format_markdown(table, results, {})
  assert '| bad | bad | 90.00 / - | - / - | - | - | - | - | failed: error: ' \
      'config.x=3 is not valid |' in text
  assert '| good | good | 90.00 / - | 50.00 / 90.00 | -40.00 | 6 |' in text
  assert '1 of 3 rows measured' in text


def _wait_for(predicate, timeout, what):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if predicate():
      return
    time.sleep(0.05)
  raise AssertionError(f'timed out waiting for {what}')


def _intact_steps(workdir):
  return sorted(int(os.path.basename(os.path.dirname(p))) for p in glob.glob(
      os.path.join(workdir, 'checkpoints', '*', 'flax_attn_checksums.json')))


def test_smoke_table_runs_is_killed_resumes_and_reports(tmp_path):
  root = str(tmp_path / 'runs')
  env = dict(os.environ, XLA_FLAGS=FAST_COMPILE, JAX_PLATFORMS='cpu')
  cmd = [sys.executable, '-m', 'flax_attn.tables', 'run', 'mlan_table5',
         '--root', root, '--smoke',
         f'--config.compilation_cache_dir={tmp_path / "jax_cache"}']
  killed = os.path.join(root, 'mlan_table5', 'fusion_concat_r20')
  first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
  try:
    _wait_for(lambda: _intact_steps(killed) or first.poll() is not None,
              300, 'the second row\'s first checkpoint')
    os.killpg(first.pid, signal.SIGKILL)  # the runner and its row
  finally:
    if first.poll() is None:
      os.killpg(first.pid, signal.SIGKILL)
    out = first.communicate(timeout=30)[0]
  saved = _intact_steps(killed)
  assert saved and max(saved) < runner.SMOKE_STEPS, out
  assert 'fusion_plus_r20: finished: top-1' in out
  assert not os.path.exists(os.path.join(killed, 'eval.json'))

  second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=400)
  assert second.returncode == 0, second.stdout + second.stderr
  lines = second.stdout.splitlines()
  assert lines[0] == '[1/4] mlan_table5/fusion_plus_r20: finished already, ' \
                     'skipped'
  with open(os.path.join(killed, 'log.txt')) as f:
    log = f.read()
  assert re.search(rf'resumed from \S+/checkpoints/{max(saved)}\n', log), log
  for name in ('fusion_concat_r20', 'fusion_conv1x1_r20',
               'fusion_weighted_plus_r20'):
    assert any(f'mlan_table5/{name}: finished: top-1' in l for l in lines)
    with open(os.path.join(root, 'mlan_table5', name, 'eval.json')) as f:
      assert json.load(f)['step'] == runner.SMOKE_STEPS

  report = subprocess.run(
      [sys.executable, '-m', 'flax_attn.tables', 'report', 'mlan_table5',
       '--root', root], cwd=REPO, env=env, capture_output=True, text=True,
      timeout=300)
  assert report.returncode == 0, report.stderr
  with open(os.path.join(root, 'mlan_table5.md')) as f:
    text = f.read()
  assert text in report.stdout
  assert '4 of 4 rows measured' in text
  rows = [l for l in text.splitlines() if l.startswith('| fusion_')]
  assert len(rows) == 4
  for line in rows:
    cells = [c.strip() for c in line.strip('|').split('|')]
    assert cells[5] == str(runner.SMOKE_STEPS)
    assert cells[8] == 'finished'
    measured = float(cells[3].split(' / ')[0])
    assert 0 <= measured <= 100
    assert float(cells[4]) == pytest.approx(
        measured - float(cells[2].split(' / ')[0]), abs=0.011)
  # Parameters of the full-size models (Table 5: 0.10 / 0.21 / 0.11 / 0.10).
  params = [l.split('|')[7].strip() for l in rows]
  assert params == ['0.098 / 0.1', '0.207 / 0.21', '0.111 / 0.11',
                    '0.100 / 0.1']
  assert os.path.getsize(os.path.join(root, 'mlan_table5.png')) > 10_000


def test_sigterm_to_the_runner_stops_the_row_and_starts_no_other(
    tmp_path, monkeypatch, capsys):
  # The row's child saves and exits 143 on SIGTERM, as train.py does.
  table = _fake_table()
  root = str(tmp_path)
  child = ("import signal, sys, time\n"
           "signal.signal(signal.SIGTERM, lambda *a: (print('error: SIGTERM: "
           "stopped at step 4, checkpoint saved', flush=True), "
           "sys.exit(143)))\n"
           "print('ready', flush=True)\n"
           "time.sleep(60)\n")
  monkeypatch.setattr(runner, 'child_command',
                      lambda *a: [sys.executable, '-c', child])
  log = os.path.join(root, 'fake', 'bad', 'log.txt')

  def signal_when_ready():
    _wait_for(lambda: os.path.exists(log) and 'ready' in open(log).read(),
              60, 'the child')
    os.kill(os.getpid(), signal.SIGTERM)

  import threading
  thread = threading.Thread(target=signal_when_ready)
  thread.start()
  start = time.monotonic()
  code = runner.run_rows(table, table.rows, root, runner.RunSpec())
  thread.join()
  assert code == 128 + signal.SIGTERM
  assert time.monotonic() - start < 30  # the child stopped; no wait for it
  assert ('[1/3] fake/bad: stopped by SIGTERM; the checkpoint is kept, run '
          'again to resume') in capsys.readouterr().out
  status = runner.read_json(os.path.join(root, 'fake', 'bad', 'row.json'))
  assert (status['status'], status['exit_code'], status['error']) == (
      'stopped', 143, 'error: SIGTERM: stopped at step 4, checkpoint saved')
  assert not os.path.exists(os.path.join(root, 'fake', 'crash'))


def test_flax_attn_report_quotes_the_same_figures_as_the_tables():
  # flax_attn.report's PUBLISHED (model name -> paper figures) must agree
  # with the table rows that run a model of that name.
  from flax_attn import report
  by_source = {'HGA Table 2': 'hga_table2', 'MGAN Table 2': 'mgan_table2',
               'MGAN Table 3': 'mgan_table3', 'MGAN Table 5': 'mgan_table5'}
  checked = 0
  for name, entries in report.PUBLISHED.items():
    for published in entries:
      table = by_source.get(published.source.split(' (')[0])
      if table is None:
        continue
      rows = [r for r in tables.get_table(table).rows
              if runner.row_config(r).model == name]
      assert rows, (name, published.source)
      for row in rows:
        assert (row.params_m, row.gmacs) == (published.params_m,
                                             published.gflops), row.name
        checked += 1
  assert checked >= 20

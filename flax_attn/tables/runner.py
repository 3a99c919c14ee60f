"""Runs a table's rows: one child process per row, into ROOT/TABLE/ROW.

Why a child process per row: a row that dies (out of memory, a crashed
compiler, SIGKILL) takes only itself down; the runner records it and goes
on, and a rerun resumes it from its newest checkpoint (train.py's own
resume). The child builds the row's config and calls the public
`train.train_and_evaluate` then `train.evaluate` (which writes eval.json).

Each row's folder holds the run (checkpoints/, metrics.jsonl, eval.json,
config.json), its output (log.txt, appended across attempts) and
`row.json`: what was asked (`spec`: smoke, command-line overrides), the
status ('running', 'finished', 'failed', 'stopped' by a signal to the
runner), the final step and, for a failed row, its exit code and error
line. A row is finished when row.json says so
for the same spec and eval.json is of its final step; those are skipped.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import os
import re
import signal
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import ml_collections

from flax_attn.errors import ConfigError
from flax_attn.tables.spec import (Row, Table, apply_overrides, load_config,
                                   repo_root)

STATUS_FILE = 'row.json'
LOG_FILE = 'log.txt'

# --smoke: the embedded digits (offline), a few steps, a checkpoint every 2.
SMOKE_STEPS = 6
SMOKE_OVERRIDES: Tuple[Tuple[str, Any], ...] = (
    ('dataset', 'digits'), ('data_dir', ''), ('image_size', 8),
    ('augment.crop_padding', 1), ('augment.flip', False),
    ('augment.rotation', 0.0), ('augment.color_jitter', 0.0),
    ('augment.hue', 0.0), ('augment.crop', ''),
    ('batch_size', 16), ('eval_batch_size', 100),
    ('num_train_steps', SMOKE_STEPS), ('warmup_epochs', 0.0),
    ('log_every_steps', 2), ('eval_every_steps', SMOKE_STEPS),
    ('checkpoint_every_steps', 2), ('pretrained_path', ''),
    ('dtype', 'float32'), ('progress_bar', False),
)
SMOKE_WIDTH = 4          # `width` of CIFAR ResNets and MLAN
SMOKE_STAGE_WIDTH = 16   # first stage of ImageNet ResNets / VGG (ResNeXt's
                         # 32 groups x 4 need filters >= 16)
SMOKE_MAX_BLOCKS = 2     # per stage (MLAN's block / group attention needs 2)


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """How rows are run: what makes a finished row of another spec stale."""
  smoke: bool = False
  overrides: Tuple[Tuple[str, Any], ...] = ()

  def to_json(self) -> Dict[str, Any]:
    return {'smoke': self.smoke,
            'overrides': [[k, _jsonable(v)] for k, v in self.overrides]}


def _jsonable(value):
  return list(value) if isinstance(value, tuple) else value


def parse_overrides(args: Sequence[str]) -> Tuple[Tuple[str, Any], ...]:
  """`--config.a.b=value` arguments as (field, value) pairs; values are
  Python literals (1, 0.1, True, '(3, 5)') or else strings."""
  out = []
  for arg in args:
    if not arg.startswith('--config.') or '=' not in arg:
      raise ConfigError(f'unexpected argument {arg!r}; overrides are '
                        '--config.FIELD=VALUE')
    field, text = arg[len('--config.'):].split('=', 1)
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    out.append((field, value))
  return tuple(out)


def smoke_model_kwargs(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  """model_kwargs that make the row's network tiny, of the same kind:
  `width` 4 for builders that take one (CIFAR ResNets, MLAN), else stage
  widths from 16, a 16-channel stem and VGG's 16-wide classifier; a widen
  factor of at most 2; at most SMOKE_MAX_BLOCKS blocks per stage."""
  from flax_attn.models.resnet import ResNet  # pylint: disable=g-import-not-at-top
  from flax_attn.registry import MODELS  # pylint: disable=g-import-not-at-top
  builder = MODELS.get(config.model)
  params = inspect.signature(builder).parameters
  kwargs: Dict[str, Any] = {}
  if 'width' in params:
    kwargs['width'] = SMOKE_WIDTH
  if 'hidden' in params:
    kwargs['hidden'] = 16
  built = builder(**kwargs)
  # The model's settings: the builder's, else the module's field defaults.
  fields = {f.name: f.default
            for f in dataclasses.fields(built.get('model_cls', ResNet))}
  setting = lambda name: built.get(name, fields.get(name))
  if 'width' not in kwargs and 'stage_widths' in fields:
    stages = len(setting('stage_sizes') or setting('stage_widths'))
    kwargs['stage_widths'] = tuple(SMOKE_STAGE_WIDTH * 2 ** i
                                   for i in range(stages))
    if 'stem_width' in fields:
      kwargs['stem_width'] = SMOKE_STAGE_WIDTH
  if (setting('widen_factor') or 1) > 2:  # WRN-28-10
    kwargs['widen_factor'] = 2.0
  sizes = setting('stage_sizes')
  if (isinstance(sizes, (tuple, list)) and sizes
      and max(sizes) > SMOKE_MAX_BLOCKS):
    kwargs['stage_sizes'] = tuple(min(n, SMOKE_MAX_BLOCKS) for n in sizes)
  return kwargs


def row_config(row: Row, spec: RunSpec = RunSpec()
               ) -> ml_collections.ConfigDict:
  """The config a row runs with: the config file (and variant), the row's
  overrides, the smoke settings, then the command line's overrides."""
  config = load_config(row)
  if spec.smoke:
    apply_overrides(config, SMOKE_OVERRIDES, what='--smoke')
    apply_overrides(config, [(f'model_kwargs.{k}', v) for k, v in
                             smoke_model_kwargs(config).items()],
                    what='--smoke')
    if smoke_needs_32px(config):
      apply_overrides(config, [('image_size', 32)], what='--smoke')
  apply_overrides(config, spec.overrides, what='command line')
  return config


def smoke_needs_32px(config) -> bool:
  """VGG halves the image five times with unpadded max-pools: 8 x 8
  digits would vanish, so its smoke rows upsample them to 32 x 32."""
  from flax_attn.models.vgg import VGG  # pylint: disable=g-import-not-at-top
  from flax_attn.registry import MODELS  # pylint: disable=g-import-not-at-top
  return MODELS.get(config.model)().get('model_cls') is VGG


def row_dir(root: str, table: Table, row: Row) -> str:
  return os.path.join(root, table.name, row.name)


def read_json(path: str) -> Optional[Dict[str, Any]]:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def write_status(workdir: str, **values) -> None:
  """Updates ROW/row.json atomically."""
  path = os.path.join(workdir, STATUS_FILE)
  status = read_json(path) or {}
  status.update(values)
  with open(path + '.tmp', 'w') as f:
    json.dump(status, f, indent=2)
  os.replace(path + '.tmp', path)


def is_finished(workdir: str, spec: RunSpec) -> bool:
  """row.json says finished for this spec and eval.json is of its final
  step."""
  status = read_json(os.path.join(workdir, STATUS_FILE)) or {}
  evaluation = read_json(os.path.join(workdir, 'eval.json')) or {}
  return (status.get('status') == 'finished'
          and status.get('spec') == spec.to_json()
          and evaluation.get('step') is not None
          and evaluation.get('step') == status.get('final_step'))


def select_rows(table: Table, names: Optional[Sequence[str]] = None,
                shard: Optional[str] = None) -> List[Row]:
  """The rows named (all by default), then slice i of N (`i/N`, rows i,
  i + N, ...) for several hosts or jobs."""
  rows = ([table.row(n) for n in names] if names else list(table.rows))
  if shard:
    try:
      index, count = (int(x) for x in shard.split('/'))
      if not 0 <= index < count:
        raise ValueError
    except ValueError:
      raise ConfigError(f'--shard {shard!r} is not valid; valid: i/N with '
                        '0 <= i < N, e.g. 0/4') from None
    rows = rows[index::count]
  return rows


def child_command(table: Table, row: Row, root: str, spec: RunSpec
                  ) -> List[str]:
  cmd = [sys.executable, '-m', 'flax_attn.tables', '_row', table.name,
         row.name, '--root', root]
  if spec.smoke:
    cmd.append('--smoke')
  # repr: the child's parse_overrides reads back the same Python value.
  cmd += [f'--config.{k}={v!r}' for k, v in spec.overrides]
  return cmd


def _error_line(log_path: str, since: int) -> str:
  """The child's one-line error: its last 'error:' line of this attempt,
  else its last exception line (a traceback), else its last line."""
  try:
    with open(log_path, errors='replace') as f:
      f.seek(since)
      lines = [l.strip() for l in f.read().splitlines() if l.strip()]
  except OSError:
    return ''
  errors = [l for l in lines if l.startswith('error:')]
  # An unexpected failure: its traceback's exception line.
  raised = [l for l in lines if re.match(r'[\w.]*(Error|Exception)\b', l)]
  return (errors or raised or lines or [''])[-1]


class _Stop:
  """SIGTERM / SIGINT to the runner: forwarded to the row's child (which
  saves a checkpoint and exits), then no further row starts."""

  def __init__(self):
    self.child: Optional[subprocess.Popen] = None
    self.signum: Optional[int] = None
    self._previous = {}

  def __enter__(self):
    for signum in (signal.SIGTERM, signal.SIGINT):
      self._previous[signum] = signal.signal(signum, self._handler)
    return self

  def _handler(self, signum, frame):
    del frame
    self.signum = signum
    if self.child is not None and self.child.poll() is None:
      # Ctrl-C reaches the child through the terminal's process group.
      if signum == signal.SIGTERM:
        self.child.send_signal(signal.SIGTERM)

  def __exit__(self, *exc):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)


def run_rows(table: Table, rows: Sequence[Row], root: str, spec: RunSpec,
             out=None) -> int:
  """Runs `rows` one after the other; returns 0 if every row finished, 1 if
  any failed, 128 + signal if stopped by one. Progress goes to `out`
  (stdout)."""
  out = out or sys.stdout
  repo = repo_root()
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(
      [repo] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
  failed: List[str] = []
  with _Stop() as stop:
    for i, row in enumerate(rows, 1):
      if stop.signum is not None:
        break
      workdir = row_dir(root, table, row)
      prefix = f'[{i}/{len(rows)}] {table.name}/{row.name}:'
      if is_finished(workdir, spec):
        print(f'{prefix} finished already, skipped', file=out, flush=True)
        continue
      os.makedirs(workdir, exist_ok=True)
      write_status(workdir, table=table.name, row=row.name,
                   spec=spec.to_json(), status='running')
      log_path = os.path.join(workdir, LOG_FILE)
      print(f'{prefix} running (log: {log_path})', file=out, flush=True)
      with open(log_path, 'a') as log:
        since = log.tell()
        child = subprocess.Popen(child_command(table, row, root, spec),
                                 stdout=log, stderr=subprocess.STDOUT,
                                 cwd=repo, env=env)
        stop.child = child
        code = child.wait()
        stop.child = None
      if code == 0:
        result = read_json(os.path.join(workdir, 'eval.json')) or {}
        print(f'{prefix} finished: top-1 {100 * result.get("top1", 0):.2f}% '
              f'after {result.get("step")} steps', file=out, flush=True)
        continue
      line = _error_line(log_path, since)
      write_status(workdir, status='failed' if stop.signum is None
                   else 'stopped', exit_code=code, error=line)
      if stop.signum is not None:
        print(f'{prefix} stopped by {signal.Signals(stop.signum).name}; '
              'the checkpoint is kept, run again to resume', file=out,
              flush=True)
        break
      failed.append(row.name)
      print(f'{prefix} FAILED (exit {code}): {line}', file=out, flush=True)
  if stop.signum is not None:
    return 128 + stop.signum
  if failed:
    print(f'{len(failed)} of {len(rows)} rows failed: {", ".join(failed)} '
          f'(each row\'s log.txt says why)', file=out, flush=True)
    return 1
  return 0


def run_one_row(table: Table, row: Row, root: str, spec: RunSpec) -> int:
  """The child: trains and evaluates one row in this process (train.py's
  start-up: CPU devices, compilation cache; its one-line errors)."""
  from flax_attn import cli, runtime  # pylint: disable=g-import-not-at-top
  workdir = row_dir(root, table, row)

  def body():
    config = row_config(row, spec)
    runtime.start(config)
    from flax_attn import train  # pylint: disable=g-import-not-at-top
    result = train.train_and_evaluate(config, workdir)
    evaluation = train.evaluate(config, workdir)
    write_status(workdir, status='finished', final_step=int(result['step']),
                 exit_code=0, error='')
    print(f'final: step={evaluation["step"]} top1={evaluation["top1"]:.4f} '
          f'top5={evaluation["top5"]:.4f}', flush=True)
    return 0

  return cli.run_main(body)


# --------------------------------------------------------------------------
# --plan
# --------------------------------------------------------------------------


def _steps_text(config) -> str:
  """'N steps', with the epochs where the config counts in epochs."""
  if config.num_train_steps > 0:
    return f'{config.num_train_steps} steps'
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.ERROR)  # tfds on a data set not prepared
  try:
    from flax_attn import data as data_lib  # pylint: disable=g-import-not-at-top
    per_epoch = data_lib.num_examples(config, 'train') // config.batch_size
    return (f'{int(config.num_epochs * per_epoch)} steps '
            f'({config.num_epochs:g} epochs)')
  except Exception:  # pylint: disable=broad-except
    # The data set is not prepared here: the plan still says the epochs.
    return f'{config.num_epochs:g} epochs (data set not prepared here)'


def fit_text(config, topology: Optional[str]) -> str:
  """Whether the row's train step fits `topology` per chip, from the TPU
  compiler run compile-only (flax_attn.tpu_fit; libtpu comes with the
  `tpu` extra, pip install -e .[tpu])."""
  if not topology:
    return 'fit: not checked (--topology NAME)'
  import importlib.util  # pylint: disable=g-import-not-at-top
  if importlib.util.find_spec('libtpu') is None:
    return 'fit: n/a (libtpu not installed)'
  from flax_attn import tpu_fit  # pylint: disable=g-import-not-at-top
  from flax_attn.errors import UserError  # pylint: disable=g-import-not-at-top
  try:
    report = tpu_fit.fit_report(config, topology)
  except UserError as e:
    return f'fit: {str(e).splitlines()[0]}'
  gib = 2.0 ** 30
  return (f'fit on {topology}: {"yes" if report.fits else "NO"} '
          f'({report.total_bytes / gib:.2f} of {report.hbm_bytes / gib:.2f} '
          'GiB per chip)')


def plan_lines(table: Table, rows: Sequence[Row], root: str, spec: RunSpec,
               topology: Optional[str]) -> List[str]:
  """One line per row: model, data set, steps x batch, image size, state
  (finished / to run) and fit."""
  lines = [f'{table.name}: {table.paper}, {table.source}: {table.title}']
  for row in rows:
    config = row_config(row, spec)
    done = is_finished(row_dir(root, table, row), spec)
    lines.append(
        f'  {row.name}: {config.model} on {config.dataset} '
        f'{config.image_size}px, {_steps_text(config)} x batch '
        f'{config.batch_size}; {"finished" if done else "to run"}; '
        f'{fit_text(config, topology)}')
  return lines

"""The command line's errors: a user mistake is one line (exit 2), anything
else keeps its traceback; options of the chosen model and attention from
the command line, in any flag order, checked against what they take."""
import io
import logging
import os
import subprocess
import sys
import textwrap
from contextlib import redirect_stderr

import jax
import pytest

import tiny_config
from flax_attn import cli, train
from flax_attn.errors import ConfigError, UnknownNameError, UserError
from flax_attn.models import model_from_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, 'tests', 'tiny_config.py')
CHILD_ENV = {'XLA_FLAGS': '--xla_force_host_platform_device_count=1',
             'FLAX_ATTN_HUGEPAGES': '0', 'JAX_PLATFORMS': 'cpu'}


def _locked_config(**fields):
  config = tiny_config.get_config()
  for key, value in fields.items():
    config[key] = value
  config.lock()
  return config


def _apply(config, *args):
  rest, overrides = cli.split_kwargs_overrides(['train.py', *args])
  cli.apply_kwargs_overrides(config, overrides)
  return rest


def test_user_errors_share_one_base():
  assert issubclass(UnknownNameError, UserError)
  assert issubclass(UnknownNameError, KeyError)  # still a failed lookup
  from flax_attn.data import DatasetNotFoundError
  from flax_attn.workdir_lock import WorkdirBusyError
  assert issubclass(DatasetNotFoundError, UserError)
  assert issubclass(WorkdirBusyError, UserError)
  with pytest.raises(UserError, match="unknown model 'resnet2'; did you "
                     "mean .*'resnet20'"):
    model_from_config(_locked_config(model='resnet2'), 10)


def test_attention_and_model_options_in_any_order():
  config = _locked_config()
  rest = _apply(config, '--config.attn_kwargs.reduction=8',
                '--config.model_kwargs.width', '8', '--config.seed=3')
  assert rest == ['train.py', '--config.seed=3']  # absl's, as before
  assert config.attn_kwargs.reduction == 8 and config.model_kwargs.width == 8
  # Typed as the config holds them (a string stays a string), else literals.
  assert cli.parse_override_value('8') == 8
  assert cli.parse_override_value('0.5', 1.0) == 0.5
  assert cli.parse_override_value('2', 1.0) == 2.0
  assert isinstance(cli.parse_override_value('2', 1.0), float)
  assert cli.parse_override_value('(1, 2)') == (1, 2)
  assert cli.parse_override_value('true') is True
  assert cli.parse_override_value('small') == 'small'
  assert cli.parse_override_value('8', 'x') == '8'
  # The model builds with them: 8 is the width of the first stage.
  model = model_from_config(config, 10)
  assert model.stage_widths[0] == 8


@pytest.mark.parametrize('args, message', [
    (('--config.attn_kwargs.foo=1',),
     "unknown option 'foo' for attention 'se'; valid options: reduction, "),
    # The attention named on the command line, not the file's ('se').
    (('--config.attn_kwargs.kernel_size=3',),
     "unknown option 'kernel_size' for attention 'se'"),
    (('--config.model_kwargs.widht=8',),
     "unknown option 'widht' for model 'cifar_resnet8'; valid options: "),
])
def test_an_option_the_model_or_attention_lacks_is_named(args, message):
  with pytest.raises(ConfigError, match=message.replace('(', r'\(')):
    _apply(_locked_config(), *args)


def test_options_are_checked_against_the_attention_chosen():
  # kernel_size is CBAM's, not SE's: fine once --config.attn=cbam is set,
  # and the config's attention is what names the error.
  config = _locked_config(attn='cbam')
  _apply(config, '--config.attn_kwargs.kernel_size=3')
  assert config.attn_kwargs.kernel_size == 3
  with pytest.raises(ConfigError, match="for attention 'cbam'; valid "
                     'options: reduction, rd_divisor, kernel_size'):
    _apply(_locked_config(attn='cbam'), '--config.attn_kwargs.foo=1')


def test_parse_flags_end_to_end_in_any_order():
  """The real flag parsing (absl + ml_collections): kernel_size is CBAM's
  (not the file's SE), given before --config.attn=cbam."""
  script = textwrap.dedent(f'''
      import sys
      sys.path.insert(0, {REPO!r})
      from flax_attn import cli
      cli.define_flags()
      cli.parse_flags(sys.argv[:1] + sys.argv[1:])
      c = cli.FLAGS.config
      print(c.attn, c.attn_kwargs.reduction, c.attn_kwargs.kernel_size,
            c.model_kwargs.width, c.seed)
      ''')
  # The attention's option before the attention, the rest mixed in.
  order = ['--config.attn_kwargs.kernel_size=3', '--config.seed=3',
           '--config.attn=cbam', '--config.model_kwargs.width=8',
           '--config.attn_kwargs.reduction', '8']
  proc = subprocess.run([sys.executable, '-c', script, '--workdir', 'w',
                         '--config', TINY, *order], cwd=REPO,
                        capture_output=True, text=True, timeout=120,
                        env={**os.environ, **CHILD_ENV})
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.split() == ['cbam', '8', '3', '8', '3'], proc.stdout


@pytest.mark.parametrize('lr', [float('nan'), float('inf'), 0.0, -0.1])
def test_a_bad_learning_rate_fails_in_one_line_before_compiling(
    lr, tmp_path, caplog):
  config = tiny_config.get_config()
  config.learning_rate = lr
  stderr = io.StringIO()
  with caplog.at_level(logging.WARNING), jax.log_compiles(True), \
      redirect_stderr(stderr):
    code = cli.run_main(lambda: train.train_and_evaluate(
        config, str(tmp_path / 'w')))
  assert code == 2
  assert stderr.getvalue() == (f'error: config.learning_rate={lr!r} must be '
                               'a positive finite number\n')
  assert not [r for r in caplog.records if 'ompil' in r.getMessage()]


def test_log_compiles_is_seen_by_the_test_above(caplog):
  """The check above can fail: a compile is logged where it looks."""
  with caplog.at_level(logging.WARNING), jax.log_compiles(True):
    jax.jit(lambda x: x * 3.0)(jax.numpy.float32(2.0))
  assert [r for r in caplog.records if 'ompil' in r.getMessage()]


def test_a_bad_config_value_from_train_py_is_one_line(tmp_path):
  # JAX_LOG_COMPILES=1: a compile would print more lines.
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, 'train.py'), '--config', TINY,
       '--workdir', str(tmp_path / 'w'), '--config.learning_rate=nan'],
      cwd=REPO, capture_output=True, text=True, timeout=180,
      env={**os.environ, **CHILD_ENV, 'JAX_LOG_COMPILES': '1'})
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr == ('error: config.learning_rate=nan must be a '
                         'positive finite number\n'), proc.stderr


def test_an_internal_error_in_the_step_keeps_its_traceback(tmp_path):
  """A ValueError no user caused (here: the loss function breaks while the
  step is traced) is a bug: its traceback is printed, not one line."""
  script = textwrap.dedent(f'''
      import runpy, sys
      sys.path.insert(0, {REPO!r})
      import optax
      def broken(*args, **kwargs):
        raise ValueError('internal: the loss function broke')
      optax.softmax_cross_entropy = broken
      sys.argv = [{os.path.join(REPO, 'train.py')!r}] + sys.argv[1:]
      runpy.run_path(sys.argv[0], run_name='__main__')
      ''')
  proc = subprocess.run([sys.executable, '-c', script, '--config', TINY,
                         '--workdir', str(tmp_path / 'w')], cwd=REPO,
                        capture_output=True, text=True, timeout=240,
                        env={**os.environ, **CHILD_ENV})
  assert proc.returncode not in (0, 2), proc.stderr
  assert 'Traceback (most recent call last)' in proc.stderr, proc.stderr
  assert '\nValueError: internal: the loss function broke' in proc.stderr
  # The frames down to the one that raised (in the traced step).
  assert 'in broken' in proc.stderr and 'train' in proc.stderr
  assert 'error: internal' not in proc.stderr

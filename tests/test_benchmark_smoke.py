"""The benchmark scripts keep working: speed.py's JAX part on a tiny case and
its table (no torch), conv_parity.py's gradients against PyTorch's.

Not timing tests: they check that the scripts still build the models, run
flax_attn's real train / eval steps and convolutions, and report sane
fields.
"""
import importlib.util
import io
import math
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_benchmark(name):
  spec = importlib.util.spec_from_file_location(
      name, os.path.join(REPO, 'benchmarks', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope='module')
def speed():
  return _load_benchmark('speed')


def test_jax_worker_runs_the_real_train_step_on_a_tiny_case(speed):
  from flax_attn.models import create_model
  from tests.helpers import model_param_count
  spec = dict(backbone='tiny', attn='se', framework='jax', batch=8,
              image_size=8, num_classes=10, steps=2, warmup=1, eval_steps=1,
              threads=1, dtype='float32')
  result = speed.run_jax(spec)
  expected = model_param_count(
      create_model('cifar_resnet8', num_classes=10, width=4, attn='se'),
      (1, 8, 8, 3))
  assert result['params'] == expected
  assert len(result['step_times']) == 2 and result['step_cpu_s'] > 0
  assert 0 < result['step_s'] < 60 and 0 < result['eval_step_s'] < 60
  assert math.isfinite(result['loss'])
  assert result['forward_flops'] > 0 and result['train_flops'] > 0
  assert result['peak_mb'] > 0 and result['xla_buffers_mb'] > 0


def test_summary_and_table_from_worker_results(speed):
  runs = []
  for attn, step, flops in (('none', 0.10, 100.0), ('se', 0.12, 110.0)):
    for fw, factor in (('jax', 1.0), ('torch', 2.0)):
      runs.append(dict(backbone='tiny', attn=attn, framework=fw, batch=4,
                       ok=True, step_s=step * factor, eval_step_s=step / 3,
                       step_cpu_s=step * factor,
                       compile_s=1.0, peak_mb=10.0, peak_delta_mb=5.0,
                       params=7, forward_flops=flops, load_before=1.0))
  rows = speed.summarise(runs)
  se = [r for r in rows if r['attn'] == 'se'][0]
  assert se['jax']['images_per_s'] == pytest.approx(4 / 0.12)
  assert se['flop_share'] == pytest.approx(10 / 110)
  assert se['time_share']['jax'] == pytest.approx(0.02 / 0.12)
  out = io.StringIO()
  speed.print_table(rows, out)
  lines = out.getvalue().splitlines()
  assert len(lines) == 4 and '| 2.00x |' in lines[2]  # JAX twice as fast


def test_cases_keep_mlan_to_its_own_family(speed):
  cases = speed.cases_for(['resnet20', 'resnet50'], ['none', 'mlan'])
  assert cases == [('resnet20', 'none'), ('resnet20', 'mlan'),
                   ('resnet50', 'none')]


def test_conv_parity_checks_gradients_against_pytorch_and_prints_a_row_each(
    capsys):
  conv_parity = _load_benchmark('conv_parity')
  # main() asserts that flax_attn's input and kernel gradients equal
  # PyTorch's before it times anything.
  assert conv_parity.main(['--batch', '2', '--rounds', '1']) == 0
  rows = [line.split('|')[1].strip()
          for line in capsys.readouterr().out.splitlines()
          if line.startswith('| ') and not line.startswith('| conv')]
  assert rows == ['32x32x16', '16x16x32', '8x8x64']

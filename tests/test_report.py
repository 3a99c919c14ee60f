"""`python -m flax_attn.report`: parameters from eval_shape, GMACs from XLA's
cost analysis (flops / 2), published figures beside them."""
import pytest

import flax_attn
from flax_attn import report
from helpers import model_param_count


def resnet20_macs(size=32, classes=10):
  """He et al. 2016's CIFAR ResNet-20, counted by hand: 3x3 convs and FC."""
  macs = 3 * 3 * 3 * 16 * size * size                        # stem
  for stage, width in enumerate((16, 32, 64)):
    hw = (size // 2 ** stage) ** 2
    cin = 16 if stage == 0 else width // 2
    macs += 9 * cin * width * hw + 5 * 9 * width * width * hw  # 6 convs
  return macs + 64 * classes


def test_cli_prints_params_and_gmacs(capsys):
  assert report.main(['resnet20', '--image-size', '32',
                      '--num-classes', '10']) == 0
  out = capsys.readouterr().out
  row = next(line for line in out.splitlines() if line.startswith('resnet20'))
  params_m, gmacs = map(float, row.split()[1:3])
  expected_params = model_param_count(
      flax_attn.create_model('resnet20', num_classes=10), (1, 32, 32, 3))
  assert params_m == pytest.approx(expected_params / 1e6, abs=5e-4)
  # XLA skips the zero-padding taps of border pixels and adds BN/ReLU work.
  assert gmacs * 1e9 == pytest.approx(resnet20_macs(), rel=0.12)
  assert 'GMACs = XLA flops / 2' in out


def test_published_figures_are_shown_beside_measured():
  row = dict(model='hga_resnet50', params=26_656_808, gmacs=4.229,
             published=report.PUBLISHED['hga_resnet50'])
  table = report.format_table([row], 224, 1000)
  line = next(l for l in table.splitlines() if l.startswith('hga_resnet50'))
  assert line.split()[1:5] == ['26.657', '4.229', '26.73', '4.38']
  assert 'HGA Table 2: 224x224, 1000 classes' in table


def test_bad_arguments_fail():
  with pytest.raises(SystemExit):
    report.main(['resnet20', '--image-size', '0'])
  with pytest.raises(flax_attn.UnknownNameError, match='unknown model'):
    report.main(['no_such_model', '--no-flops'])


def test_readings_table_counts_and_compares():
  """`--readings`: each MGAN reading beside Tables 2, 3, 5 and each MLAN
  comparator reading beside Tables 6, 9; counts from eval_shape."""
  from flax_attn.models.zoo.mgan import MGAN_READINGS
  mgan = report.READINGS['mgan']()
  assert {(r.table, r.reading) for r in mgan if r.model.startswith('mgan')} \
      == {(t, name) for t in ('MGAN Table 2', 'MGAN Table 3', 'MGAN Table 5')
          for name in MGAN_READINGS}
  mlan = report.READINGS['mlan']()
  assert {r.table for r in mlan} == {'MLAN Table 6', 'MLAN Table 9'}
  row = next(r for r in mgan if r.table == 'MGAN Table 2'
             and r.reading == 'branch_per_stage')
  count = report.count_reading(row)
  assert count == 11_689_512 + 200_457   # resnet18 + 2.125 C^2 a stage
  table = report.format_readings([(row, count)], note='MGAN: a note')
  line = next(l for l in table.splitlines() if l.startswith('MGAN Table 2'))
  assert line.split()[-3:] == ['11.890', '11.7', '+1.6%']
  assert table.endswith('MGAN: a note')
  with pytest.raises(SystemExit):
    report.main([])                      # neither models nor --readings

"""`python -m flax_attn.report`: parameters from eval_shape, GMACs counted the
papers' way from the jaxpr (flax_attn.macs), XLA's figure beside them."""
import functools

import jax
import jax.numpy as jnp
import pytest
from jax import lax

import flax_attn
from flax_attn import cpu_kernels, macs, ops, report
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
  xla_gmacs = float(row.split()[5])
  expected_params = model_param_count(
      flax_attn.create_model('resnet20', num_classes=10), (1, 32, 32, 3))
  assert params_m == pytest.approx(expected_params / 1e6, abs=5e-4)
  # Every tap, padding included, as counted by hand: exact to the digits.
  assert gmacs == pytest.approx(resnet20_macs() / 1e9, abs=5e-4)
  assert report.count_macs(flax_attn.create_model('resnet20', num_classes=10),
                           32) == resnet20_macs()
  # XLA skips the zero-padding taps of border pixels and adds BN/ReLU work.
  assert xla_gmacs * 1e9 == pytest.approx(resnet20_macs(), rel=0.12)
  assert 'XLA GMACs = XLA cost-analysis flops / 2' in out
  assert 'not counted: BatchNorm, activations, pooling' in out


@pytest.mark.parametrize('name, low, high', [
    # torchvision's table: 4.09 and 1.81 GFLOPS; the papers' 4.11 / 1.82.
    ('resnet50', 4.085e9, 4.12e9), ('resnet18', 1.81e9, 1.82e9)])
def test_imagenet_resnets_count_as_the_papers(name, low, high):
  model = flax_attn.create_model(name, num_classes=1000)
  assert low <= report.count_macs(model, 224) <= high


def _abstract(*shapes):
  return [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]


NHWC = ('NHWC', 'HWIO', 'NHWC')


@pytest.mark.parametrize('x_shape, k_shape, strides, groups', [
    ((2, 9, 9, 40), (3, 3, 40, 24), (2, 2), 1),   # im2col kernel gradient
    ((2, 8, 8, 32), (3, 3, 1, 32), (1, 1), 32),   # depthwise: per-tap adds
    ((2, 8, 8, 64), (3, 3, 4, 64), (1, 1), 16),   # HGA-style groups of 4
    ((2, 8, 8, 20), (3, 3, 20, 3), (1, 1), 1),    # narrow output: matmul
    ((2, 8, 8, 2), (7, 7, 2, 1), (1, 1), 1),      # 2 -> 1 spatial mask
])
def test_ops_convolutions_count_every_tap(x_shape, k_shape, strides, groups):
  """Convolutions count every tap, also while the CPU kernels (per-tap
  multiply-adds, matmul + shifted adds, custom_vjp) are switched on."""
  pad = tuple((k // 2, k // 2) for k in k_shape[:2])
  conv = functools.partial(ops.conv_general_dilated, window_strides=strides,
                           padding=pad, dimension_numbers=NHWC,
                           feature_group_count=groups)
  n, h, w, _ = x_shape
  kh, kw, cin_g, cout = k_shape
  ho, wo = -(-h // strides[0]), -(-w // strides[1])
  expected = n * ho * wo * cout * kh * kw * cin_g
  with cpu_kernels.enabled():
    counted = macs.count_macs(conv, *_abstract(x_shape, k_shape))
    assert (counted.conv, counted.matmul) == (expected, 0)
    # Also inside jit (a pjit call around the convolution).
    loss = lambda x, k: jnp.sum(jax.jit(conv)(x, k))
    assert macs.count_macs(loss, *_abstract(x_shape, k_shape)).total == (
        expected)
    assert cpu_kernels.active()


def test_attention_products_count_at_paper_widths():
  """CSM's q k^T and S v: q and k are zero-padded to the value width for
  one attention call; the count is the paper's N*L*L*d + N*L*L*C."""
  from flax_attn.attention.csm import attend_positions
  n, length, d, c = 2, 16, 4, 32
  counted = macs.count_macs(attend_positions,
                            *_abstract((n, length, d), (n, length, d),
                                       (n, length, c)))
  assert counted.matmul == n * length * length * (d + c)
  dense = lambda x, w: x @ w
  assert macs.count_macs(dense, *_abstract((3, 5), (5, 7))).matmul == 105


def test_pooling_and_scans():
  """A product with a constant matrix (HGA's adaptive pooling) is pooling;
  a scan body counts once per iteration."""
  from flax_attn.attention.hga import adaptive_avg_pool
  pooled = macs.count_macs(lambda x: adaptive_avg_pool(x, 3),
                           *_abstract((2, 16, 16, 8)))
  assert pooled.total == 0

  def scanned(x, w):
    return lax.scan(lambda carry, _: (jnp.tanh(carry @ w), None), x,
                    None, length=5)[0]
  assert macs.count_macs(scanned, *_abstract((3, 4), (4, 4))).total == (
      5 * 3 * 4 * 4)


def test_published_figures_are_shown_beside_measured():
  row = dict(model='hga_resnet50', params=26_656_808, gmacs=4.304,
             xla_gmacs=4.229, published=report.PUBLISHED['hga_resnet50'])
  table = report.format_table([row], 224, 1000)
  line = next(l for l in table.splitlines() if l.startswith('hga_resnet50'))
  assert line.split()[1:6] == ['26.657', '4.304', '26.73', '4.38', '4.229']
  assert 'HGA Table 2: 224x224, 1000 classes' in table


def test_bad_arguments_fail(capsys):
  with pytest.raises(SystemExit):
    report.main(['resnet20', '--image-size', '0'])
  capsys.readouterr()
  # Every name is checked before anything is built: one line, exit 2.
  assert report.main(['resnet20', 'no_such_model', '--no-flops']) == 2
  captured = capsys.readouterr()
  assert captured.out == ''
  assert captured.err.startswith("error: unknown model 'no_such_model'; ")
  assert len(captured.err.strip().splitlines()) == 1


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

"""train.py --compile_for: the train step compiled by the real TPU compiler
(libtpu, installed with the test requirements) for compile-only TPU devices.

The CLI tests run train.py in a subprocess, each under a timeout. Without
libtpu they fail with the CLI's own line saying how to install it.
"""
import importlib.util
import math
import os
import re
import subprocess
import sys

import jax
import chex
import numpy as np
import pytest

import tiny_config
from flax_attn import tpu_fit
from flax_attn.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, 'tests', 'tiny_config.py')


def _require_libtpu():
  assert importlib.util.find_spec('libtpu') is not None, (
      'libtpu (the TPU compiler) is not installed: pip install -r '
      'requirements.txt installs it (jax[tpu])')


def _train_py(*args, timeout=300):
  env = dict(os.environ, PYTHONPATH=ROOT)
  # As users compile: without the test suite's XLA:CPU flags (conftest.py).
  env.pop('XLA_FLAGS', None)
  return subprocess.run(
      [sys.executable, 'train.py', '--config', TINY, *args], cwd=ROOT,
      env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _table(stdout: str):
  rows = {}
  for line in stdout.splitlines():
    key, _, value = line.partition('  ')
    rows[key.strip()] = value.strip()
  return rows


def _mib(text: str) -> float:
  number, unit = re.match(r'([\d.]+) (MiB|GiB)', text).groups()
  return float(number) * (1024 if unit == 'GiB' else 1)


def _tiny_model():
  from flax_attn import data as data_lib  # pylint: disable=g-import-not-at-top
  from flax_attn.models import model_from_config  # pylint: disable=g-import-not-at-top
  config = tiny_config.get_config()
  spec = data_lib.get_dataset_spec(config.dataset)
  shape = (1, config.image_size, config.image_size, spec.channels)
  return config, model_from_config(config, spec.num_classes), shape


def _tiny_arguments_mib(per_device_batch: int) -> float:
  """The least the step's arguments hold per device, unpadded: the
  replicated train state (parameters, BatchNorm statistics, SGD momentum,
  step), the guard (32 losses and 3 scalars) and this device's slice of
  the batch. The TPU pads small arrays to its (8, 128) tiles on top."""
  from flax_attn import train  # pylint: disable=g-import-not-at-top
  from flax_attn.init_rng import init_key  # pylint: disable=g-import-not-at-top
  config, model, shape = _tiny_model()
  tx = train.create_optimizer(config, lambda step: config.learning_rate)
  state = jax.eval_shape(lambda k: train.create_train_state(
      k, model, tx, shape[1:], False), init_key(0))
  state_bytes = sum(x.size * x.dtype.itemsize
                    for x in jax.tree_util.tree_leaves(state))
  guard_bytes = 35 * 4
  batch_bytes = per_device_batch * (math.prod(shape) + 1) * 4
  return (state_bytes + guard_bytes + batch_bytes) / 2**20


def _tiny_forward_flops() -> float:
  """2 x the multiply-adds of one image's forward pass (flax_attn.macs)."""
  from flax_attn import macs  # pylint: disable=g-import-not-at-top
  from flax_attn.init_rng import init_key  # pylint: disable=g-import-not-at-top
  _, model, shape = _tiny_model()
  image = jax.ShapeDtypeStruct(shape, np.float32)
  variables = jax.eval_shape(
      lambda k: model.init(k, np.zeros(shape, np.float32), train=False),
      init_key(0))
  return 2.0 * macs.count_macs(
      lambda v, x: model.apply(v, x, train=False), variables, image).total


def _check_compiled(result, chips, hosts, per_chip):
  _require_libtpu()
  assert result.returncode == 0, result.stderr[-2000:]
  table = _table(result.stdout)
  assert table['topology'].endswith(
      f'{chips} chips, {chips} devices, {hosts} host(s)'), table
  assert table['batch'] == f'32 global, {per_chip} per chip'
  assert _mib(table['arguments / chip']) >= _tiny_arguments_mib(per_chip) - 0.05
  total = _mib(table['total / chip'].split(' of ')[0])
  parts = sum(_mib(table[f'{k} / chip']) for k in
              ('arguments', 'temporaries', 'outputs'))
  donated = _mib(table['outputs / chip'].split('(')[1])
  # total = arguments + outputs - donated + temporaries + code (code > 0)
  assert parts - donated < total < parts - donated + 64, table
  assert table['fits'] == 'yes'
  # The step is the forward pass, the backward (about twice it) and the
  # update: 2-4 x the forward FLOPs counted from the jaxpr.
  ratio = float(table['train-step FLOPs / image'].split()[0]) / (
      _tiny_forward_flops())
  chex.assert_scalar_in(ratio, 2.0, 4.0)


def test_compile_for_single_host():
  _check_compiled(_train_py('--compile_for', 'v5e-1'), 1, 1, 32)


def test_compile_for_two_hosts():
  # v5e:2x4 with the compile-only default of 2x2 chips per host: 2 hosts.
  _check_compiled(_train_py('--compile_for', 'v5e:2x4'), 8, 2, 4)


def test_compile_for_absurd_batch_does_not_fit():
  _require_libtpu()
  result = _train_py('--compile_for', 'v5e-1', '--config.batch_size=8192',
                     '--config.image_size=224')
  assert result.returncode == 2, result.stderr[-2000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith('error: cifar_resnet8 at batch 8192 (8192 per '
                             'device) does not fit v5e-1 (16.00 GiB HBM per '
                             'device): the TPU compiler: '), lines
  needed, available = map(float, re.search(
      r'\(([\d.]+)G\) exceeds available HBM \(([\d.]+)G\)', lines[0]).groups())
  assert needed > 16 > available > 14, lines


def test_compile_for_unknown_topology_and_uneven_batch():
  result = _train_py('--compile_for', 'v5e-3', timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      f"error: unknown TPU topology 'v5e-3'; valid: "
      f'{tpu_fit.valid_topologies()}']
  result = _train_py('--compile_for', 'v5e-8', '--config.batch_size=30',
                     timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      'error: config.batch_size=30 does not divide over the 8 devices of '
      'v5e-8 (v5e:2x4); try 32']


@pytest.mark.parametrize('name, jax_name, chips, bounds', [
    ('v2-8', 'v2:2x2', 4, None),
    ('v3-32', 'v3:4x4', 16, None),
    ('v4-32', 'v4:2x2x4', 16, None),
    ('v5p-8', 'v5p:2x2x1', 4, None),
    ('v5e-1', 'v5e:1x1', 1, (1, 1, 1)),
    ('v5litepod-8', 'v5e:2x4', 8, (2, 4, 1)),
    ('v5e-16', 'v5e:4x4', 16, None),
    ('v6e-8', 'v6e:2x4', 8, (2, 4, 1)),
    ('v5e:2x4', 'v5e:2x4', 8, None),
    ('v6e:1x1', 'v6e:1x1', 1, (1, 1, 1)),
    ('h100-8', '1x1x8', 8, None),
])
def test_parse_topology(name, jax_name, chips, bounds):
  topology = tpu_fit.parse_topology(name)
  assert (topology.jax_name, topology.chips,
          topology.chips_per_host_bounds) == (jax_name, chips, bounds)


@pytest.mark.parametrize('name', ['v5e-3', 'v4-4', 'v7-8', 'v5e:2x2x2',
                                  'v4:2x2', 'h100-3', 'tpu', ''])
def test_parse_topology_rejects(name):
  with pytest.raises(ConfigError, match='unknown TPU topology'):
    tpu_fit.parse_topology(name)


@pytest.mark.parametrize('fixed_mib, per_image_mib, start, expected', [
    (500, 3.0, 32, 5296),    # past the search limit: 4096
    (2000, 40.0, 256, 352),  # 16384 MiB: (16384 - 2000) / 40 = 359.6 -> 352
    (2000, 400.0, 32, 35),   # 35.96 -> 35 (below 64: steps of 1)
    (15000, 400.0, 32, 3),   # the own batch does not fit: halving
])
def test_largest_batch_search(monkeypatch, fixed_mib, per_image_mib, start,
                              expected):
  """The search against a linear memory model, as a compiler would give."""
  hbm = 16 * 2**30
  compiles = []

  class Memory:
    def __init__(self, batch):
      self.argument_size_in_bytes = int(fixed_mib * 2**20)
      self.temp_size_in_bytes = int(per_image_mib * 2**20 * batch)
      self.output_size_in_bytes = self.alias_size_in_bytes = 0
      self.generated_code_size_in_bytes = 0

  def fake_compile(exp, config, global_batch):
    compiles.append(global_batch)
    memory = Memory(global_batch)
    fits = tpu_fit._total(memory) <= hbm
    return tpu_fit._Compiled(memory if fits else None, 0.0, 0.0, 1.0,
                             '' if fits else 'Ran out of memory')

  monkeypatch.setattr(tpu_fit, '_compile', fake_compile)
  first = fake_compile(None, None, start)
  largest, note = tpu_fit._largest_batch(None, None, 1, hbm, start, first,
                                         None)
  assert largest == min(expected, tpu_fit.MAX_BATCH_LIMIT), note
  assert len(compiles) <= 8, compiles  # a few compiles, not a ladder
  fits_at = lambda b: fixed_mib + per_image_mib * b <= 16384
  assert fits_at(largest)
  if largest < tpu_fit.MAX_BATCH_LIMIT:
    assert not fits_at(largest + (8 if largest >= 64 else 1))


def test_no_tpu_start_up_is_quiet():
  """With libtpu installed (the test requirements) and JAX_PLATFORMS unset,
  skip_absent_tpu keeps JAX from starting the TPU runtime on a machine with
  none: CPU devices and no libtpu warnings on stderr."""
  _require_libtpu()
  env = {k: v for k, v in os.environ.items() if k != 'JAX_PLATFORMS'}
  code = ('from flax_attn import tpu_fit; print(tpu_fit.skip_absent_tpu()); '
          'import jax; print(jax.devices()[0].platform)')
  result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120,
                          check=False)
  assert result.returncode == 0, result.stderr
  # Where a GPU is attached JAX's own choice is kept (and it picks the GPU).
  expected = ['None', 'gpu'] if tpu_fit._gpu_attached() else ['cpu', 'cpu']
  assert result.stdout.split() == expected, result
  assert 'TPU' not in result.stderr, result.stderr
  np.testing.assert_equal(result.stderr.strip(), '')

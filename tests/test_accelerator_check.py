"""benchmarks/accelerator_check.py keeps working (issue 21): its tiny CSM case
runs flax_attn's real train step over the 8-device mesh (the blockwise
position attention in two blocks of 288 positions, inside the sharded step)
and compares the compiled memory with the XLA path; its case list builds;
its chip peaks and table."""
import importlib.util
import io
import json
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flax_attn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def check():
  spec = importlib.util.spec_from_file_location(
      'accelerator_check', os.path.join(REPO, 'benchmarks',
                                        'accelerator_check.py'))
  module = importlib.util.module_from_spec(spec)
  sys.modules['accelerator_check'] = module  # its dataclasses look it up
  spec.loader.exec_module(module)
  return module


def test_tiny_csm_case_trains_and_reports(check, tmp_path, capsys,
                                          monkeypatch):
  # The parameters before and after its steps (the step donates its input
  # state: copied to the host first).
  params = {}
  time_steps = check.time_steps

  def recording_time_steps(compiled, state, batch, warmup, steps):
    params['before'] = jax.device_get(state.params)
    out = time_steps(compiled, state, batch, warmup, steps)
    params['after'] = jax.device_get(out[2].params)
    return out

  monkeypatch.setattr(check, 'time_steps', recording_time_steps)
  path = tmp_path / 'check.json'
  assert check.main(['--tiny', '--cases', 'csm_resnet50', '--json',
                     str(path)]) == 0
  # The train step trained: every parameter array moved (SGD with L2 weight
  # decay touches each one), by a finite amount.
  moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))),
                       params['before'], params['after'])
  changes = jax.tree.leaves(moved)
  assert changes and all(math.isfinite(c) and c > 0 for c in changes), moved
  result = json.loads(path.read_text())
  assert result['tiny'] and result['devices'] == len(jax.devices()) == 8
  (row,) = result['rows']
  assert row['case'] == 'csm_resnet50' and row['batch'] == 8
  # 10 classes, fresh weights, one SGD step: the loss is near ln 10.
  assert math.isfinite(row['loss']) and abs(row['loss'] - math.log(10)) < 1
  assert row['images_per_s'] == pytest.approx(8 / row['step_s'])
  # Position attention alone, 2 L^2 (d + C) flops per map (stage 1: 24 x 24
  # positions, C = 16, d = 2; stage 2: 12 x 12, C = 32, d = 4): the count is
  # of every tile, not of one loop iteration.
  attention = 2 * 576 ** 2 * (2 + 16) + 2 * 144 ** 2 * (4 + 32)
  assert attention < row['forward_flops_per_image'] < 2 * attention
  assert row['mfu'] is None  # no known peak for a CPU
  assert 0 < row['temp_bytes'] < row['xla_path']['temp_bytes']
  out = capsys.readouterr().out
  assert '| csm_resnet50 | 96 | 8 |' in out and 'XLA dot_product' in out


def test_cases_build_and_peaks_are_looked_up(check):
  names = set(flax_attn.list_models())
  assert [c.name for c in check.CASES] == [c.name for c in check.TINY_CASES]
  assert {c.model for c in check.CASES} <= names
  for case in check.TINY_CASES:
    model = check.build_model(case, 'bfloat16')
    shapes = jax.eval_shape(lambda m=model, s=case.image_size: m.init(
        jax.random.key(0), jnp.zeros((1, s, s, 3)), train=False))
    assert 'params' in shapes, case.name
  assert check.chip_peak_flops('NVIDIA H100 80GB HBM3') == 989e12
  assert check.chip_peak_flops('NVIDIA A100-SXM4-40GB') == 312e12
  assert check.chip_peak_flops('TPU v5 lite') == 197e12
  assert check.chip_peak_flops('TPU v5p') == 459e12
  assert check.chip_peak_flops('TPU v6 lite') == 918e12
  assert check.chip_peak_flops('cpu') is None
  out = io.StringIO()
  check.print_table([dict(case='mlan_resnet20', skipped='time budget')], out)
  assert out.getvalue().splitlines()[-1].startswith(
      '| mlan_resnet20 | skipped: time budget')

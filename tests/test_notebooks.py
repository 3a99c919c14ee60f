"""notebooks/*.ipynb run top to bottom in SMOKE mode (papermill, the
'parameters' cell convention), offline on CPU, so none can rot.

Each notebook runs in its own python3 kernel (ipykernel; papermill finds it
without an installed kernelspec), with one XLA:CPU device and the suite's
fast-compile flags.
"""
import json
import math
import os
import re

import nbformat
import papermill
import pytest

from conftest import FAST_COMPILE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = ('quickstart', 'attention_maps', 'paper_experiment')
# Where each notebook's runs go, by its own parameter name.
WORKDIR_PARAMETER = {'quickstart': 'WORKDIR', 'attention_maps': 'RUNS',
                     'paper_experiment': 'WORKDIR'}
# What each run must print (its own checks are asserts in the notebook).
EXPECTED = {
    'quickstart': ('training on 1 cpu device', 'top-1 ', 'step 6'),
    'attention_maps': ('se |', 'cbam |', 'attention modules: cbam x3'),
    'paper_experiment': ('resumed from', 'checkpoints: [3, 6]',
                         'mlan_resnet14', "paper: 90.23%"),
}


def _path(name):
  return os.path.join(REPO, 'notebooks', f'{name}.ipynb')


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_is_stored_clean_with_a_parameters_cell(name):
  nb = nbformat.read(_path(name), as_version=4)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == 'code']
  assert 'parameters' in code[0].metadata.get('tags', [])
  assert code[0].source.startswith('SMOKE = False')
  assert all(not c.outputs and c.execution_count is None for c in code)
  assert 'colab.research.google.com/github/' in nb.cells[0].source


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_runs_in_smoke_mode(name, tmp_path, monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', FAST_COMPILE)  # one CPU device
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  out = tmp_path / f'{name}.ipynb'
  papermill.execute_notebook(
      _path(name), str(out), kernel_name='python3', cwd=REPO,
      parameters={'SMOKE': True,
                  WORKDIR_PARAMETER[name]: str(tmp_path / 'runs')},
      execution_timeout=240, progress_bar=False)
  nb = json.loads(out.read_text())
  text = []
  images = 0
  for cell in nb['cells']:
    for output in cell.get('outputs', []):
      text.append(''.join(output.get('text', '')))
      images += 'image/png' in output.get('data', {})
  text = '\n'.join(text)
  for expected in EXPECTED[name]:
    assert expected in text, (expected, text[-3000:])
  assert images >= IMAGES[name], (images, text[-3000:])
  # Every run's printed result: a finite loss near chance level (ln 10 for
  # digits, after a few steps) and a top-1 that is a fraction.
  results = printed_results(text)
  assert len(results) == RUNS[name], text[-3000:]
  for result in results:
    assert 0.0 < result['eval_loss'] < 3 * math.log(10), result
    assert 0.0 <= result['top1'] <= result['top5'] <= 1.0, result
  if name == 'quickstart':  # its evaluation of the same checkpoint
    top1, top5 = (float(v) for v in re.search(
        r'top-1 ([0-9.]+), top-5 ([0-9.]+) on \d+ digits images', text).groups())
    assert top1 == pytest.approx(results[0]['top1'], abs=1e-4)
    assert top5 == pytest.approx(results[0]['top5'], abs=1e-4)
  if name == 'attention_maps':  # both runs' maps were found and drawn
    for attention in ('se', 'cbam'):
      assert re.search(rf'^{attention} \| CAM: \S.*; attention modules: '
                       rf'{attention} x3$', text, re.M), text[-3000:]


# How many results each notebook prints (train_and_evaluate's dict) and the
# pictures it must show (attention_maps: a grid and channel weights for
# each of its two attentions).
RUNS = {'quickstart': 1, 'attention_maps': 2, 'paper_experiment': 1}
IMAGES = {'quickstart': 1, 'attention_maps': 4, 'paper_experiment': 1}
_NUMBER = r'(?:np\.float\d+\()?([-+0-9.eE]+|nan|inf)'


def printed_results(text):
  """The train_and_evaluate dicts a notebook printed, as floats."""
  results = []
  for line in text.splitlines():
    if "'eval_loss'" not in line:
      continue
    results.append({key: float(re.search(rf"'{key}': {_NUMBER}",
                                         line).group(1))
                    for key in ('eval_loss', 'top1', 'top5')})
  return results

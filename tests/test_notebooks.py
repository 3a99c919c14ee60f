"""notebooks/*.ipynb run top to bottom in SMOKE mode (papermill, the
'parameters' cell convention), offline on CPU, so none can rot.

Each notebook runs in its own python3 kernel (ipykernel; papermill finds it
without an installed kernelspec), with one XLA:CPU device and the suite's
fast-compile flags.
"""
import json
import os

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
  assert images >= 1

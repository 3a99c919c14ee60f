"""Every experiment config trains a few steps through the real trainer and
the real tfds path, under `tfds.testing.mock_data`.

Models keep their attention, head and block types but are cut to one block
per stage, narrow stages and small images so each compiles in seconds; the full-size
models are counted parameter by parameter in the per-paper config tests.
"""
import glob
import importlib.util
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from flax_attn import train
from flax_attn.models import ResNet, model_from_config

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'configs')
CONFIGS = sorted(os.path.basename(p) for p in glob.glob(
    os.path.join(CONFIG_DIR, '*.py')) if not p.endswith('__init__.py'))


def load_config(filename):
  spec = importlib.util.spec_from_file_location(
      'cfg_' + filename[:-3], os.path.join(CONFIG_DIR, filename))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def shrink(config):
  config.num_train_steps = 2
  config.batch_size = 8
  config.eval_batch_size = 8
  config.eval_every_steps = 2
  config.checkpoint_every_steps = 2
  config.log_every_steps = 1
  config.progress_bar = False
  config.num_devices = 1  # sharding is tested in test_train.py
  config.pretrained_path = ''
  if config.image_size > 32:
    config.image_size = 32
  model = model_from_config(config, 10)
  if isinstance(model, ResNet):
    stages = len(model.stage_sizes)
    config.model_kwargs.stage_sizes = (1,) * stages
    config.model_kwargs.stage_widths = (16, 32, 64, 128)[:stages]
    config.model_kwargs.stem_width = 16
  return config


def test_every_config_file_is_covered():
  assert len(CONFIGS) >= 15, CONFIGS


@pytest.mark.parametrize('filename', CONFIGS)
def test_config_trains_and_evaluates_under_mock_data(filename, tmp_path):
  config = shrink(load_config(filename))
  with tfds.testing.mock_data(num_examples=16):
    result = train.train_and_evaluate(config, str(tmp_path))
  assert result['step'] == 2
  assert np.isfinite(result['eval_loss'])
  assert result['num_examples'] > 0

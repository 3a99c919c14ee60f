"""Every HGA / MGAN / CSM config loads, builds its model through
`model_from_config`, and the model has the parameters the paper's reading
gives: the plain backbone's count plus the attention's, counted by hand.
Shapes only (jax.eval_shape); no training here."""
import importlib.util
import os

import pytest

import flax_attn
from flax_attn.models import model_from_config
from helpers import model_param_count

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'configs')
NUM_CLASSES = {'cifar10': 10, 'cifar100': 100, 'imagenet2012': 1000,
               'mini_imagenet': 100}
SHAPE = (1, 32, 32, 3)  # parameter counts do not depend on the image size

RESNET50_WIDTHS = [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3
RESNET101_WIDTHS = [256] * 3 + [512] * 4 + [1024] * 23 + [2048] * 3
RESNET18_WIDTHS = [64] * 2 + [128] * 2 + [256] * 2 + [512] * 2


def load_config(name, *args):
  spec = importlib.util.spec_from_file_location(
      name, os.path.join(CONFIG_DIR, f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module, module.get_config(*args)


def base_count(name, num_classes, **kwargs):
  return model_param_count(flax_attn.create_model(name, num_classes, **kwargs),
                           SHAPE)


def built_count(config):
  model = model_from_config(config, NUM_CLASSES[config.dataset])
  return model, model_param_count(model, SHAPE)


# --- attention parameters by hand (see the module docstrings) --------------

def hga_core(c, kernel_sizes=(1, 3, 5, 7), use_mfe=True, use_hap=True,
             use_ee=True):
  pooled = (len(kernel_sizes) * c // 4 if use_mfe else c) * (
      21 if use_hap else 1)
  mfe = sum(k * k for k in kernel_sizes) * c if use_mfe else 0
  return mfe + (pooled * c // 4 + c * c // 4 if use_ee else pooled * c)


def hga_block(c, **switches):
  if c <= 32:
    return hga_core(c, **switches)
  return 32 * c + hga_core(32, **switches) + 32 * c   # HGA(c, 32, c)


def mgan_stage(c, kernels=(3, 5, 7)):
  branches = sum(k * k * c + c + 3 for k in kernels)
  return branches + 2 * c * (c // 16) + c * c + c + len(kernels) * c * c + c


def csm_block(c, position=True, channel=True):
  d = c // 8
  return (2 * c * (c // 16) if channel else 0) + (
      2 * (c * d + d) + c * c + c + 1 if position else 0)


# --- HGA ---------------------------------------------------------------

def test_hga_resnet50_imagenet():
  _, config = load_config('hga_resnet50')
  assert (config.dataset, config.image_size, config.learning_rate,
          tuple(config.lr_boundaries_epochs), config.num_epochs) == (
              'imagenet2012', 224, 0.6, (30, 60, 90), 100)
  _, count = built_count(config)
  assert count == 25_557_032 + sum(hga_block(c) for c in RESNET50_WIDTHS)


def test_hga_resnet110_cifar10():
  _, config = load_config('hga_resnet110_cifar10')
  _, count = built_count(config)
  widths = [16] * 18 + [32] * 18 + [64] * 18
  assert count == base_count('resnet110', 10) + sum(
      hga_block(c) for c in widths)


def test_hga_ablations_tables_5_and_6():
  module, config = load_config('hga_resnet101_ablation')
  base = base_count('resnet101', 1000)
  _, count = built_count(config)  # the default variant, built in full
  assert count == base + sum(hga_block(c, use_mfe=False)
                             for c in RESNET101_WIDTHS)
  for variant, switches in module.VARIANTS.items():
    config = module.get_config(variant)
    model = model_from_config(config, 1000)
    assert model.attn.keywords == switches, variant
    # The block attention itself, on each stage width (cheap to trace).
    per_stage = {c: model_param_count(model.attn(), (1, 7, 7, c))
                 for c in (256, 512, 1024, 2048)}
    for c, n in per_stage.items():
      assert n == hga_block(c, **switches), (variant, c)
  with pytest.raises(ValueError, match='valid: no_mfe'):
    module.get_config('no_such_variant')


# --- MGAN --------------------------------------------------------------

def test_mgan_resnet18_cifar10():
  _, config = load_config('mgan_resnet18_cifar10')
  assert (config.batch_size, config.learning_rate, config.weight_decay,
          tuple(config.lr_boundaries_epochs), config.num_epochs) == (
              64, 0.01, 1e-4, (50,), 100)
  model, count = built_count(config)
  assert model.stem == 'small' and tuple(model.stage_attn_after) == (1, 2, 3)
  assert count == base_count('resnet18', 10, stem='small') + sum(
      mgan_stage(c) for c in (64, 128, 256))


def test_mgan_res2net50_mini_imagenet():
  _, config = load_config('mgan_res2net50_mini_imagenet')
  assert (config.dataset, config.image_size) == ('mini_imagenet', 84)
  model, count = built_count(config)
  assert model.stem == 'imagenet'
  assert count == base_count('res2net50_26w_4s', 100) + sum(
      mgan_stage(c) for c in (256, 512, 1024))


def test_mgan_kernel_sets_table4():
  module, _ = load_config('mgan_res2net18_kernels')
  base = base_count('res2net18', 10, stem='small')
  assert set(module.VARIANTS) == {'s_para1', 's_para2', 's_para3', 's_para4'}
  for variant, kernels in module.VARIANTS.items():
    config = module.get_config(variant)
    model = model_from_config(config, 10)
    assert tuple(model.stage_attn.keywords['kernel_sizes']) == kernels
    if variant == 's_para1':  # one variant built in full
      assert model_param_count(model, SHAPE) == base + sum(
          mgan_stage(c, kernels) for c in (64, 128, 256))
    assert model_param_count(model.stage_attn(), (1, 8, 8, 128)) == (
        mgan_stage(128, kernels))


# --- CSM ---------------------------------------------------------------

def test_csm_resnet50_imagenet():
  _, config = load_config('csm_resnet50_imagenet')
  model, count = built_count(config)
  assert tuple(model.attn.keywords['position_stages']) == (3, 4)
  assert count == 25_557_032 + sum(
      csm_block(c, position=c >= 1024) for c in RESNET50_WIDTHS)


def test_csm_resnet18_cifar100():
  _, config = load_config('csm_resnet18_cifar100')
  model, count = built_count(config)
  assert model.stem == 'small'
  assert count == base_count('resnet18', 100, stem='small') + sum(
      csm_block(c) for c in RESNET18_WIDTHS)


def test_csm_ablations_table1():
  module, _ = load_config('csm_resnet50_ablation')
  expected_modes = {'cam': 'channel_only', 'sam': 'spatial_only',
                    'csm': 'channel_first', 'spatial_first': 'spatial_first'}
  assert module.VARIANTS == expected_modes
  for variant, mode in expected_modes.items():
    model = model_from_config(module.get_config(variant), 1000)
    assert model.attn.keywords['mode'] == mode
    if variant == 'sam':  # one variant built in full
      assert model_param_count(model, SHAPE) == 25_557_032 + sum(
          csm_block(c, position=c >= 1024, channel=False)
          for c in RESNET50_WIDTHS)


def test_every_config_file_is_covered():
  ours = {'hga_resnet50', 'hga_resnet110_cifar10', 'hga_resnet101_ablation',
          'mgan_resnet18_cifar10', 'mgan_res2net50_mini_imagenet',
          'mgan_res2net18_kernels', 'csm_resnet50_imagenet',
          'csm_resnet18_cifar100', 'csm_resnet50_ablation'}
  present = {f[:-3] for f in os.listdir(CONFIG_DIR)
             if f.startswith(('hga_', 'mgan_', 'csm_'))}
  assert present == ours
  for name in ours:  # each docstring holds its command line
    module, _ = load_config(name)
    assert f'python train.py --config configs/{name}.py' in module.__doc__
    assert '--workdir' in module.__doc__


def test_mgan_kernel_sets_per_stage_reading():
  """Table 4's K1, K2, K3 read as the kernels of the three stage modules."""
  module, _ = load_config('mgan_res2net18_kernels')
  config = module.get_config('s_para1_per_stage')
  model = model_from_config(config, 10)
  assert [tuple(o['kernel_sizes']) for o in model.stage_attn_per_stage] == [
      (3,), (3,), (3,)]
  base = base_count('res2net18', 10, stem='small')
  one_branch = lambda c, k: (k * k * c + c + 3 + 2 * c * (c // 16)
                             + 2 * (c * c + c))   # MSA, MLP, Conv1x1, 1x1
  assert model_param_count(model, SHAPE) == base + sum(
      one_branch(c, 3) for c in (64, 128, 256))
  with pytest.raises(ValueError, match='optionally'):
    module.get_config('s_para5_per_stage')

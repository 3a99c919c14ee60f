"""flax_attn.weights / flax_attn.convert: PyTorch ResNet-family checkpoints.

The references are PyTorch models of the same architectures written in
tests/torch_resnets.py after torchvision / timm (torchvision is not installed
here), with random weights and non-trivial BN statistics. Forward equivalence
runs at 64x64 for the ImageNet-50-sized models; the 101/152-layer models are
checked by key and shape only (abstract shapes, no compute). timm's attention
networks (ResNet-D/-T, SE / ECA / SK / GC) run at 40x40, where stages 3 and 4
see odd sizes (5, 3) and the average-pool shortcuts' ceil_mode windows matter.
"""
import functools
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util

import torch_resnets
from flax_attn import create_model, train, weights
from flax_attn import convert as convert_lib
from flax_attn.errors import CheckpointError
from flax_attn.init_rng import init_key
from flax_attn.registry import UnknownNameError

torch.set_num_threads(2)
IMAGE = 64
FORWARD_MODELS = ('resnet18', 'resnet50', 'resnext50_32x4d',
                  'wide_resnet50_2', 'res2net50_26w_4s', 'seresnet50')
SHAPE_ONLY_MODELS = ('resnet34', 'resnet101', 'resnet152', 'resnext101_32x8d',
                     'wide_resnet101_2')
# timm's attention networks (flax_attn/models/zoo/timm_resnets.py and the SK
# models of zoo/comparators.py): logits for one of each stem / attention /
# layout (resnet26d's parts are all in seresnext26d_32x4d), keys and shapes
# for all.
TIMM_IMAGE = 40
TIMM_FORWARD = ('seresnext26d_32x4d', 'ecaresnet26t', 'skresnet18',
                'gcresnet50t')
TIMM_SHAPE_ONLY = ('resnet26d', 'resnet50d', 'resnet101d', 'seresnext50_32x4d',
                   'ecaresnet50d', 'ecaresnet50t', 'ecaresnet101d',
                   'skresnet34', 'skresnext50_32x4d')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.lru_cache(maxsize=None)
def torch_reference(name, image=IMAGE, stats_batch=2):
  """(state dict, NHWC images, PyTorch logits) of a randomised model."""
  with torch.device('meta'):  # skip PyTorch's default init: randomize sets all
    model = torch_resnets.MODELS[name]()
  model = torch_resnets.randomize(model.to_empty(device='cpu'), seed=1,
                                  batch=stats_batch, size=image)
  images = torch.randn(2, 3, image, image,
                       generator=torch.Generator().manual_seed(2))
  with torch.no_grad():
    logits = model(images).numpy()
  return (model.state_dict(), images.numpy().transpose(0, 2, 3, 1), logits)


def assert_logits_close(ours, theirs):
  # 1e-4 relative to the logits' scale (float32 rounding through 50 layers).
  scale = float(np.abs(theirs).max())
  np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-4,
                             atol=1e-4 * scale)


def apply(model, variables, images):
  # One compilation is cheaper than the op-by-op compilations of eager mode.
  return jax.jit(functools.partial(model.apply, train=False))(variables,
                                                              images)


def flat(tree):
  return traverse_util.flatten_dict(tree, sep='/')


@pytest.mark.parametrize('name', FORWARD_MODELS)
def test_logits_match_pytorch(name):
  state_dict, images, expected = torch_reference(name)
  variables, report = weights.import_torch(name, state_dict,
                                           image_size=IMAGE)
  # Every array of the model comes from the file, every file key is used.
  want = {k for k in state_dict if not k.endswith('num_batches_tracked')}
  assert set(report.unused) == set() and not report.fresh
  assert len(report.loaded) == len(want)
  logits = apply(create_model(name), variables, images)
  chex.assert_shape(logits, (2, 1000))
  assert_logits_close(logits, expected)


@pytest.mark.parametrize('name', TIMM_FORWARD)
def test_timm_attention_networks_logits_match(name):
  # BN statistics of 8 images: SK's attention BN normalises pooled vectors,
  # whose statistics over 2 images make a badly conditioned network.
  state_dict, images, expected = torch_reference(name, TIMM_IMAGE, 8)
  variables, report = weights.import_torch(name, state_dict,
                                           image_size=TIMM_IMAGE)
  want = {k for k in state_dict if not k.endswith('num_batches_tracked')}
  assert not report.unused and not report.fresh
  assert len(report.loaded) == len(want)
  logits = apply(create_model(name), variables, images)
  chex.assert_shape(logits, (2, 1000))
  assert_logits_close(logits, expected)


def random_state_dict(name, seed=0):
  """Random arrays of the PyTorch reference's keys and shapes (no compute)."""
  with torch.device('meta'):
    reference = torch_resnets.MODELS[name]()
  rng = np.random.default_rng(seed)
  return {k: rng.standard_normal(tuple(v.shape)).astype(np.float32)
          for k, v in reference.state_dict().items()
          if not k.endswith('num_batches_tracked')}


def test_timm_layouts_of_single_arrays():
  """Deep stem, avg_down shortcut, ECA's Conv1d, SK and ByobNet GC keys."""
  sd = random_state_dict('ecaresnet26t')
  p = flat(weights.from_torch('ecaresnet26t', sd, image_size=IMAGE)['params'])
  np.testing.assert_array_equal(p['conv_stem2/kernel'],
                                sd['conv1.3.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(p['bn_stem1/scale'], sd['conv1.1.weight'])
  np.testing.assert_array_equal(p['bn_stem/bias'], sd['bn1.bias'])
  np.testing.assert_array_equal(p['stage3_block0/shortcut/conv/kernel'][0, 0],
                                sd['layer3.0.downsample.1.weight'][:, :, 0,
                                                                   0].T)
  np.testing.assert_array_equal(p['stage4_block1/attn/conv/kernel'][:, 0, 0],
                                sd['layer4.1.se.conv.weight'][0, 0])
  chex.assert_shape(p['stage4_block1/attn/conv/kernel'], (7, 1, 1))
  gc_sd = random_state_dict('gcresnet50t')
  gc = flat(weights.from_torch('gcresnet50t', gc_sd,
                               image_size=IMAGE)['params'])
  np.testing.assert_array_equal(
      gc['stage2_block3/attn/transform_conv1/kernel'],
      gc_sd['stages.1.3.attn.mlp_add.fc1.weight'][:, :, 0, 0].T)
  np.testing.assert_array_equal(gc['stage2_block3/attn/transform_ln/scale'],
                                gc_sd['stages.1.3.attn.mlp_add.norm.weight'])
  np.testing.assert_array_equal(gc['head/fc/bias'], gc_sd['head.fc.bias'])
  sk_sd = random_state_dict('skresnet18')
  sk = flat(weights.from_torch('skresnet18', sk_sd,
                               image_size=IMAGE)['params'])
  np.testing.assert_array_equal(
      sk['stage2_block0/conv1/fc_select/kernel'],
      sk_sd['layer2.0.conv1.attn.fc_select.weight'][:, :, 0, 0].T)
  np.testing.assert_array_equal(
      sk['stage2_block0/conv1/path1_conv/kernel'],
      sk_sd['layer2.0.conv1.paths.1.conv.weight'].transpose(2, 3, 1, 0))


def test_plain_resnet_d_file_gives_eca_fresh_and_byobnet_heads_are_new():
  shapes = weights.torch_shapes('resnet50d', image_size=IMAGE)
  zeros = {k: np.zeros(v, np.float32) for k, v in shapes.items()}
  _, report = weights.import_torch('ecaresnet50d', zeros, init_fresh=False,
                                   image_size=IMAGE)
  assert len(report.loaded) == len(shapes) and not report.unused
  assert sorted(report.fresh) == sorted(
      f'params/stage{s}_block{b}/attn/conv/kernel'
      for s, n in zip((1, 2, 3, 4), (3, 4, 6, 3)) for b in range(n))
  # ByobNet's classifier is head.fc: another class count makes it new.
  _, report = weights.import_torch('gcresnet50t',
                                   random_state_dict('gcresnet50t'),
                                   num_classes=10, init_fresh=False,
                                   image_size=IMAGE)
  assert report.unused == ('head.fc.weight', 'head.fc.bias')
  assert report.fresh == ('params/head/fc/kernel', 'params/head/fc/bias')


def test_layout_conversion_of_single_arrays():
  """Conv OIHW -> HWIO, linear (out, in) -> (in, out), BN statistics."""
  state_dict, _, _ = torch_reference('seresnet50')
  variables = weights.from_torch('seresnet50', state_dict)
  p, s = variables['params'], variables['batch_stats']
  w = state_dict['layer2.0.conv2.weight'].numpy()
  np.testing.assert_array_equal(p['stage2_block0']['conv2']['kernel'],
                                w.transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(p['head']['fc']['kernel'],
                                state_dict['fc.weight'].numpy().T)
  np.testing.assert_array_equal(
      p['stage1_block2']['attn']['fc1']['kernel'],
      state_dict['layer1.2.se.fc1.weight'].numpy()[:, :, 0, 0].T)
  np.testing.assert_array_equal(
      p['stage3_block0']['shortcut']['bn']['scale'],
      state_dict['layer3.0.downsample.1.weight'].numpy())
  np.testing.assert_array_equal(
      s['stage4_block2']['bn3']['var'],
      state_dict['layer4.2.bn3.running_var'].numpy())
  np.testing.assert_array_equal(
      s['bn_stem']['mean'], state_dict['bn1.running_mean'].numpy())


@functools.lru_cache(maxsize=None)
def torch_shapes(name):
  return weights.torch_shapes(name, image_size=IMAGE)  # shapes: any size


@pytest.mark.parametrize('name', FORWARD_MODELS + SHAPE_ONLY_MODELS +
                         TIMM_FORWARD + TIMM_SHAPE_ONLY)
def test_key_and_shape_mapping_covers_the_pytorch_model(name):
  with torch.device('meta'):  # shapes only, no memory, no compute
    reference = torch_resnets.MODELS[name]()
  expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()
              if not k.endswith('num_batches_tracked')}
  assert torch_shapes(name) == expected


def test_fcn_head_takes_the_linear_classifier():
  """fcn_resnet50's 1x1 conv head is fc as a conv: same logits."""
  state_dict, images, expected = torch_reference('resnet50')
  variables = weights.from_torch('fcn_resnet50', state_dict)
  chex.assert_shape(variables['params']['head']['classifier']['kernel'],
                    (1, 1, 2048, 1000))
  logits = apply(create_model('fcn_resnet50'), variables, images)
  assert_logits_close(logits, expected)


ATTENTION_BACKBONES = (('hga_resnet50', 'resnet50'),
                       ('csca_resnet50', 'resnet50'),
                       ('csm_resnet50', 'resnet50'),
                       ('mgan_res2net50', 'res2net50_26w_4s'))


@pytest.mark.parametrize('name,backbone', ATTENTION_BACKBONES)
def test_attention_models_take_their_backbones_checkpoint(name, backbone):
  assert weights.torch_shapes(name) == torch_shapes(backbone)


def test_attention_model_reports_what_it_loaded():
  state_dict, _, _ = torch_reference('resnet50')
  variables, report = weights.import_torch(
      'hga_resnet50', state_dict, num_classes=10, init_fresh=False)
  abstract = flat(jax.eval_shape(lambda: create_model(
      'hga_resnet50', num_classes=10).init(
          jax.random.key(0), jnp.zeros((1, IMAGE, IMAGE, 3)), train=False)))
  backbone = [k for k in abstract if '/attn/' not in k and '/head/' not in k]
  attn = [k for k in abstract if '/attn/' in k]
  assert len(backbone) == 265 and len(attn) == 128
  assert sorted(report.loaded) == sorted(backbone)
  assert sorted(report.fresh) == sorted(attn + ['params/head/fc/bias',
                                                'params/head/fc/kernel'])
  assert report.unused == ('fc.weight', 'fc.bias')
  # Without init_fresh the variables hold exactly the loaded arrays.
  assert sorted(flat(variables)) == sorted(backbone)
  np.testing.assert_array_equal(
      flat(variables)['params/stage3_block5/conv2/kernel'],
      state_dict['layer3.5.conv2.weight'].numpy().transpose(2, 3, 1, 0))
  assert report.summary() == (
      'hga_resnet50: loaded 265 arrays from the checkpoint, 130 left to '
      'fresh initialisation (17 modules: stage1_block0/attn, '
      'stage1_block1/attn, stage1_block2/attn, stage2_block0/attn, ...), '
      '2 checkpoint keys unused (fc.weight, fc.bias)')
  # The class count of the file: its head is loaded too.
  _, kept = weights.import_torch('hga_resnet50', state_dict, init_fresh=False)
  assert 'params/head/fc/kernel' in kept.loaded and not kept.unused
  assert len(kept.fresh) == 128


def test_plain_resnet_file_gives_an_se_model_fresh_se_modules():
  state_dict, _, _ = torch_reference('resnet50')
  _, report = weights.import_torch('seresnet50', state_dict, init_fresh=False)
  assert len(report.loaded) == 267 and len(report.fresh) == 16 * 4
  assert all('/attn/fc' in k for k in report.fresh)
  # An SE file with one SE array missing is an error, not a fresh module.
  se_file, _, _ = torch_reference('seresnet50')
  with pytest.raises(CheckpointError, match="no key 'layer2.3.se.fc2.bias'"):
    weights.from_torch('seresnet50',
                       _tweak(se_file, layer2__3__se__fc2__bias=None))


def test_fresh_arrays_are_the_models_own_initialisation():
  # A 4-block, narrow ECA-ResNet-18 (create_model overrides pass through)
  # keeps the two init compilations cheap; the file is random numpy arrays.
  small = dict(stage_sizes=(1, 1, 1, 1), stage_widths=(8, 16, 32, 64),
               stem_width=8)
  rng = np.random.default_rng(0)
  state_dict = {k: rng.standard_normal(shape).astype(np.float32)
                for k, shape in weights.torch_shapes('resnet18',
                                                     **small).items()}
  variables, report = weights.import_torch(
      'eca_resnet18', state_dict, num_classes=10, seed=3, image_size=32,
      **small)
  ours = flat(variables)
  assert sorted(ours) == sorted(report.loaded + report.fresh)
  assert len(report.loaded) == len(state_dict) - 2  # all but the old head
  assert report.initialised and 'freshly initialised' in report.summary()
  model = create_model('eca_resnet18', num_classes=10, **small)
  images = jnp.zeros((1, 32, 32, 3))
  abstract = flat(jax.eval_shape(model.init, jax.random.key(3), images))
  assert sorted(abstract) == sorted(ours)
  assert report.fresh and all('/attn/' in k or '/head/' in k
                              for k in report.fresh)
  # Only the fresh arrays leave the jitted init: XLA drops the other draws.
  own = jax.jit(lambda key: {k: v for k, v in flat(model.init(
      key, images, train=False)).items() if k in report.fresh})(
          init_key(3))
  assert sorted(own) == sorted(report.fresh)
  for key in report.fresh:
    np.testing.assert_array_equal(ours[key], own[key])
  np.testing.assert_array_equal(ours['batch_stats/stage4_block0/bn2/mean'],
                                state_dict['layer4.0.bn2.running_mean'])


def _tweak(state_dict, **changes):
  out = dict(state_dict)
  for key, value in changes.items():
    key = key.replace('__', '.')
    if value is None:
      del out[key]
    else:
      out[key] = value
  return out


@pytest.mark.parametrize('changes,message', [
    (dict(layer2__0__conv1__weight=torch.zeros(128, 64, 1, 1)),
     "checkpoint key 'layer2.0.conv1.weight' has shape (128, 64, 1, 1); "
     "model 'resnet18' needs (128, 64, 3, 3) for "
     "params/stage2_block0/conv1/kernel"),
    (dict(layer3__1__bn2__running_var=None),
     "the checkpoint has no key 'layer3.1.bn2.running_var' (shape (256,)) "
     "that model 'resnet18' needs for batch_stats/stage3_block1/bn2/var"),
    (dict(layer1__0__se__fc1__weight=torch.zeros(8, 64, 1, 1)),
     "checkpoint key 'layer1.0.se.fc1.weight' (shape (8, 64, 1, 1)) has no "
     "place in model 'resnet18'"),
])
def test_keys_or_shapes_that_do_not_fit_fail_in_one_line(changes, message):
  state_dict, _, _ = torch_reference('resnet18')
  with pytest.raises(CheckpointError) as e:
    weights.from_torch('resnet18', _tweak(state_dict, **changes))
  assert str(e.value) == message


def test_another_architecture_fails_on_its_first_key():
  resnet18, _, _ = torch_reference('resnet18')
  with pytest.raises(CheckpointError, match=r"'layer1\.0\.conv1\.weight' has "
                     r"shape \(64, 64, 3, 3\); model 'resnet50' needs "
                     r"\(64, 64, 1, 1\)"):
    weights.from_torch('resnet50', resnet18)


def test_unused_keys_are_reported_when_not_strict():
  state_dict, _, _ = torch_reference('resnet18')
  extra = _tweak(state_dict, extra__weight=torch.zeros(3))
  _, report = weights.import_torch('resnet18', extra, strict=False)
  assert report.unused == ('extra.weight',)


def test_unknown_model_and_missing_head_fail_in_one_line():
  state_dict, _, _ = torch_reference('resnet18')
  with pytest.raises(UnknownNameError) as e:
    weights.from_torch('resnet181', state_dict)
  assert str(e.value).startswith("unknown model 'resnet181'; did you mean "
                                "'resnet18'")
  assert '\n' not in str(e.value)
  headless = _tweak(state_dict, fc__weight=None, fc__bias=None)
  with pytest.raises(CheckpointError, match='no classifier'):
    weights.from_torch('resnet18', headless)


class _Payload:
  """Unpickling this would create a file: the test checks it never does."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (open, (self.marker, 'w'))


def test_pickle_with_arbitrary_objects_is_refused(tmp_path):
  marker = str(tmp_path / 'was_unpickled')
  path = str(tmp_path / 'evil.pth')
  torch.save({'state_dict': {'conv1.weight': torch.zeros(1)},
              'payload': _Payload(marker)}, path)
  with pytest.raises(CheckpointError) as e:
    weights.load_state_dict(path)
  assert 'refusing to load it' in str(e.value)
  assert '\n' not in str(e.value)
  assert not os.path.exists(marker)


def test_files_read_safely(tmp_path):
  from safetensors.torch import save_file  # pylint: disable=g-import-not-at-top
  state_dict, _, _ = torch_reference('resnet18')
  expected = weights.from_torch('resnet18', state_dict)
  # A training checkpoint: wrapped, DataParallel prefix, extra plain values.
  wrapped = str(tmp_path / 'train.pth')
  torch.save({'epoch': 3, 'state_dict': {f'module.{k}': v
                                         for k, v in state_dict.items()}},
             wrapped)
  safetensors = str(tmp_path / 'resnet18.safetensors')
  save_file(dict(state_dict), safetensors)
  for path in (wrapped, safetensors):
    chex.assert_trees_all_equal(
        weights.from_torch('resnet18', weights.load_state_dict(path)),
        expected)
  # bfloat16 files (no numpy dtype) are read too.
  save_file({'w': torch.tensor([1.5, -2.25]).bfloat16()},
            str(tmp_path / 'bf16.safetensors'))
  np.testing.assert_array_equal(
      np.asarray(weights.load_state_dict(
          str(tmp_path / 'bf16.safetensors'))['w'], np.float32), [1.5, -2.25])
  for name, message in (('missing.pth', 'does not exist'),
                        ('weights.npz', 'unknown checkpoint file type')):
    if name.endswith('npz'):
      open(tmp_path / name, 'w').close()
    with pytest.raises(CheckpointError, match=message):
      weights.load_state_dict(str(tmp_path / name))


def _zeros_state(model_name, num_classes):
  variables = jax.eval_shape(lambda: create_model(
      model_name, num_classes=num_classes).init(
          jax.random.key(0), jnp.zeros((1, IMAGE, IMAGE, 3)), train=False))
  zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype),
                                 variables)
  return train.TrainState(step=jnp.zeros((), jnp.int32),
                          params=zeros['params'],
                          batch_stats=zeros['batch_stats'], opt_state=(),
                          ema_params={})


def test_cli_output_is_what_train_load_pretrained_takes(tmp_path, capsys):
  state_dict, _, _ = torch_reference('resnet18')
  source = str(tmp_path / 'resnet18.pth')
  torch.save(state_dict, source)
  out = str(tmp_path / 'resnet18_flax')
  assert convert_lib.main(['--model', 'resnet18', source, out]) == 0
  printed = capsys.readouterr().out
  assert 'resnet18: loaded 102 arrays' in printed
  state, line = train.load_pretrained(_zeros_state('resnet18', 1000), out)
  assert line == f'pretrained {out}: loaded 102 arrays, 0 freshly initialised'
  chex.assert_trees_all_equal(
      {'params': state.params, 'batch_stats': state.batch_stats},
      weights.from_torch('resnet18', state_dict))
  # An existing output is not overwritten without --force.
  assert convert_lib.main(['--model', 'resnet18', source, out]) == 2
  assert 'exists; pass --force' in capsys.readouterr().err


def test_cli_attention_model_leaves_attention_to_training(tmp_path, capsys):
  """Only the file's arrays are written: train initialises attention and
  the new head itself, and its report says so."""
  state_dict, _, _ = torch_reference('resnet50')
  source = str(tmp_path / 'resnet50.safetensors')
  from safetensors.torch import save_file  # pylint: disable=g-import-not-at-top
  save_file(dict(state_dict), source)
  out = str(tmp_path / 'csca')
  assert convert_lib.main(['--model', 'csca_resnet50', source, out,
                           '--num-classes', '200']) == 0
  assert 'csca_resnet50: loaded 265 arrays' in capsys.readouterr().out
  state, line = train.load_pretrained(_zeros_state('csca_resnet50', 200), out)
  fresh = len(flat(state.params)) + len(flat(state.batch_stats)) - 265
  assert line.startswith(f'pretrained {out}: loaded 265 arrays, {fresh} '
                         'freshly initialised'), line
  np.testing.assert_array_equal(
      state.params['stage1_block0']['conv1']['kernel'],
      state_dict['layer1.0.conv1.weight'].numpy().transpose(2, 3, 1, 0))
  assert not np.any(state.params['stage1_block0']['attn']['spatial']['conv']
                    ['kernel'])


def test_cli_errors_are_one_line(tmp_path, capsys):
  missing = str(tmp_path / 'x.safetensors')
  run = subprocess.run(
      [sys.executable, '-m', 'flax_attn.convert', '--model', 'resnet5',
       missing, str(tmp_path / 'out')],
      capture_output=True, text=True, cwd=REPO, timeout=120,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert run.returncode == 2
  [line] = run.stderr.strip().splitlines()
  assert line.startswith("error: unknown model 'resnet5'; did you mean"), line
  assert convert_lib.main(['--model', 'resnet18', missing,
                           str(tmp_path / 'out')]) == 2
  assert capsys.readouterr().err == (
      f"error: checkpoint file '{missing}' does not exist\n")


def test_fine_grained_config_without_weights_warns_in_one_line():
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(
      'csca_resnet50_cub', os.path.join(REPO, 'configs',
                                        'csca_resnet50_cub.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  assert train.no_pretrained_warning(config) == (
      'warning: caltech_birds2011 trains from scratch (no '
      'config.pretrained_path); fine-grained recipes start from ImageNet '
      'weights: python -m flax_attn.convert --model csca_resnet50 '
      'CHECKPOINT.pth OUT_DIR, then --config.pretrained_path=OUT_DIR')
  # The config's docstring documents that command.
  assert 'python -m flax_attn.convert --model csca_resnet50' in module.__doc__
  config.pretrained_path = 'pretrained/csca_resnet50'
  assert train.no_pretrained_warning(config) is None
  config.pretrained_path, config.dataset = '', 'cifar10'
  assert train.no_pretrained_warning(config) is None

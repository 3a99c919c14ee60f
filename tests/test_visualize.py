"""flax_attn.visualize and flax_attn.plot on two tiny trained workdirs.

Two runs (4 steps each, batch 16, width 4, digits), each trained once per
session: an SE-ResNet-8 with the GAP + linear head (the quick start's kind
of model) and a CBAM-ResNet-8 with the FCN head. The maps are checked against
`extract_features` run here independently, the CAM against Zhou et al.'s
formula in NumPy, the upsampling against a NumPy bilinear reference, and the
drawn pixels against the colour map of those normalised values.
"""
import fcntl
import os
import subprocess
import sys

import chex
import jax
import matplotlib
import matplotlib.image
import numpy as np
import pytest

import tiny_config as tiny_config_file
from flax_attn import (create_model, extract_features, init_key, list_attention,
                       train)
from flax_attn import data as data_lib
from flax_attn import plot as plot_lib
from flax_attn import visualize as vz
from flax_attn.attention import NotABlockAttentionError
from flax_attn.errors import CheckpointError, ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_IMAGES = 3


def tiny_config(**overrides):
  config = tiny_config_file.get_config()
  config.batch_size = 16
  config.eval_batch_size = 100
  config.num_train_steps = 4
  config.lr_schedule = 'constant'
  config.log_every_steps = 2
  config.eval_every_steps = 4
  config.checkpoint_every_steps = 4
  config.compilation_cache_dir = ''
  config.num_devices = 1
  for key, value in overrides.items():
    config[key] = value
  return config


RUNS = {'se': dict(attn='se'), 'cbam_fcn': dict(attn='cbam', head='fcn')}


def trained_run(tmp_path_factory, name):
  """(config, workdir) of run `name`, trained once per test session.

  Under pytest-xdist each worker has its own module fixtures; the workdir
  lives in the session's shared temp folder behind a file lock, so the
  first worker that needs a run trains it and the other reuses it.
  """
  config = tiny_config(**RUNS[name])
  base = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    base = base.parent / ('runs-' + os.environ.get('PYTEST_XDIST_TESTRUNUID',
                                                   'shared'))
  workdir = base / name
  base.mkdir(parents=True, exist_ok=True)
  with open(base / f'{name}.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (workdir / 'done').exists():
      train.train_and_evaluate(config, str(workdir))
      (workdir / 'done').write_text('trained')
  return config, str(workdir)


@pytest.fixture(scope='module')
def se_run(tmp_path_factory):
  """An SE-ResNet-8 with GAP + linear head (the quick start's kind)."""
  return trained_run(tmp_path_factory, 'se')


@pytest.fixture(scope='module')
def cbam_run(tmp_path_factory):
  """A CBAM-ResNet-8 with the FCN head."""
  return trained_run(tmp_path_factory, 'cbam_fcn')


def restored(config, workdir):
  """The restored model's maps, and its extract_features on the same eval
  images computed here, apart from flax_attn.visualize."""
  exp, state, _ = train.restore_state(config, workdir)
  model = exp.model
  variables = jax.device_get(state.eval_variables(False))
  batch = vz.eval_images(config, NUM_IMAGES)
  feats = jax.device_get(jax.jit(lambda v, x: extract_features(model, v, x))(
      variables, batch['image']))
  spec = data_lib.get_dataset_spec(config.dataset)
  maps = vz.compute_maps(model, variables, batch['image'],
                         labels=batch['label'], mean=spec.mean, std=spec.std)
  return maps, feats, variables


def bilinear_reference(maps, size):
  """Half-pixel-centre bilinear upsampling with clamped edges, in NumPy."""
  maps = np.asarray(maps, np.float64)

  def axis_weights(n_in, n_out):
    coords = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0,
                     n_in - 1)
    low = np.floor(coords).astype(int)
    high = np.minimum(low + 1, n_in - 1)
    w = np.zeros((n_out, n_in))
    w[np.arange(n_out), low] += 1 - (coords - low)
    w[np.arange(n_out), high] += coords - low
    return w

  rows = axis_weights(maps.shape[1], size[0])
  cols = axis_weights(maps.shape[2], size[1])
  return np.einsum('ih,nhw,jw->nij', rows, maps, cols)


def test_cbam_fcn_maps_are_extract_features_values_and_drawn_as_such(
    cbam_run, tmp_path):
  config, workdir = cbam_run
  maps, feats, _ = restored(config, workdir)
  pred = np.argmax(feats['logits'], -1)
  chex.assert_trees_all_close(maps.predictions, pred)
  # The FCN head's own map, of the predicted class.
  chex.assert_trees_all_close(
      maps.cam, np.stack([feats['cam'][n, :, :, k] for n, k in
                          enumerate(pred)]), rtol=1e-5, atol=1e-6)
  assert 'FCN' in maps.cam_source
  # Every CBAM spatial gate, unchanged; channel gates as (N, C).
  assert list(maps.spatial) == [f'stage{s}_block0/attn/spatial_map'
                                for s in (1, 2, 3)]
  for name, value in maps.spatial.items():
    chex.assert_trees_all_close(value, feats[name][..., 0], rtol=1e-5,
                                atol=1e-6)
  chex.assert_trees_all_close(
      maps.channel['stage2_block0/attn/channel_weights'],
      feats['stage2_block0/attn/channel_weights'][:, 0, 0, :], rtol=1e-5,
      atol=1e-6)
  assert maps.attention_modules == {f'stage{s}_block0/attn': 'cbam'
                                    for s in (1, 2, 3)}
  assert maps.nothing_to_draw == []

  # What the picture colours: the bilinear upsampling, min-max normalised.
  size = vz.display_size(maps)
  assert size == (96, 96)
  raw = feats['stage2_block0/attn/spatial_map'][..., 0]     # 4 x 4
  up = bilinear_reference(raw, size)
  low = up.min(axis=(1, 2), keepdims=True)
  expected = (up - low) / (up.max(axis=(1, 2), keepdims=True) - low)
  hot = vz.heat(maps.spatial['stage2_block0/attn/spatial_map'], size)
  np.testing.assert_allclose(hot, expected, atol=2e-5)
  assert hot.min() == 0.0 and hot.max() == 1.0

  # The drawn panel holds exactly (1 - a) image + a jet(heat).
  fig = vz.image_figure(maps, 1)
  panel = [ax for ax in fig.axes if ax.get_title() ==
           'stage2_block0\nspatial_map'][0]
  drawn = np.asarray(panel.images[0].get_array())
  image = vz.picture(maps, 1, size)
  jet = matplotlib.colormaps['jet']
  for (r, c) in ((0, 0), (40, 70), (95, 3), (50, 50)):
    want = (1 - vz.DEFAULT_ALPHA) * image[r, c] + vz.DEFAULT_ALPHA * np.asarray(
        jet(expected[1, r, c]))[:3]
    np.testing.assert_allclose(drawn[r, c], want, atol=2e-3)
  # The colour bar beside it is in the map's units.
  limits = [ax.get_ylim() for ax in fig.axes if ax.get_label() ==
            '<colorbar>']
  assert any(np.allclose(lim, (up[1].min(), up[1].max()), atol=1e-5)
             for lim in limits), limits

  files = vz.write_pictures(maps, str(tmp_path / 'pictures'), 'cbam')
  names = sorted(os.path.basename(f) for f in files)
  assert names == ['channels.png', 'grid.png', 'image0.png', 'image1.png',
                   'image2.png', 'maps.txt']
  for path in files:
    if path.endswith('.png'):
      pixels = matplotlib.image.imread(path)
      assert pixels.shape[0] > 200 and pixels[..., :3].std() > 0.05, path


def test_visualize_cli_on_the_quickstart_like_run_and_zhou_cam(se_run,
                                                               tmp_path):
  config, workdir = se_run
  out = tmp_path / 'pictures'
  proc = subprocess.run(
      [sys.executable, '-m', 'flax_attn.visualize', '--config',
       os.path.join(REPO, 'tests', 'tiny_config.py'), '--workdir', workdir,
       '--out', str(out), '--num_images', '2', '--split', 'test',
       '--config.num_devices=1', '--config.cpu_devices=0'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'wrote 5 files' in proc.stdout
  assert sorted(os.listdir(out)) == ['channels.png', 'grid.png',
                                     'image0.png', 'image1.png', 'maps.txt']
  summary = (out / 'maps.txt').read_text()
  assert 'CAM (Zhou et al. 2016) from stage3' in summary
  assert 'channel stage3_block0/attn/channel_weights 16 channels' in summary

  # Zhou et al.: M_k = sum_c w_ck f_c over the last stage; its mean plus the
  # bias is the logit, which checks the kernel's orientation too.
  maps, feats, variables = restored(config, workdir)
  fc = variables['params']['head']['fc']
  cams = np.einsum('nhwc,ck->nhwk', feats['stage3'], fc['kernel'])
  pred = np.argmax(feats['logits'], -1)
  chex.assert_trees_all_close(
      maps.cam, cams[np.arange(NUM_IMAGES), :, :, pred], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(cams.mean(axis=(1, 2)) + fc['bias'],
                             feats['logits'], rtol=1e-4, atol=1e-4)
  assert maps.spatial == {}  # SE is channel-only: bars, no overlay
  for s in (1, 2, 3):
    key = f'stage{s}_block0/attn/channel_weights'
    chex.assert_trees_all_close(maps.channel[key], feats[key][:, 0, 0, :],
                                rtol=1e-5, atol=1e-6)
  fig = vz.channel_figure(maps)
  heights = [p.get_height() for p in fig.axes[0].patches]
  np.testing.assert_allclose(
      heights, maps.channel['stage1_block0/attn/channel_weights'].mean(0),
      rtol=1e-6)


def test_visualize_errors_are_one_line(tmp_path):
  config = tiny_config()
  with pytest.raises(ConfigError, match="--split='validation' is not a split "
                     "of 'digits'; valid: test, train"):
    vz.eval_images(config, 2, 'validation')
  with pytest.raises(ConfigError, match='--query'):
    vz._parse_query('2,0.5')
  with pytest.raises(CheckpointError, match='no checkpoint in'):
    vz.maps_from_workdir(config, str(tmp_path), 2)


def test_plot_overlays_two_runs(se_run, cbam_run, tmp_path):
  workdirs = [se_run[1], cbam_run[1]]
  fig = plot_lib.curves_figure(workdirs, ['se', 'cbam'])
  loss_ax = fig.axes[0]
  rows = plot_lib.read_metrics(workdirs[1])
  want = [r['train_loss'] for r in rows if 'train_loss' in r]
  lines = {l.get_label(): l for l in loss_ax.lines}
  assert set(lines) == {'se train', 'se eval', 'cbam train', 'cbam eval'}
  np.testing.assert_allclose(lines['cbam train'].get_ydata(), want)
  np.testing.assert_allclose(lines['cbam train'].get_xdata(), [2, 4])
  assert [l.get_label() for l in fig.axes[2].lines] == ['se', 'cbam']  # lr
  out = tmp_path / 'curves.png'
  assert plot_lib.main(workdirs + ['--out', str(out)]) == 0
  assert matplotlib.image.imread(str(out))[..., :3].std() > 0.05
  assert plot_lib.main([str(tmp_path / 'nothing')]) == 2


def _abstract_maps(model):
  """compute_maps' classification on zeros of the features' shapes (traced,
  not compiled): which maps a model yields."""
  images = np.zeros((2, 8, 8, 1), np.float32)
  capture = vz.AttentionCapture()

  def run(x):
    variables = model.init(init_key(0), x, train=False)
    return variables, extract_features(model, variables, x, capture=capture)

  shapes = jax.eval_shape(run, images)
  variables, feats = jax.tree_util.tree_map(
      lambda s: np.zeros(s.shape, np.float32), shapes)
  return vz.maps_from_features(feats, variables, capture, images)


def test_every_attention_is_drawn_or_named():
  for name in list_attention():
    try:
      model = create_model('cifar_resnet8', 10, attn=name, width=8)
    except NotABlockAttentionError:  # SK replaces the 3x3 conv
      model = create_model('cifar_resnet8', 10, block='sk_basic', width=8)
    maps = _abstract_maps(model)
    assert maps.cam is not None, name
    assert maps.spatial or maps.channel, name
    assert maps.nothing_to_draw == [], (name, maps.nothing_to_draw)
    if name in ('se', 'eca', 'hga', 'ca'):
      assert not maps.spatial and len(maps.channel) == 3, name
    if name in ('nonlocal', 'csm'):
      assert len(maps.queries) == 3 and all(
          k.endswith('/query_attention') for k in maps.queries), name
  # MGAN's own head has no linear classifier: its maps are drawn, the CAM
  # is said to be absent. MLAN's layer, block and group masks are drawn.
  maps = _abstract_maps(create_model('cifar_resnet8', 10, attn='mgan',
                                     head='mgan', width=8))
  assert maps.cam is None and maps.cam_source.startswith('no CAM: the head')
  assert 'head/features/spatial_map2' in maps.spatial
  maps = _abstract_maps(create_model('mlan_resnet14', 10, width=4))
  assert {'stage1_block1/layer_attn1/mask', 'stage3_block_aggregation/attn/mask'
          } <= set(maps.spatial)
  # Something with nothing to draw is named: CSM's position attention
  # skipped (max_positions) leaves 'spatial_only' nothing.
  model = create_model('cifar_resnet8', 10, attn='csm', width=8,
                       attn_kwargs=dict(mode='spatial_only', max_positions=1))
  maps = _abstract_maps(model)
  assert maps.nothing_to_draw == [f'stage{s}_block0/attn (csm)'
                                  for s in (1, 2, 3)]
  assert any('nothing to draw: stage1_block0/attn (csm)' == line
             for line in vz.describe(maps))


def test_query_attention_is_the_softmax_row_of_the_query():
  rng = np.random.RandomState(0)
  q, k = rng.randn(2, 4, 6, 3), rng.randn(2, 2, 3, 3)
  maps, where = vz.query_attention(q, k, 0.5, query=(0.5, 0.25))
  assert where == (2, 1, 4, 6)
  logits = np.einsum('nd,nhwd->nhw', q[:, 2, 1], k) * 0.5
  want = np.exp(logits) / np.exp(logits).sum(axis=(1, 2), keepdims=True)
  np.testing.assert_allclose(maps, want, rtol=1e-5)


def test_triplet_branches_and_3d_masks_become_channel_means():
  feats = {'logits': np.zeros((1, 3)), 'stage1': np.zeros((1, 4, 4, 2)),
           'a/channel_width_map': np.arange(8.).reshape(1, 1, 4, 2),
           'a/mask': np.arange(32.).reshape(1, 4, 4, 2),
           'a/odd': np.zeros((1, 2))}
  maps = vz.maps_from_features(feats, {'params': {}}, vz.AttentionCapture(),
                               np.zeros((1, 4, 4, 1)))
  np.testing.assert_allclose(maps.spatial['a/channel_width_map'],
                             [[[0.5, 2.5, 4.5, 6.5]]])
  np.testing.assert_allclose(maps.spatial['a/mask'],
                             np.arange(32.).reshape(1, 4, 4, 2).mean(-1))
  assert 'not a map' in maps.notes['a/odd']
  assert maps.cam is None and 'no CAM' in maps.cam_source
  # A 1 x 4 map upsamples to rows that repeat.
  hot = vz.heat(maps.spatial['a/channel_width_map'], (8, 8))
  np.testing.assert_allclose(hot, np.repeat(hot[:, :1], 8, axis=1))

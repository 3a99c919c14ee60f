"""Input pipeline: transforms by value, determinism, resumability, sharding,
exact evaluation coverage, dataset specs, errors, and the mocked tfds path
without TensorFlow."""
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from flax_attn import data
from flax_attn.data import transforms as T
from flax_attn.registry import UnknownNameError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ------------------------------------------------------------ test dataset
# 'test_indexed': image i is 3x3x1 with every pixel i (< 256) and label
# i % 10, so a served image tells which example it is. mean 0, std 1 makes
# the normalised image equal to the raw pixels.
_NUM_TRAIN, _NUM_EVAL = 37, 23


def _indexed_loader(split):
  count = _NUM_TRAIN if split == 'train' else _NUM_EVAL
  offset = 0 if split == 'train' else 100
  ids = np.arange(count) + offset
  images = np.broadcast_to(ids[:, None, None, None], (count, 3, 3, 1))
  return images.astype(np.uint8), (ids % 10).astype(np.int32)


if 'test_indexed' not in data.DATASETS:
  data.register_dataset(data.DatasetSpec(
      name='test_indexed', num_classes=10, train_split='train',
      eval_split='test', image_size=3, channels=1, mean=(0.0,), std=(1.0,),
      source='memory', loader=_indexed_loader))


def _config(dataset='digits', batch_size=32, crop_padding=1, flip=True,
            image_size=0, **augment):
  config = default.get_config()
  config.dataset = dataset
  config.batch_size = batch_size
  config.image_size = image_size
  config.augment.crop_padding = crop_padding
  config.augment.flip = flip
  for key, value in augment.items():
    setattr(config.augment, key, value)
  return config


def _ids(batch):
  """Example ids of a 'test_indexed' batch (every pixel holds the id)."""
  images = batch['image']
  assert np.all(images == images[:, :1, :1, :1]), 'augmentation leaked in'
  return images[:, 0, 0, 0].astype(np.int64)


def _take(iterator, count):
  return [next(iterator) for _ in range(count)]


def _assert_batches_equal(first, second):
  assert len(first) == len(second)
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])


# ------------------------------------------------------------ transforms


def test_pad_and_crop_is_the_window_of_the_padded_image():
  rng = np.random.default_rng(0)
  images = rng.integers(1, 256, (2, 6, 5, 3), dtype=np.uint8)
  padded = np.zeros((2, 10, 9, 3), np.uint8)     # padding 2, zeros outside
  padded[:, 2:8, 2:7] = images
  out = T.pad_and_crop(images, 2, tops=np.array([0, 3]),
                       lefts=np.array([4, 1]))
  assert out.shape == images.shape and out.dtype == np.uint8
  np.testing.assert_array_equal(out[0], padded[0, 0:6, 4:9])
  np.testing.assert_array_equal(out[1], padded[1, 3:9, 1:6])
  # (padding, padding) is no shift; the corner offset shows the zero border.
  np.testing.assert_array_equal(
      T.pad_and_crop(images, 2, np.array([2, 2]), np.array([2, 2])), images)
  assert np.all(out[0, :2] == 0) and np.all(out[0, :, 3:] == 0)
  with pytest.raises(ValueError, match='outside'):
    T.pad_and_crop(images, 2, np.array([0, 5]), np.array([0, 0]))


def test_flip_mirrors_exactly_the_chosen_images():
  images = np.arange(2 * 2 * 4 * 3, dtype=np.uint8).reshape(2, 2, 4, 3)
  out = T.flip_left_right(images, np.array([True, False]))
  for column in range(4):
    np.testing.assert_array_equal(out[0, :, column], images[0, :, 3 - column])
  np.testing.assert_array_equal(out[1], images[1])


def test_normalize_is_per_channel_mean_and_std():
  images = np.random.default_rng(1).integers(0, 256, (2, 4, 5, 3),
                                             dtype=np.uint8)
  mean, std = (125.3, 122.9, 113.8), (63.0, 62.1, 66.7)
  expected = (images.astype(np.float64) - np.array(mean)) / np.array(std)
  out = T.normalize(images, mean, std)
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match='3 channels'):
    T.normalize(images, mean[:1], std[:1])


def test_train_transform_without_augmentation_passes_pixels_and_device_normalises():
  spec = data.get_dataset_spec('cifar10')
  images = np.random.default_rng(2).integers(0, 256, (4, 32, 32, 3),
                                             dtype=np.uint8)
  transform = T.TrainTransform(32)
  out = transform.random_map({'image': images, 'label': np.arange(4)},
                             np.random.default_rng(0))
  assert out['image'].dtype == np.uint8 and out['label'].dtype == np.int32
  np.testing.assert_array_equal(out['image'], images)
  expected = (images - np.array(spec.mean)) / np.array(spec.std)
  for spec_or_config in (spec, _config('cifar10'), data.input_spec(spec)):
    normalised = data.prepare_on_device(out['image'], spec_or_config)
    assert normalised.dtype == jnp.float32
    np.testing.assert_allclose(normalised, expected, rtol=1e-5, atol=1e-5)
  # The host's float normalisation and the device's agree to rounding.
  np.testing.assert_allclose(
      data.prepare_on_device(images, spec),
      T.normalize(images, spec.mean, spec.std), rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match='3 channels but the input spec 1'):
    data.prepare_on_device(images, data.get_dataset_spec('digits'))
  # The train / eval steps normalise when given the spec; uint8 without it
  # is refused rather than fed to the model as 0-255 values.
  from flax_attn import train  # pylint: disable=g-import-not-at-top
  np.testing.assert_allclose(train.model_input(images, data.input_spec(
      spec)), expected, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match='uint8 images need input_spec'):
    train.model_input(images, None)


def test_train_transform_crops_are_windows_and_flips_are_mirrors():
  images = np.random.default_rng(3).integers(1, 256, (64, 8, 8, 3),
                                             dtype=np.uint8)
  padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
  transform = T.TrainTransform(8, crop_padding=4, flip=True)
  out = transform.random_map({'image': images, 'label': np.zeros(64)},
                             np.random.default_rng(0))['image']
  offsets, flips = set(), 0
  for i in range(64):
    found = [(top, left, flip) for top in range(9) for left in range(9)
             for flip in (False, True)
             if np.array_equal(out[i], (lambda w: w[:, ::-1] if flip else w)(
                 padded[i, top:top + 8, left:left + 8]))]
    assert found, f'image {i} is no (flipped) window of its padded image'
    offsets.add(found[0][:2])
    flips += found[0][2]
  assert len(offsets) > 20          # offsets vary over the 81 choices
  assert 16 <= flips <= 48          # flip probability 1/2


def test_resize_bilinear_matches_jax_image_resize():
  images = np.random.default_rng(4).integers(0, 256, (2, 8, 8, 1),
                                             dtype=np.uint8)
  expected = jax.image.resize(jnp.asarray(images, jnp.float32),
                              (2, 16, 16, 1), method='linear')
  np.testing.assert_allclose(T.resize_bilinear(images, 16), expected,
                             rtol=1e-5, atol=1e-3)


def test_rotate_by_90_degrees_is_rot90_and_fills_zero():
  image = np.random.default_rng(5).integers(1, 256, (5, 5, 2)).astype(
      np.float32)
  np.testing.assert_allclose(T.rotate(image, 90.0), np.rot90(image, 1),
                             atol=1e-3)
  np.testing.assert_allclose(T.rotate(image, 0.0), image)
  turned = T.rotate(np.ones((9, 9, 1), np.float32), 45.0)
  assert turned[0, 0, 0] == 0.0 and turned[4, 4, 0] == 1.0


def test_color_jitter_blends():
  image = np.random.default_rng(6).uniform(0, 255, (4, 4, 3)).astype(
      np.float32)
  luma = image @ np.array([0.299, 0.587, 0.114])
  np.testing.assert_allclose(T.adjust_brightness(image, 0.5), image * 0.5,
                             rtol=1e-6)
  np.testing.assert_allclose(T.adjust_contrast(image, 0.5),
                             0.5 * image + 0.5 * luma.mean(), rtol=1e-5)
  np.testing.assert_allclose(
      T.adjust_saturation(image, 1.5),
      np.clip(1.5 * image - 0.5 * luma[..., None], 0, 255), rtol=1e-5,
      atol=1e-3)
  np.testing.assert_allclose(T.color_jitter(image, 1.0, 1.0, 1.0), image,
                             rtol=1e-6)


# ------------------------------------------------------------ specs, digits


def test_dataset_specs_resolve_and_unknown_names_fail_in_one_line():
  cifar = data.get_dataset_spec('cifar10')
  assert (cifar.num_classes, cifar.train_split, cifar.eval_split,
          cifar.image_size, cifar.channels) == (10, 'train', 'test', 32, 3)
  assert data.get_dataset_spec('cifar100').num_classes == 100
  assert data.get_dataset_spec('imagenet2012').eval_split == 'validation'
  for name in ('cifar10', 'cifar100', 'digits', 'imagenet2012',
               'mini_imagenet', 'caltech_birds2011', 'stanford_dogs',
               'cars196'):
    assert name in data.list_datasets()
  with pytest.raises(UnknownNameError) as error:
    data.get_dataset_spec('cifar11')
  assert '\n' not in str(error.value) and "'cifar10'" in str(error.value)
  with pytest.raises(ValueError, match='already registered'):
    data.register_dataset(cifar)


def test_digits_dataset():
  from flax_attn.data import digits  # pylint: disable=g-import-not-at-top
  images, labels = digits.load_digits('all')
  assert images.shape == (1797, 8, 8, 1) and images.dtype == np.uint8
  assert images.min() == 0 and images.max() == 255
  assert labels.min() == 0 and labels.max() == 9
  train_x, train_y = digits.load_digits('train')
  test_x, test_y = digits.load_digits('test')
  assert (len(train_y), len(test_y)) == (1497, 300)
  np.testing.assert_array_equal(np.bincount(test_y), np.full(10, 30))
  train_rows, test_rows = digits.split_indices()
  assert not set(train_rows) & set(test_rows)
  np.testing.assert_array_equal(test_x, images[test_rows])
  spec = data.get_dataset_spec('digits')
  np.testing.assert_allclose(spec.mean, [train_x.mean()], rtol=1e-6)
  np.testing.assert_allclose(spec.std, [train_x.astype(np.float64).std()],
                             rtol=1e-6)
  config = _config('digits')
  assert data.num_examples(config, 'train') == 1497
  assert data.num_examples(config, 'eval') == 300
  batch = next(data.create_train_iterator(config, seed=0))
  assert batch['image'].shape == (32, 8, 8, 1)
  assert batch['image'].dtype == np.uint8 and batch['label'].dtype == np.int32
  config.image_size = 16  # resized on the host: float32 pixels
  upsampled = next(data.create_train_iterator(config, seed=0))['image']
  assert upsampled.shape == (32, 16, 16, 1) and upsampled.dtype == np.float32


# ------------------------------------------------------------ training stream


def test_same_seed_same_batches_different_seed_different():
  config = _config('digits', rotation=10.0, color_jitter=0.2)
  first = _take(data.create_train_iterator(config, seed=0), 3)
  _assert_batches_equal(first, _take(data.create_train_iterator(
      config, seed=0), 3))
  other = _take(data.create_train_iterator(config, seed=1), 3)
  assert not np.array_equal(first[0]['label'], other[0]['label'])
  assert not np.array_equal(first[0]['image'], other[0]['image'])


def test_resuming_from_state_gives_the_same_batches():
  # 512-example batches: the batches taken after the state cross epochs.
  config = _config('digits', batch_size=512)
  iterator = data.create_train_iterator(config, seed=7)
  _take(iterator, 3)
  state = json.loads(json.dumps(iterator.get_state()))  # as a checkpoint
  expected = _take(iterator, 4)
  restored = data.create_train_iterator(config, seed=7)
  restored.set_state(state)
  _assert_batches_equal(expected, _take(restored, 4))


def test_epochs_are_permutations_reshuffled_each_epoch():
  config = _config('test_indexed', batch_size=_NUM_TRAIN, crop_padding=0,
                   flip=False)
  epochs = [_ids(b) for b in _take(data.create_train_iterator(config,
                                                              seed=0), 3)]
  for ids in epochs:
    np.testing.assert_array_equal(np.sort(ids), np.arange(_NUM_TRAIN))
  assert not np.array_equal(epochs[0], epochs[1])
  np.testing.assert_array_equal(epochs[0] % 10, next(
      data.create_train_iterator(config, seed=0))['label'])


def test_processes_read_slices_of_the_same_global_batches():
  # Global batch k is the same on 1, 2 or 4 processes, augmentation included
  # (crops, flips, colour jitter drawn for the whole global batch); process
  # p reads rows [p * 8 / P, (p + 1) * 8 / P) of it.
  config = _config('digits', batch_size=8, crop_padding=2, flip=True,
                   color_jitter=0.3)
  whole = _take(data.create_train_iterator(config, seed=5), 6)
  for count in (2, 4):
    slices = [_take(data.create_train_iterator(
        config, seed=5, process_index=p, process_count=count), 6)
              for p in range(count)]
    assert slices[0][0]['image'].shape[0] == 8 // count
    joined = [{key: np.concatenate([s[k][key] for s in slices])
               for key in ('image', 'label')} for k in range(6)]
    _assert_batches_equal(whole, joined)
  # An epoch (37 examples, batches of 8) is a permutation of the split.
  indexed = _config('test_indexed', batch_size=8, crop_padding=0, flip=False)
  ids = np.concatenate([_ids(b) for b in _take(
      data.create_train_iterator(indexed, seed=0, process_index=1,
                                 process_count=2), 4)])
  whole_ids = np.concatenate([_ids(b) for b in _take(
      data.create_train_iterator(indexed, seed=0), 4)])
  np.testing.assert_array_equal(ids, whole_ids.reshape(4, 2, 4)[:, 1].ravel())
  assert len(set(whole_ids[:32])) == 32
  with pytest.raises(ValueError, match='multiple of process_count'):
    data.create_train_iterator(_config('digits', batch_size=9), seed=0,
                               process_count=2)


def test_saved_position_restores_on_another_number_of_processes():
  config = _config('digits', batch_size=8)
  whole = _take(data.create_train_iterator(config, seed=2), 5)
  two = [data.create_train_iterator(config, seed=2, process_index=p,
                                    process_count=2) for p in range(2)]
  for it in two:
    _take(it, 3)
  states = [it.get_state() for it in two]
  assert states[0] == states[1]  # the same position on every process
  one = data.create_train_iterator(config, seed=2)
  one.set_state(json.loads(json.dumps(states[0])))
  _assert_batches_equal(whole[3:], _take(one, 2))
  four = data.create_train_iterator(config, seed=2, process_index=3,
                                    process_count=4)
  four.set_state(states[0])
  np.testing.assert_array_equal(next(four)['image'], whole[3]['image'][6:])


def test_worker_processes_give_the_in_process_batches():
  config = _config('digits', batch_size=64)
  expected = _take(data.create_train_iterator(config, seed=3), 3)
  config.num_workers = 1
  iterator = data.create_train_iterator(config, seed=3)
  try:
    _assert_batches_equal(expected, _take(iterator, 3))
    json.dumps(iterator.get_state())
  finally:
    iterator.close()


# ------------------------------------------------------------ evaluation


def test_eval_covers_every_example_once_across_processes():
  config = _config('test_indexed')
  seen, masked_total, lengths = [], 0.0, set()
  for process in range(3):   # shares of 8, 8, 7 in batches of 3
    evaluation = data.create_eval_iterator(config, batch_size=3,
                                           process_index=process,
                                           process_count=3)
    batches = list(evaluation)
    lengths.add(len(batches))
    assert len(batches) == len(evaluation) == 3
    for batch in batches:
      assert batch['image'].shape == (3, 3, 3, 1)
      assert batch['mask'].dtype == np.float32
      real = batch['mask'] == 1.0
      assert np.all(batch['mask'][~real] == 0.0)
      assert np.all(batch['image'][~real] == 0.0)
      assert np.all(batch['label'][~real] == 0)
      ids = _ids(batch)[real]
      np.testing.assert_array_equal(batch['label'][real], ids % 10)
      seen.extend(ids.tolist())
      masked_total += batch['mask'].sum()
  assert lengths == {3}
  assert masked_total == _NUM_EVAL
  assert sorted(seen) == list(range(100, 100 + _NUM_EVAL))


def test_eval_on_digits_is_the_test_split_in_order_and_reiterable():
  config = _config('digits')
  evaluation = data.create_eval_iterator(config, batch_size=128)
  first, second = list(evaluation), list(evaluation)
  _assert_batches_equal(first, second)
  assert [b['image'].shape for b in first] == [(128, 8, 8, 1)] * 3
  mask = np.concatenate([b['mask'] for b in first])
  assert mask.sum() == 300 and np.all(mask[300:] == 0)
  images, labels = data.load_source(data.get_dataset_spec('digits'),
                                    'test').get_batch(np.arange(300)).values()
  np.testing.assert_array_equal(
      np.concatenate([b['label'] for b in first])[:300], labels)
  spec = data.get_dataset_spec('digits')
  pixels = np.concatenate([b['image'] for b in first])[:300]
  assert pixels.dtype == np.uint8
  np.testing.assert_array_equal(pixels, images)
  np.testing.assert_allclose(data.prepare_on_device(pixels, spec),
                             (images - spec.mean[0]) / spec.std[0],
                             rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------ tfds paths


def test_missing_dataset_fails_in_one_line(tmp_path):
  config = _config('cifar10')
  config.data_dir = str(tmp_path)
  with pytest.raises(data.DatasetNotFoundError) as error:
    data.create_train_iterator(config, seed=0)
  message = str(error.value)
  assert '\n' not in message
  for part in ("'cifar10'", str(tmp_path), 'tfds build cifar10',
               '--file_format=array_record'):
    assert part in message
  config.dataset = 'imagenet2012'
  with pytest.raises(data.DatasetNotFoundError) as error:
    data.num_examples(config, 'train')
  assert 'ILSVRC2012_img_train.tar' in str(error.value)
  assert 'downloads/manual' in str(error.value)
  config.augment.crop_padding = 0  # ImageNet crops are random-resized
  with pytest.raises(data.DatasetNotFoundError) as error:
    data.create_train_iterator(config, seed=0)
  assert 'python -m flax_attn.data prepare imagenet2012' in str(error.value)


_MOCK_SCRIPT = textwrap.dedent('''
    import json, sys
    attempts = []

    class RecordTensorflowImports:
      """Records `import tensorflow...` (not find_spec probes such as
      etils' "is TensorFlow installed?")."""
      def find_spec(self, name, path=None, target=None):
        if name == 'tensorflow' or name.startswith('tensorflow.'):
          frame, probe = sys._getframe(1), False
          while frame is not None:
            probe |= frame.f_globals.get('__name__') == 'importlib.util'
            frame = frame.f_back
          if not probe:
            attempts.append(name)
        return None

    sys.meta_path.insert(0, RecordTensorflowImports())
    import numpy as np
    import tensorflow_datasets as tfds
    from configs import default
    from flax_attn import data

    results = {}
    with tfds.testing.mock_data(num_examples=64):
      for name, classes in (('cifar10', 10), ('cifar100', 100)):
        config = default.get_config()
        config.dataset, config.batch_size = name, 16
        assert config.data_dir == ''
        iterator = data.create_train_iterator(config, seed=0)
        batches = [next(iterator) for _ in range(5)]
        state = iterator.get_state()
        after = next(iterator)
        again = data.create_train_iterator(config, seed=0)
        again.set_state(state)
        evaluation = list(data.create_eval_iterator(config, batch_size=48))
        results[name] = dict(
            shape=list(batches[0]['image'].shape),
            dtype=str(batches[0]['image'].dtype),
            labels_ok=bool(all(0 <= b['label'].min() and
                               b['label'].max() < classes for b in batches)),
            resumed=bool(np.array_equal(next(again)['image'], after['image'])),
            num_train=data.num_examples(config, 'train'),
            eval_batches=len(evaluation),
            mask_sum=float(sum(b['mask'].sum() for b in evaluation)))
    results['attempts'] = list(attempts)
    results['tensorflow_loaded'] = 'tensorflow' in sys.modules
    try:  # the recorder itself must see a real import attempt
      import tensorflow  # noqa: F401
    except ImportError:
      pass
    results['recorder_works'] = 'tensorflow' in attempts
    print('RESULT' + json.dumps(results))
''')


def test_mocked_cifar_reads_through_tfds_data_source_without_tensorflow():
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  env.pop('TFDS_DATA_DIR', None)
  run = subprocess.run([sys.executable, '-c', _MOCK_SCRIPT], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=120)
  lines = [l for l in run.stdout.splitlines() if l.startswith('RESULT')]
  assert run.returncode == 0 and lines, run.stderr[-3000:]
  results = json.loads(lines[-1][len('RESULT'):])
  assert results['attempts'] == [] and not results['tensorflow_loaded']
  assert results['recorder_works']
  for name in ('cifar10', 'cifar100'):
    assert results[name] == dict(
        shape=[16, 32, 32, 3], dtype='uint8', labels_ok=True, resumed=True,
        num_train=64, eval_batches=2, mask_sum=64.0), name

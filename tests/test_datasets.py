"""Datasets beyond CIFAR: the variable-size transforms by value, the
mini-ImageNet and Stanford Cars builders on fabricated files in the real
layout (prepared without TensorFlow), the ImageNet / fine-grained pipelines
on those files and under `tfds.testing.mock_data`, and the
`python -m flax_attn.data` commands.

TensorFlow is not installed here: everything below runs without it. tfds'
own builders for imagenet2012, caltech_birds2011 and stanford_dogs need
TensorFlow to prepare, so those three are tested through mock_data only.
"""
import colorsys
import io
import os
import tarfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from scipy import io as scipy_io

from configs import default
from flax_attn import data
from flax_attn.data import __main__ as cli
from flax_attn.data import prepare
from flax_attn.data import transforms as T



def _config(dataset, batch_size=4, image_size=0, data_dir='', **augment):
  config = default.get_config()
  config.dataset = dataset
  config.data_dir = data_dir
  config.batch_size = batch_size
  config.image_size = image_size
  config.augment.crop_padding = 0
  config.augment.flip = False
  for key, value in augment.items():
    config.augment[key] = value
  return config


def _take(iterator, count):
  return [next(iterator) for _ in range(count)]


def _jpeg(array, quality=95):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='JPEG', quality=quality)
  return buffer.getvalue()


# ------------------------------------------------------------ transforms


def test_random_resized_crop_boxes_lie_inside_and_follow_scale_and_ratio():
  rng = np.random.default_rng(0)
  fractions, ratios = [], []
  for _ in range(400):
    height, width = rng.integers(20, 300, size=2)
    top, left, h, w = T.random_resized_crop_box(int(height), int(width), rng)
    assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
    assert h > 0 and w > 0
    fractions.append(h * w / (height * width))
    ratios.append(w / h)
  # Rounding w and h moves the fraction and ratio a little off the ranges.
  assert 0.06 <= min(fractions) and max(fractions) <= 1.0
  assert min(fractions) < 0.15 and max(fractions) > 0.8
  assert 3 / 4 - 0.05 <= min(ratios) and max(ratios) <= 4 / 3 + 0.05


def test_random_resized_crop_falls_back_to_the_central_window():
  rng = np.random.default_rng(0)
  impossible = (2.0, 3.0)  # every draw is larger than the image
  # Tall image, ratio 0.5 < 3/4: full width, height round(50 / (3/4)).
  assert T.random_resized_crop_box(100, 50, rng, scale=impossible) == (
      16, 0, 67, 50)
  # Wide image, ratio 4 > 4/3: full height, width round(50 * 4/3).
  assert T.random_resized_crop_box(50, 200, rng, scale=impossible) == (
      0, 66, 50, 67)
  assert T.random_resized_crop_box(90, 100, rng, scale=impossible) == (
      0, 0, 90, 100)
  # scale and ratio pinned to 1: the whole square image, any draw.
  assert T.random_resized_crop_box(10, 10, rng, scale=(1, 1),
                                   ratio=(1, 1)) == (0, 0, 10, 10)


def test_resized_crop_of_a_window_already_at_size_is_that_window():
  image = np.random.default_rng(1).integers(0, 256, (40, 50, 3), np.uint8)
  np.testing.assert_array_equal(T.resized_crop(image, (5, 7, 16, 16), 16),
                                image[5:21, 7:23])


def test_resize_and_center_crop_on_a_gradient_is_exact():
  # R = row, G = column, B = 255 - column: linear, so antialiased bilinear
  # resizing by 4 gives the value at the output pixel's centre, 4 i + 1.5
  # in input coordinates (to uint8 rounding) away from the borders.
  rows, cols = np.meshgrid(np.arange(128), np.arange(192), indexing='ij')
  image = np.stack([rows, cols, 255 - cols], -1).astype(np.uint8)
  out = T.resize_and_center_crop(image, 28, crop_fraction=0.875)
  assert out.shape == (28, 28, 3) and out.dtype == np.uint8
  # Shorter side floor(28 / 0.875) = 32: a 32 x 48 image, offsets (2, 10).
  i, j = np.meshgrid(np.arange(28), np.arange(28), indexing='ij')
  y, x = 4.0 * (i + 2) + 1.5, 4.0 * (j + 10) + 1.5
  expected = np.stack([y, x, 255 - x], -1)
  np.testing.assert_allclose(out, expected, atol=0.5 + 1e-3)
  # The torchvision sizes: Resize(256) of 500 x 375 -> 341 x 256; crop at
  # round((341 - 224) / 2) = 58 (Python rounds half to even).
  assert T.resize_shorter_side(np.zeros((375, 500, 3), np.uint8),
                               256).shape == (256, 341, 3)
  assert T.center_crop_offsets(256, 341, 224) == (16, 58)


def test_flip_is_an_exact_mirror_and_normalisation_is_per_channel():
  rng = np.random.default_rng(2)
  images = [rng.integers(0, 256, (12, 12, 3), np.uint8) for _ in range(64)]
  mean, std = (120.0, 110.0, 100.0), (60.0, 50.0, 40.0)
  transform = T.VariableSizeTrainTransform(
      12, seed=0, crop='center', crop_fraction=1.0, flip=True)
  out = transform.map({'image': images, 'label': np.arange(64),
                       'epoch': np.zeros(64), 'index': np.arange(64)})
  assert out['image'].shape == (64, 12, 12, 3)
  assert out['image'].dtype == np.uint8 and out['label'].dtype == np.int32
  flipped = 0
  normalised = data.prepare_on_device(out['image'], data.InputSpec(mean, std))
  for image, result in zip(images, np.asarray(normalised)):
    raw = result * np.array(std) + np.array(mean)
    plain = np.allclose(raw, image, atol=1e-3)
    mirrored = np.allclose(raw, image[:, ::-1], atol=1e-3)
    assert plain or mirrored
    flipped += mirrored
  assert 16 <= flipped <= 48
  expected = (images[0].astype(np.float64) - mean) / std
  evaluated = T.VariableSizeEvalTransform(12, 1.0).map(
      {'image': [images[0], None], 'label': np.zeros(2),
       'mask': np.array([1.0, 0.0])})
  np.testing.assert_allclose(data.prepare_on_device(
      evaluated['image'], data.InputSpec(mean, std))[0], expected, atol=1e-5)
  assert np.all(evaluated['image'][1] == 0.0)


def test_each_example_draws_from_its_own_generator():
  rng = np.random.default_rng(3)
  images = [rng.integers(0, 256, (rng.integers(30, 60), rng.integers(30, 60),
                                  3), np.uint8) for _ in range(3)]
  transform = T.VariableSizeTrainTransform(
      16, seed=5, flip=True, rotation=20.0, color_jitter=0.4,
      hue=0.1)
  batch = transform.map({'image': images, 'label': np.zeros(3),
                         'epoch': np.array([0, 0, 1]),
                         'index': np.array([7, 8, 9])})['image']
  alone = transform.map({'image': images[1:2], 'label': np.zeros(1),
                         'epoch': np.array([0]), 'index': np.array([8])})
  np.testing.assert_array_equal(batch[1], alone['image'][0])
  other_epoch = transform.augment_example(images[1], 1, 8)
  assert not np.array_equal(other_epoch, batch[1])


def test_rotation_hue_and_decoding():
  image = np.random.default_rng(4).integers(1, 256, (9, 9, 3), np.uint8)
  np.testing.assert_array_equal(T.rotate_uint8(image, 90.0),
                                np.rot90(image, 1))
  # Inside (source points away from the border) as the float rotation, to
  # uint8 rounding; at the border pillow fills zero where numpy blends.
  np.testing.assert_allclose(T.rotate_uint8(image, 30.0)[2:7, 2:7],
                             T.rotate(image, 30.0)[2:7, 2:7], atol=1.01)
  # Hue: HSV hue turned by the factor (colorsys as the reference).
  colours = np.array([[[200, 40, 40], [30, 160, 90], [20, 60, 220]]],
                     np.float32)
  turned = T.adjust_hue(colours, 0.25)
  for pixel, result in zip(colours[0] / 255, turned[0] / 255):
    h, s, v = colorsys.rgb_to_hsv(*pixel)
    np.testing.assert_allclose(result, colorsys.hsv_to_rgb((h + 0.25) % 1, s,
                                                           v), atol=0.03)
  # uint8 HSV round trip (as torchvision): a few levels of quantisation.
  np.testing.assert_allclose(T.adjust_hue(colours, 0.0), colours, atol=4)
  # Decoding: grey JPEGs become three equal channels, RGBA drops alpha.
  grey = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))
  decoded = T.decode_rgb(_jpeg(grey))
  assert decoded.shape == (16, 16, 3)
  np.testing.assert_array_equal(decoded[..., 0], decoded[..., 2])
  np.testing.assert_allclose(decoded[..., 0], grey, atol=3)
  rgba = np.random.default_rng(5).integers(0, 256, (4, 5, 4), np.uint8)
  np.testing.assert_array_equal(T.decode_rgb(rgba), rgba[..., :3])
  buffer = io.BytesIO()
  Image.fromarray(rgba[..., :3]).save(buffer, format='PNG')
  np.testing.assert_array_equal(T.decode_rgb(buffer.getvalue()),
                                rgba[..., :3])


# ------------------------------------------------------------ mini-ImageNet

_WNIDS = ('n01532829', 'n01558993', 'n01704323', 'n01749939')


def _write_mini_imagenet(root, archive=False):
  """Ravi & Larochelle's layout: images/ + train/val/test.csv; 4 classes of
  6 images (2 / 1 / 1 classes per CSV); one image of each class 120 x 90."""
  rng = np.random.default_rng(6)
  os.makedirs(os.path.join(root, 'images'))
  pixels = {}
  for csv_name, wnids in (('train.csv', _WNIDS[:2]), ('val.csv', _WNIDS[2:3]),
                          ('test.csv', _WNIDS[3:])):
    lines = ['filename,label']
    for wnid in wnids:
      for k in (3, 1, 6, 2, 5, 4):  # listed out of order on purpose
        name = f'{wnid}{k:08d}.jpg'
        side = (90, 120) if k == 2 else (84, 84)
        pixels[name] = rng.integers(0, 256, side + (3,), np.uint8)
        with open(os.path.join(root, 'images', name), 'wb') as f:
          f.write(_jpeg(pixels[name]))
        lines.append(f'{name},{wnid}')
    with open(os.path.join(root, csv_name), 'w') as f:
      f.write('\n'.join(lines) + '\n')
  if archive:
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.make_archive(os.path.join(root, 'images'), 'zip', root, 'images')
    shutil.rmtree(os.path.join(root, 'images'))
  return pixels


@pytest.fixture(scope='module')
def mini_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp('mini')
  manual, data_dir = str(root / 'manual'), str(root / 'data')
  _write_mini_imagenet(manual)
  path = prepare.prepare('mini_imagenet', data_dir=data_dir,
                         manual_dir=manual)
  assert path.endswith(os.path.join('mini_imagenet', 'classification',
                                    '1.0.0'))
  return manual, data_dir


def _split_names(data_dir, config_name, split):
  source = tfds.data_source(f'mini_imagenet/{config_name}', split=split,
                            data_dir=data_dir)
  examples = [source[i] for i in range(len(source))]
  return {e['file_name'].decode(): e for e in examples}


def test_mini_imagenet_classification_split_is_first_five_sixths_sorted(
    mini_dirs):
  manual, data_dir = mini_dirs
  train = _split_names(data_dir, 'classification', 'train')
  test = _split_names(data_dir, 'classification', 'test')
  assert sorted(test) == [f'{w}00000006.jpg' for w in _WNIDS]
  assert sorted(train) == [f'{w}{k:08d}.jpg' for w in _WNIDS
                           for k in range(1, 6)]
  for name, example in {**train, **test}.items():
    assert example['label'] == _WNIDS.index(name[:9])
    assert example['wnid'].decode() == name[:9]
    assert example['image'].shape == (84, 84, 3)
  # 84 x 84 JPEGs are stored as they are; others are resized to 84 x 84.
  original = T.decode_rgb(open(os.path.join(
      manual, 'images', f'{_WNIDS[0]}00000001.jpg'), 'rb').read())
  np.testing.assert_array_equal(train[f'{_WNIDS[0]}00000001.jpg']['image'],
                                original)


def test_mini_imagenet_shuffled_and_few_shot_configs(tmp_path):
  manual = str(tmp_path / 'manual')
  _write_mini_imagenet(manual, archive=True)  # images.zip this time
  data_dir = str(tmp_path / 'data')
  prepare.prepare('mini_imagenet_shuffled', data_dir=data_dir,
                  manual_dir=manual)
  test = _split_names(data_dir, 'classification_shuffled', 'test')
  for index, wnid in enumerate(_WNIDS):
    names = [f'{wnid}{k:08d}.jpg' for k in range(1, 7)]
    order = np.random.default_rng([0, index]).permutation(6)
    assert [n for n in test if n.startswith(wnid)] == [names[order[5]]]
  few_shot = tfds.builder('mini_imagenet/few_shot', data_dir=data_dir)
  few_shot.download_and_prepare(
      file_format='array_record',
      download_config=tfds.download.DownloadConfig(manual_dir=manual))
  for split, wnids in (('train', _WNIDS[:2]), ('validation', _WNIDS[2:3]),
                       ('test', _WNIDS[3:])):
    names = _split_names(data_dir, 'few_shot', split)
    assert sorted({n[:9] for n in names}) == list(wnids)
    assert len(names) == 6 * len(wnids)


def test_mini_imagenet_trains_and_evaluates_from_prepared_files(mini_dirs):
  _, data_dir = mini_dirs
  config = _config('mini_imagenet', batch_size=8, image_size=84,
                   data_dir=data_dir, crop_padding=8, flip=True)
  assert data.num_examples(config, 'train') == 20
  batch = next(data.create_train_iterator(config, seed=0))
  assert batch['image'].shape == (8, 84, 84, 3)
  assert set(batch['label']) <= set(range(4))
  evaluation = list(data.create_eval_iterator(config, batch_size=3))
  assert len(evaluation) == 2
  labels = np.concatenate([b['label'] for b in evaluation])
  mask = np.concatenate([b['mask'] for b in evaluation])
  assert mask.sum() == 4 and sorted(labels[mask > 0]) == [0, 1, 2, 3]


def test_mini_imagenet_missing_files_fail_in_one_line(tmp_path):
  manual = str(tmp_path / 'manual')
  _write_mini_imagenet(manual)
  os.remove(os.path.join(manual, 'val.csv'))
  with pytest.raises(prepare.PrepareError) as error:
    prepare.prepare('mini_imagenet', data_dir=str(tmp_path / 'data'),
                    manual_dir=manual)
  message = str(error.value)
  assert '\n' not in message and 'missing val.csv' in message
  assert manual in message and 'images/' in message
  with open(os.path.join(manual, 'val.csv'), 'w') as f:
    f.write('filename,label\nn0170432300000099.jpg,n01704323\n')
  with pytest.raises(prepare.PrepareError) as error:
    prepare.prepare('mini_imagenet', data_dir=str(tmp_path / 'data'),
                    manual_dir=manual)
  assert '\n' not in str(error.value)
  assert 'first: n0170432300000099.jpg' in str(error.value)


# ------------------------------------------------------------ Stanford Cars

_CAR_SIZES = {'train': [(60, 80), (70, 50), (64, 64), (40, 90), (80, 60)],
              'test': [(50, 70), (66, 44), (90, 40)]}


def _annotations(path, split, rows):
  fields = ['bbox_x1', 'bbox_y1', 'bbox_x2', 'bbox_y2', 'class', 'fname']
  table = np.zeros((1, len(rows)), dtype=[(f, 'O') for f in fields])
  for i, row in enumerate(rows):
    for field, value in zip(fields, row):
      table[0, i][field] = np.array([value]) if field == 'fname' else (
          np.array([[value]], np.uint16 if field == 'class' else np.uint8))
  scipy_io.savemat(path, {'annotations': table})


def _write_cars(root):
  """The four Stanford Cars files, tiny: returns {(split, stem): (label,
  bbox, pixels)}."""
  rng = np.random.default_rng(7)
  os.makedirs(os.path.join(root, 'stage', 'devkit'))
  truth = {}
  for split, sizes in _CAR_SIZES.items():
    folder = os.path.join(root, 'stage', f'cars_{split}')
    os.makedirs(folder)
    rows = []
    for k, (height, width) in enumerate(sizes):
      stem = f'{k + 1:05d}'
      encoded = _jpeg(rng.integers(0, 256, (height, width, 3), np.uint8))
      pixels = T.decode_rgb(encoded)  # what the stored JPEG decodes to
      with open(os.path.join(folder, stem + '.jpg'), 'wb') as f:
        f.write(encoded)
      x1, y1, x2, y2 = 3 + k, 2, width - 4, height - 1 - k
      label = (37 * k + (split == 'test')) % 196
      rows.append((x1, y1, x2, y2, label + 1, stem + '.jpg'))
      truth[split, stem] = (label, (y1 / height, x1 / width, y2 / height,
                                    x2 / width), pixels)
    with tarfile.open(os.path.join(root, f'cars_{split}.tgz'), 'w:gz') as t:
      t.add(folder, arcname=f'cars_{split}')
    mat = (os.path.join(root, 'stage', 'devkit', 'cars_train_annos.mat')
           if split == 'train' else
           os.path.join(root, 'cars_test_annos_withlabels.mat'))
    _annotations(mat, split, rows)
  with tarfile.open(os.path.join(root, 'car_devkit.tgz'), 'w:gz') as t:
    t.add(os.path.join(root, 'stage', 'devkit'), arcname='devkit')
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.rmtree(os.path.join(root, 'stage'))
  return truth


@pytest.fixture(scope='module')
def cars_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp('cars')
  manual, data_dir = str(root / 'manual'), str(root / 'data')
  truth = _write_cars(manual)
  prepare.prepare('cars196', data_dir=data_dir, manual_dir=manual)
  return manual, data_dir, truth


def test_cars196_from_manual_archives_reads_as_tfds_cars196(cars_dirs):
  _, data_dir, truth = cars_dirs
  names = tfds.builder('cars196').info.features['label'].names
  for split, count in (('train', 5), ('test', 3)):
    source = tfds.data_source('cars196', split=split, data_dir=data_dir)
    assert len(source) == count
    for i in range(count):
      example = source[i]
      label, bbox, pixels = truth[split, example['id'].decode()]
      assert example['label'] == label and len(names) == 196
      np.testing.assert_allclose(example['bbox'], bbox, rtol=1e-6)
      np.testing.assert_array_equal(example['image'], pixels)


def test_cars196_pipelines_on_real_files_in_workers(cars_dirs):
  _, data_dir, truth = cars_dirs
  config = _config('cars196', batch_size=4, image_size=32,
                   data_dir=data_dir, flip=True, rotation=15.0,
                   color_jitter=0.4, hue=0.05)
  expected = _take(data.create_train_iterator(config, seed=0), 3)
  assert expected[0]['image'].shape == (4, 32, 32, 3)
  config.num_workers = 1
  iterator = data.create_train_iterator(config, seed=0)
  try:
    for a, b in zip(expected, _take(iterator, 3)):
      np.testing.assert_array_equal(a['image'], b['image'])
      np.testing.assert_array_equal(a['label'], b['label'])
  finally:
    iterator.close()
  # Evaluation: resize-shorter-side + centre crop of each decoded image.
  evaluation = list(data.create_eval_iterator(config, batch_size=2))
  assert len(evaluation) == 2 and evaluation[1]['mask'].tolist() == [1, 0]
  spec = data.get_dataset_spec('cars196')
  source = tfds.data_source('cars196', split='test', data_dir=data_dir)
  first = T.resize_and_center_crop(source[0]['image'], 32)
  # JPEG files take the fast path (one resize of the window): the same
  # pixels to a level or two of rounding.
  assert evaluation[0]['image'].dtype == np.uint8
  np.testing.assert_allclose(evaluation[0]['image'][0], first, atol=2)
  np.testing.assert_allclose(
      data.prepare_on_device(evaluation[0]['image'], spec)[0],
      (first - np.array(spec.mean)) / np.array(spec.std), atol=2.01 / 57)
  assert evaluation[0]['label'][0] == source[0]['label']


def test_cars196_missing_and_unannotated_files_fail_in_one_line(tmp_path):
  manual = str(tmp_path / 'manual')
  _write_cars(manual)
  os.remove(os.path.join(manual, 'cars_test_annos_withlabels.mat'))
  with pytest.raises(prepare.PrepareError) as error:
    prepare.prepare('cars196', data_dir=str(tmp_path / 'data'),
                    manual_dir=manual)
  message = str(error.value)
  assert '\n' not in message
  assert 'missing cars_test_annos_withlabels.mat in ' + manual in message
  # An annotated image absent from its archive.
  _annotations(os.path.join(manual, 'cars_test_annos_withlabels.mat'),
               'test', [(1, 1, 5, 5, 3, '00001.jpg'),
                        (1, 1, 5, 5, 3, '00042.jpg')])
  with pytest.raises(prepare.PrepareError) as error:
    prepare.prepare('cars196', data_dir=str(tmp_path / 'data'),
                    manual_dir=manual)
  assert '\n' not in str(error.value)
  assert '1 of the 2 test images' in str(error.value)
  assert '00042.jpg' in str(error.value)


# ------------------------------------------------------------ mocked tfds


@pytest.mark.parametrize('name,classes', [
    ('imagenet2012', 1000), ('caltech_birds2011', 200),
    ('stanford_dogs', 120), ('cars196', 196), ('mini_imagenet', 100)])
def test_mocked_datasets_through_the_real_iterators(name, classes):
  spec = data.get_dataset_spec(name)
  size = 84 if name == 'mini_imagenet' else 48
  augment = dict(flip=True, rotation=10.0, color_jitter=0.4)
  if spec.preprocessing == 'small':
    augment['crop_padding'] = 8
  config = _config(name, batch_size=4, image_size=size, **augment)
  with tfds.testing.mock_data(num_examples=10):
    iterator = data.create_train_iterator(config, seed=0)
    batches = _take(iterator, 3)
    state = iterator.get_state()
    after = next(iterator)
    resumed = data.create_train_iterator(config, seed=0)
    resumed.set_state(state)
    np.testing.assert_array_equal(next(resumed)['image'], after['image'])
    evaluation = list(data.create_eval_iterator(config, batch_size=4))
    assert data.num_examples(config, 'train') == 10
    if spec.preprocessing == 'imagenet':
      # Per-example generators: batches of 2 cut the same stream.
      config.batch_size = 2
      halves = _take(data.create_train_iterator(config, seed=0), 2)
      np.testing.assert_array_equal(
          np.concatenate([h['image'] for h in halves]), batches[0]['image'])
  for batch in batches:
    assert batch['image'].shape == (4, size, size, 3)
    # Colour jitter without hue keeps its fractions: float32 0-255 pixels.
    assert batch['image'].dtype == np.float32
    assert 0 <= batch['image'].min() and batch['image'].max() <= 255
    assert 0 <= batch['label'].min() and batch['label'].max() < classes
    assert np.isfinite(batch['image']).all()
  assert len(evaluation) == 3
  assert sum(b['mask'].sum() for b in evaluation) == 10
  assert evaluation[0]['image'].shape == (4, size, size, 3)


def test_preprocessing_options_of_the_other_family_fail_in_one_line():
  with pytest.raises(ValueError, match='crop_padding=0') as error:
    data.create_train_iterator(_config('imagenet2012', crop_padding=4),
                               seed=0)
  assert '\n' not in str(error.value)
  with pytest.raises(ValueError, match='fixed-size'):
    data.create_train_iterator(_config('cifar10', crop='random_resized'),
                               seed=0)
  with pytest.raises(ValueError, match='valid: random_resized, random, '
                     'center'):
    data.create_train_iterator(_config('imagenet2012', crop='inception'),
                               seed=0)


# ------------------------------------------------------------ commands


def test_missing_own_builder_datasets_name_the_prepare_command(tmp_path):
  for name, needed in (('cars196', 'cars_test_annos_withlabels.mat'),
                       ('mini_imagenet', 'train.csv')):
    config = _config(name, data_dir=str(tmp_path))
    with pytest.raises(data.DatasetNotFoundError) as error:
      data.create_train_iterator(config, seed=0)
    message = str(error.value)
    assert '\n' not in message
    assert f'python -m flax_attn.data prepare {name}' in message
    assert needed in message and 'tfds build' not in message


def test_list_and_prepare_commands(mini_dirs, tmp_path, capsys):
  _, data_dir = mini_dirs
  assert cli.main(['list', '--data_dir', data_dir]) == 0
  lines = capsys.readouterr().out.splitlines()
  status = {line.split()[0]: line for line in lines}
  for name in data.list_datasets():
    assert name in status
  assert status['mini_imagenet'].endswith('prepared')
  assert 'needs manual files' in status['mini_imagenet_shuffled']
  assert 'ILSVRC2012_img_train.tar' in status['imagenet2012']
  assert 'downloadable' in status['caltech_birds2011']
  assert 'in package' in status['digits']
  empty = tmp_path / 'empty'
  empty.mkdir()
  assert cli.main(['prepare', 'cars196', '--manual_dir', str(empty),
                   '--data_dir', str(tmp_path / 'data')]) == 1
  error = capsys.readouterr().err
  assert error.count('\n') == 1 and error.startswith('error: cars196: ')
  assert 'cars_train.tgz' in error and str(empty) in error
  assert cli.main(['prepare', 'digits']) == 1
  assert 'ships with the package' in capsys.readouterr().err


def test_prepare_without_tensorflow_says_what_to_install(tmp_path,
                                                         monkeypatch):
  class NeedsTensorflow:
    def is_prepared(self):
      return False

    def download_and_prepare(self, **kwargs):
      del kwargs
      raise ModuleNotFoundError("No module named 'tensorflow'",
                                name='tensorflow')

  monkeypatch.setattr(prepare, 'make_builder',
                      lambda spec, data_dir: NeedsTensorflow())
  with pytest.raises(prepare.PrepareError) as error:
    prepare.prepare('stanford_dogs', data_dir=str(tmp_path))
  assert "needs the package 'tensorflow'" in str(error.value)
  assert 'flax-attn[prepare]' in str(error.value)

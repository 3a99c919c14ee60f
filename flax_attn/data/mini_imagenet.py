"""mini-ImageNet as a tfds builder, from the standard files, without TensorFlow.

mini-ImageNet (Vinyals et al. 2016, "Matching Networks for One Shot
Learning", Sec. 4.1.2) is 100 ImageNet classes x 600 images at 84 x 84. The
files everyone uses are Ravi & Larochelle's (2017, "Optimization as a Model
for Few-Shot Learning"): a folder `images/` of 60,000 JPEGs named
`<wnid><8 digits>.jpg` (e.g. n0153282900000005.jpg), shipped as
images.zip, and train.csv / val.csv / test.csv (header `filename,label`,
rows `n0153282900000005.jpg,n01532829`) that split the CLASSES 64 / 16 / 20
for few-shot learning.

MGAN (Wu & Tanprasert 2023, Sec. 4.1 and Tables 2-5) trains and
tests a 100-way classifier on "60,000 colour images 84 x 84 pixels in size,
divided into 100 categories with 600 samples in each category" and says
nothing of how the images are split. The few-shot split cannot serve (its
test classes are never trained on), so this builder cuts every class 5:1,
the CIFAR-100 proportion (500 train / 100 test of 600) the paper's other
datasets have. Readings, one tfds config each:

  classification (default; dataset 'mini_imagenet'): per class, the file
    names sorted; the first 500 train, the last 100 test. With the standard
    names this is frame order within a class, fixed and documented;
  classification_shuffled (dataset 'mini_imagenet_shuffled'): per class, a
    permutation from numpy's default_rng([0, class index]); its first 500
    train, the rest test;
  few_shot: Ravi & Larochelle's train / validation / test CSV splits as they
    are (disjoint classes), for completeness; no training config uses it.

A class of n images (n = 600 in the real files) gives n - n // 6 training
and n // 6 test images. Labels: the index of the wnid in the sorted list of
the wnids all three CSVs name (0..99, the same in every config); the wnid is
kept in 'wnid'. Images already 84 x 84 RGB are stored byte for byte; any
other (some redistributions keep the ImageNet originals) is converted to RGB
and resized to 84 x 84, bilinear with pillow's antialiasing, aspect not
kept (as the common mini-ImageNet generation scripts do), and stored as JPEG
quality 95.

  python -m flax_attn.data prepare mini_imagenet --manual_dir DIR

DIR holds `images/` (or `images.zip`) and the three CSVs. Writing the
array_record files needs no TensorFlow (tfds' writer serialises with its own
protos when images arrive encoded).
"""
from __future__ import annotations

import csv
import io
import os
import zipfile
from typing import Dict, List, Optional, Tuple

from absl import logging
import numpy as np
from etils import epath
import tensorflow_datasets as tfds
from PIL import Image

IMAGE_SIZE = 84
NUM_CLASSES = 100
CSV_FILES = ('train.csv', 'val.csv', 'test.csv')
# Test images of a class of n: n // TEST_EVERY (100 of 600).
TEST_EVERY = 6
SHUFFLE_SEED = 0

LAYOUT = ("images/ (the 60,000 JPEGs <wnid><8 digits>.jpg, e.g. "
          "n0153282900000005.jpg) or images.zip holding them, and Ravi & "
          "Larochelle's train.csv, val.csv, test.csv (header "
          "'filename,label')")

_INSTRUCTIONS = f"""\
Place in the manual directory (--manual_dir, default
<data_dir>/downloads/manual): {LAYOUT}.
"""


class MiniImagenetConfig(tfds.core.BuilderConfig):
  """How the 600 images of each class are split (module docstring)."""


class MiniImagenet(tfds.core.GeneratorBasedBuilder):
  """mini-ImageNet, 100 classes x 600 images, 84 x 84, from manual files."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  BUILDER_CONFIGS = [
      MiniImagenetConfig(
          name='classification',
          description='100-way classification: per class the first 500 '
          'sorted file names train, the last 100 test.'),
      MiniImagenetConfig(
          name='classification_shuffled',
          description='100-way classification: per class a seeded random '
          '500 train / 100 test.'),
      MiniImagenetConfig(
          name='few_shot',
          description="Ravi & Larochelle's few-shot split: 64 / 16 / 20 "
          'disjoint classes in train / validation / test.'),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'classification'
  # tfds derives this from the package through importlib_resources, which
  # tfds does not install; the file itself is what it wants.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(
                shape=(IMAGE_SIZE, IMAGE_SIZE, 3), encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            'wnid': tfds.features.Text(),
            'file_name': tfds.features.Text(),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://github.com/twitter-research/meta-learning-lstm',
        citation='@inproceedings{vinyals2016matching, title={Matching '
        'Networks for One Shot Learning}, author={Vinyals, Oriol and others}'
        ', booktitle={NeurIPS}, year={2016}}',
    )

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    check_manual_files(manual_dir)
    csv_rows = read_csvs(manual_dir)
    splits = split_files(csv_rows, self.builder_config.name)
    wnids = sorted({wnid for rows in csv_rows.values() for _, wnid in rows})
    counts = {len(files) for files in _files_by_class(csv_rows).values()}
    if len(wnids) != NUM_CLASSES or counts != {600}:
      logging.warning('mini_imagenet: the CSVs in %s list %d classes of %s '
                      'images, not 100 of 600', manual_dir, len(wnids),
                      sorted(counts))
    if len(wnids) > NUM_CLASSES:
      _fail(manual_dir, f'the CSVs name {len(wnids)} classes, more than '
            f'{NUM_CLASSES}')
    return {name: self._generate_examples(manual_dir, files, wnids)
            for name, files in splits.items()}

  def _generate_examples(self, manual_dir: str,
                         files: List[Tuple[str, str]], wnids: List[str]):
    label_of = {wnid: i for i, wnid in enumerate(wnids)}
    with ImageFiles(manual_dir) as images:
      for file_name, wnid in files:
        yield file_name, {
            'image': as_stored_jpeg(images.read(file_name)),
            'label': label_of[wnid], 'wnid': wnid, 'file_name': file_name}


# ------------------------------------------------------------ the files


class ImageFiles:
  """Reads `images/<name>` or the member `<...>/<name>` of images.zip."""

  def __init__(self, manual_dir: str):
    self.folder = os.path.join(manual_dir, 'images')
    self.archive: Optional[zipfile.ZipFile] = None
    self.members: Dict[str, str] = {}
    if not os.path.isdir(self.folder):
      self.archive = zipfile.ZipFile(os.path.join(manual_dir, 'images.zip'))
      self.members = {os.path.basename(m): m for m in self.archive.namelist()
                      if not m.endswith('/')}

  def __enter__(self) -> 'ImageFiles':
    return self

  def __exit__(self, *exc) -> None:
    if self.archive is not None:
      self.archive.close()

  def names(self) -> set:
    if self.archive is None:
      return set(os.listdir(self.folder))
    return set(self.members)

  def read(self, name: str) -> bytes:
    if self.archive is None:
      with open(os.path.join(self.folder, name), 'rb') as f:
        return f.read()
    return self.archive.read(self.members[name])


def missing_files(manual_dir: str) -> List[str]:
  """The required entries absent from `manual_dir`, as names."""
  missing = [name for name in CSV_FILES
             if not os.path.isfile(os.path.join(manual_dir, name))]
  if not (os.path.isdir(os.path.join(manual_dir, 'images'))
          or os.path.isfile(os.path.join(manual_dir, 'images.zip'))):
    missing.append('images/ (or images.zip)')
  return missing


def _fail(manual_dir: str, what: str) -> None:
  raise FileNotFoundError(f'mini_imagenet: {what} in {manual_dir}; the '
                          f'directory needs {LAYOUT}')


def check_manual_files(manual_dir: str) -> None:
  """Fails with one line unless the CSVs and every image they list exist."""
  missing = missing_files(manual_dir)
  if missing:
    _fail(manual_dir, 'missing ' + ', '.join(missing))
  listed = [name for rows in read_csvs(manual_dir).values()
            for name, _ in rows]
  with ImageFiles(manual_dir) as images:
    absent = sorted(set(listed) - images.names())
  if absent:
    where = 'images/' if os.path.isdir(
        os.path.join(manual_dir, 'images')) else 'images.zip'
    _fail(manual_dir, f'{len(absent)} of the {len(listed)} images the CSVs '
          f'list are not in {where} (first: {absent[0]})')


def read_csvs(manual_dir: str) -> Dict[str, List[Tuple[str, str]]]:
  """{'train'|'val'|'test': [(file name, wnid), ...]} from the CSVs."""
  out = {}
  for name in CSV_FILES:
    path = os.path.join(manual_dir, name)
    with open(path, newline='') as f:
      rows = list(csv.reader(f))
    if not rows or [c.strip() for c in rows[0]] != ['filename', 'label']:
      raise ValueError(f'mini_imagenet: {path} must start with the header '
                       f"'filename,label'; got {rows[:1]}")
    out[name[:-4]] = [(r[0].strip(), r[1].strip()) for r in rows[1:] if r]
  return out


def _files_by_class(csv_rows) -> Dict[str, List[str]]:
  by_class: Dict[str, List[str]] = {}
  for rows in csv_rows.values():
    for file_name, wnid in rows:
      by_class.setdefault(wnid, []).append(file_name)
  return by_class


def split_files(csv_rows: Dict[str, List[Tuple[str, str]]],
                config_name: str) -> Dict[str, List[Tuple[str, str]]]:
  """The (file name, wnid) lists of each split of a builder config."""
  if config_name == 'few_shot':
    return {'train': csv_rows['train'], 'validation': csv_rows['val'],
            'test': csv_rows['test']}
  by_class = _files_by_class(csv_rows)
  splits = {'train': [], 'test': []}
  for index, wnid in enumerate(sorted(by_class)):
    names = sorted(by_class[wnid])
    if config_name == 'classification_shuffled':
      order = np.random.default_rng([SHUFFLE_SEED, index]).permutation(
          len(names))
      names = [names[i] for i in order]
    elif config_name != 'classification':
      raise ValueError(f'unknown mini_imagenet config {config_name!r}; '
                       'valid: classification, classification_shuffled, '
                       'few_shot')
    num_test = len(names) // TEST_EVERY
    cut = len(names) - num_test
    splits['train'] += [(n, wnid) for n in names[:cut]]
    splits['test'] += [(n, wnid) for n in names[cut:]]
  return splits


def as_stored_jpeg(data: bytes) -> bytes:
  """The file's bytes if it is an 84 x 84 RGB JPEG, else an 84 x 84 RGB
  JPEG (quality 95) of the picture resized bilinearly."""
  with Image.open(io.BytesIO(data)) as image:
    if (image.format == 'JPEG' and image.mode == 'RGB'
        and image.size == (IMAGE_SIZE, IMAGE_SIZE)):
      return data
    resized = image.convert('RGB').resize((IMAGE_SIZE, IMAGE_SIZE),
                                          Image.BILINEAR)
  buffer = io.BytesIO()
  resized.save(buffer, format='JPEG', quality=95)
  return buffer.getvalue()

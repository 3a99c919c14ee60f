"""What each dataset is: classes, splits, native size, statistics, loader.

A `DatasetSpec` is data, not code: adding a dataset is one `register_dataset`
call with its numbers. The pipeline (pipeline.py) reads everything it needs
from the spec; `python -m flax_attn.data prepare NAME` (prepare.py) writes
the array_record files it reads.

Conventions:
  * `mean` and `std` are per channel on the 0-255 pixel scale of the stored
    uint8 image: `normalised = (pixel - mean) / std`.
  * `image_size` is the native side of the stored images for fixed-size sets
    ('small' preprocessing) and the default crop side otherwise.
  * 'imagenet' preprocessing (variable-size images): training crops with
    `train_crop` ('random_resized': Inception / torchvision
    RandomResizedCrop; 'random': resize the shorter side to
    floor(size / crop_fraction), random size x size window; 'center': that
    resize and the central window, i.e. the eval geometry), evaluation
    resizes the shorter side to floor(size / crop_fraction) and keeps the
    central size x size window (224 / 256 = 0.875, He et al. 2016).
  * `source='tfds'` reads `tfds.data_source(tfds_name, split=...)`
    (array_record files, no TensorFlow); `source='memory'` calls
    `loader(split)` which returns `(images uint8 (N, H, W, C), labels (N,))`.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, List, Optional, Tuple

import numpy as np

from flax_attn.registry import Registry

DATASETS = Registry('dataset')

# Preprocessing families. 'small': every stored image already has the
# native size (CIFAR, digits, mini-ImageNet): optional resize to
# config.image_size, pad-and-random-crop, flip, rotation, colour jitter;
# whole batches at once. 'imagenet': variable-size images, decoded, cropped
# and resized one by one (transforms.VariableSizeTrainTransform), then
# flip, rotation, colour jitter.
PREPROCESSING = ('small', 'imagenet')
# Training crops of the 'imagenet' family (see the module docstring).
TRAIN_CROPS = ('random_resized', 'random', 'center')

_IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """One dataset, as the input pipeline needs it.

  Attributes:
    name: registry key (`config.dataset`).
    num_classes: classifier outputs.
    train_split: split iterated by `create_train_iterator`.
    eval_split: split iterated by `create_eval_iterator`.
    image_size: native side ('small') or default crop side ('imagenet').
    channels: 3 for RGB, 1 for grey.
    mean: per-channel mean, 0-255 pixel scale.
    std: per-channel standard deviation, 0-255 pixel scale.
    source: 'tfds' or 'memory'.
    tfds_name: tfds builder name (may carry '/config:version'); source='tfds'.
    loader: `loader(split) -> (images, labels)`; source='memory'.
    preprocessing: one of PREPROCESSING.
    train_crop: default training crop of the 'imagenet' family, one of
      TRAIN_CROPS (`config.augment.crop` overrides it).
    crop_fraction: eval (and 'random' / 'center' training) crop side over
      the resized shorter side ('imagenet' family).
    manual_download: tfds needs files fetched by hand before `tfds build`.
    prepare_hint: extra words for the "dataset not found" message.
    description: one line for `python -m flax_attn.data list`.
  """
  name: str
  num_classes: int
  train_split: str
  eval_split: str
  image_size: int
  channels: int
  mean: Tuple[float, ...]
  std: Tuple[float, ...]
  source: str = 'tfds'
  tfds_name: str = ''
  loader: Optional[Callable[[str], Tuple[np.ndarray, np.ndarray]]] = None
  preprocessing: str = 'small'
  train_crop: str = 'random_resized'
  crop_fraction: float = 0.875
  manual_download: bool = False
  prepare_hint: str = ''
  description: str = ''

  def __post_init__(self):
    if self.source not in ('tfds', 'memory'):
      raise ValueError(f'dataset {self.name!r}: unknown source '
                       f'{self.source!r}; valid: tfds, memory')
    if self.source == 'tfds' and not self.tfds_name:
      raise ValueError(f'dataset {self.name!r}: source tfds needs tfds_name')
    if self.source == 'memory' and self.loader is None:
      raise ValueError(f'dataset {self.name!r}: source memory needs loader')
    if self.preprocessing not in PREPROCESSING:
      raise ValueError(f'dataset {self.name!r}: unknown preprocessing '
                       f'{self.preprocessing!r}; valid: '
                       + ', '.join(PREPROCESSING))
    if self.train_crop not in TRAIN_CROPS:
      raise ValueError(f'dataset {self.name!r}: unknown train_crop '
                       f'{self.train_crop!r}; valid: ' + ', '.join(TRAIN_CROPS))
    if not 0.0 < self.crop_fraction <= 1.0:
      raise ValueError(f'dataset {self.name!r}: crop_fraction '
                       f'{self.crop_fraction} not in (0, 1]')
    if not len(self.mean) == len(self.std) == self.channels:
      raise ValueError(f'dataset {self.name!r}: mean/std need {self.channels}'
                       f' values, got {len(self.mean)}/{len(self.std)}')

  def split(self, which: str) -> str:
    """'train' or 'eval' -> this dataset's split name."""
    if which == 'train':
      return self.train_split
    if which == 'eval':
      return self.eval_split
    raise ValueError(f'unknown split {which!r}; valid: train, eval')


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
  """Adds a dataset; a name registered twice is an error."""
  return DATASETS.register(spec.name, spec)


def get_dataset_spec(name: str) -> DatasetSpec:
  """The spec of a registered dataset; an unknown name fails in one line."""
  return DATASETS.get(name)


def list_datasets(pattern: str = '*') -> List[str]:
  """Registered dataset names matching a shell-style pattern, sorted."""
  return DATASETS.names(pattern)


# CIFAR statistics: per-pixel mean and standard deviation over the 50,000
# training images (the widely copied std (0.2023, 0.1994, 0.2010) is the mean
# of per-image stds, not the dataset std).
register_dataset(DatasetSpec(
    name='cifar10', num_classes=10, train_split='train', eval_split='test',
    image_size=32, channels=3,
    mean=(0.4914 * 255, 0.4822 * 255, 0.4465 * 255),
    std=(0.2470 * 255, 0.2435 * 255, 0.2616 * 255),
    tfds_name='cifar10',
    description='CIFAR-10, 50,000/10,000 32x32 RGB, 10 classes'))

register_dataset(DatasetSpec(
    name='cifar100', num_classes=100, train_split='train', eval_split='test',
    image_size=32, channels=3,
    mean=(0.5071 * 255, 0.4865 * 255, 0.4409 * 255),
    std=(0.2673 * 255, 0.2564 * 255, 0.2762 * 255),
    tfds_name='cifar100',
    description='CIFAR-100, 50,000/10,000 32x32 RGB, 100 fine classes'))

# Datasets of the papers beyond CIFAR. ImageNet: random-resized crops for
# training (HGA Sec. 5.1 "random cropping"; the standard Inception crop),
# resize-256 / centre-224 for evaluation.
register_dataset(DatasetSpec(
    name='imagenet2012', num_classes=1000, train_split='train',
    eval_split='validation', image_size=224, channels=3,
    mean=_IMAGENET_MEAN, std=_IMAGENET_STD, tfds_name='imagenet2012',
    preprocessing='imagenet', manual_download=True,
    description='ILSVRC-2012, 1.28M/50,000 RGB, 1000 classes, 224 crops'))

# mini-ImageNet (Vinyals et al. 2016) is stored at its 84 x 84 by the
# project's builder (mini_imagenet.py), so it takes the fixed-size pipeline.
# MGAN trains a 100-class classifier; the standard files only define a
# few-shot split (disjoint classes), so the builder cuts each class 5:1
# (mini_imagenet.py says how); the two names pick the cut.
_MINI_HINT = ('mini-ImageNet is not in tfds: prepare it with `python -m '
              'flax_attn.data prepare mini_imagenet --manual_dir DIR`, DIR '
              'holding images/ (or images.zip) and train.csv, val.csv, '
              'test.csv')
register_dataset(DatasetSpec(
    name='mini_imagenet', num_classes=100, train_split='train',
    eval_split='test', image_size=84, channels=3,
    mean=_IMAGENET_MEAN, std=_IMAGENET_STD,
    tfds_name='mini_imagenet/classification', manual_download=True,
    prepare_hint=_MINI_HINT,
    description='mini-ImageNet, 100 classes x 600 84x84 images; per class '
    'the first 500 file names (sorted) train, the last 100 test'))

register_dataset(DatasetSpec(
    name='mini_imagenet_shuffled', num_classes=100, train_split='train',
    eval_split='test', image_size=84, channels=3,
    mean=_IMAGENET_MEAN, std=_IMAGENET_STD,
    tfds_name='mini_imagenet/classification_shuffled', manual_download=True,
    prepare_hint=_MINI_HINT,
    description='mini-ImageNet, 100 classes x 600 84x84 images; per class a '
    'seeded random 500 train / 100 test'))

# Fine-grained sets (Du & Ma, Sec. 2.2): ColorJitter, flip and rotation are
# the paper's whole augmentation, so the default training geometry is the
# eval one (resize, central crop); `config.augment.crop` changes it.
register_dataset(DatasetSpec(
    name='caltech_birds2011', num_classes=200, train_split='train',
    eval_split='test', image_size=224, channels=3,
    mean=_IMAGENET_MEAN, std=_IMAGENET_STD, tfds_name='caltech_birds2011',
    preprocessing='imagenet', train_crop='center',
    description='CUB-200-2011, 5,994/5,794 RGB, 200 bird species'))

register_dataset(DatasetSpec(
    name='stanford_dogs', num_classes=120, train_split='train',
    eval_split='test', image_size=224, channels=3,
    mean=_IMAGENET_MEAN, std=_IMAGENET_STD, tfds_name='stanford_dogs',
    preprocessing='imagenet', train_crop='center',
    description='Stanford Dogs, 12,000/8,580 RGB, 120 breeds'))

register_dataset(DatasetSpec(
    name='cars196', num_classes=196, train_split='train', eval_split='test',
    image_size=224, channels=3,
    mean=_IMAGENET_MEAN, std=_IMAGENET_STD, tfds_name='cars196',
    preprocessing='imagenet', train_crop='center', manual_download=True,
    prepare_hint='the upstream download link is dead: prepare it with '
    '`python -m flax_attn.data prepare cars196 --manual_dir DIR` '
    '(cars196.py lists the files DIR needs)',
    description='Stanford Cars, 8,144/8,041 RGB, 196 models'))

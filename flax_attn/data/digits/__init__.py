"""'digits': a small real image dataset that ships with the package.

The 1,797 8x8 grey handwritten digits of the UCI "Optical Recognition of
Handwritten Digits" set (E. Alpaydin, C. Kaynak, 1998; the UCI test part),
as distributed by scikit-learn (`sklearn/datasets/data/digits.csv.gz`); see
README.md here for origin and licences. Each row is 64 pixel counts in 0..16
then the label 0..9.

Readings taken:
  * pixels are rescaled to uint8 0..255 (`round(v * 255 / 16)`) so every
    dataset enters the pipeline as uint8 with 0-255 statistics;
  * a fixed, stratified split: per class 0..9 in turn, one legacy
    `np.random.RandomState(0)` stream (frozen across numpy versions) permutes
    the class's rows and its first 30 go to 'test' -> 1,497 train / 300 test
    (30 per class); each split keeps file order;
  * mean/std are the train split's pixel mean and std (0-255 scale).
Training: 8x8x1 natively (config.image_size 8, or 16 to upsample
bilinearly), crop_padding 1 (a one-pixel random shift) and no flip: digits
are not mirror-invariant.
"""
from __future__ import annotations

import functools
import gzip
import os
from typing import Tuple

import numpy as np

from flax_attn.data.specs import DatasetSpec, register_dataset

DATA_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                         'digits.csv.gz')
NUM_EXAMPLES = 1797
TEST_PER_CLASS = 30
SPLIT_SEED = 0
# Pixel statistics of the train split after rescaling to 0..255.
TRAIN_MEAN = 77.99292
TRAIN_STD = 95.96313


@functools.lru_cache(maxsize=1)
def _load_all() -> Tuple[np.ndarray, np.ndarray]:
  """All 1,797 images (N, 8, 8, 1) uint8 0..255 and labels (N,) int32."""
  if not os.path.exists(DATA_FILE):
    raise FileNotFoundError(
        f'dataset digits: data file {DATA_FILE} is missing; reinstall '
        'flax-attn with its package data (flax_attn/data/digits/*.csv.gz)')
  with gzip.open(DATA_FILE, 'rt') as f:
    table = np.loadtxt(f, delimiter=',', dtype=np.float64)
  counts = table[:, :64].reshape(-1, 8, 8, 1)
  images = np.round(counts * 255.0 / 16.0).astype(np.uint8)
  labels = table[:, 64].astype(np.int32)
  images.setflags(write=False)
  labels.setflags(write=False)
  return images, labels


@functools.lru_cache(maxsize=1)
def split_indices() -> Tuple[np.ndarray, np.ndarray]:
  """Row indices (train, test) of the fixed stratified split, each sorted."""
  _, labels = _load_all()
  stream = np.random.RandomState(SPLIT_SEED)
  test = []
  for label in range(10):
    rows = np.flatnonzero(labels == label)
    test.append(stream.permutation(rows)[:TEST_PER_CLASS])
  test = np.sort(np.concatenate(test))
  train = np.setdiff1d(np.arange(len(labels)), test)
  return train, test


def load_digits(split: str) -> Tuple[np.ndarray, np.ndarray]:
  """`(images uint8 (N, 8, 8, 1), labels int32 (N,))` of 'train' or 'test'."""
  images, labels = _load_all()
  train, test = split_indices()
  if split == 'train':
    rows = train
  elif split == 'test':
    rows = test
  elif split == 'all':
    rows = np.arange(len(labels))
  else:
    raise ValueError(f'unknown digits split {split!r}; valid: train, test, '
                     'all')
  return images[rows], labels[rows]


register_dataset(DatasetSpec(
    name='digits', num_classes=10, train_split='train', eval_split='test',
    image_size=8, channels=1, mean=(TRAIN_MEAN,), std=(TRAIN_STD,),
    source='memory', loader=load_digits,
    description='UCI handwritten digits (scikit-learn copy), 1,497/300 '
    '8x8 grey, 10 classes; ships with the package'))

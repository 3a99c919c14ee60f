"""Train and eval input pipelines: `tfds.data_source` + grain, no TensorFlow.

Training (`create_train_iterator`) is a grain MapDataset whose elements are
whole batches:

  MapDataset.source(ShuffledBatches(source, rows, batch, seed, slice))
    .random_map(TrainTransform, seed)         # augmentation, per batch
    .to_iter_dataset(...)[.mp_prefetch(num_workers)]

`ShuffledBatches` cuts an endless stream of epochs into global batches of
config.batch_size; each epoch is a fresh permutation of the whole split,
drawn from (seed, epoch), and process p of P reads rows [p * B / P,
(p + 1) * B / P) of each global batch. The augmentation draws are made for
the whole global batch too (one generator per step, seeded by (seed,
step)) and sliced the same way. Global batch k is thus a pure function of
(seed, k), the same whatever the number of processes and devices: the
iterator's state is grain's position (a small dict of ints, the same on
every process), `set_state` on a fresh iterator -- on any number of
processes -- continues with exactly the batches the saved one would have
given, and the batches do not depend on `num_workers` (grain's workers take
whole batches). Batches run across epoch boundaries; steps per epoch is
`num_examples(config, 'train') // config.batch_size`. (Batches, not
examples, are grain's elements because grain's per-element shuffle and
bookkeeping cost ~150 us an example, more than the augmentation.)

Variable-size datasets (spec.preprocessing 'imagenet': ImageNet, the
fine-grained sets) use the same batches of source rows, but the elements
hold the still-encoded images with each example's (epoch, index), and
`VariableSizeTrainTransform` decodes, crops and augments them one by one
(each from its own generator, seeded by (seed, epoch, index)) before
stacking; with num_workers > 0 all of that runs in grain's worker
processes, a whole batch per worker. Images are read from tfds with
decoding skipped (`tfds.decode.SkipDecoding`) and decoded with pillow to
RGB (grey and CMYK JPEGs included); under `tfds.testing.mock_data` the
mock's arrays are taken as they come.

Evaluation (`create_eval_iterator`) splits the eval split into
`process_count` contiguous shares of ceil(N / process_count) examples (the
last share may be shorter), pads every share with masked zero examples to
the same whole number of batches, so every process runs the same number of
steps (multi-host `jit`) and masked sums over all processes see each example
exactly once.
"""
from __future__ import annotations

import functools
import math
import os
import sys
from typing import Any, Dict, Iterator, Optional, Sequence

import grain
import numpy as np

from flax_attn.data.specs import TRAIN_CROPS, DatasetSpec, get_dataset_spec
from flax_attn.data.transforms import (EvalTransform, TrainTransform,
                                       VariableSizeEvalTransform,
                                       VariableSizeTrainTransform)
from flax_attn.errors import ConfigError, DatasetNotFoundError  # noqa: F401

# In-process prefetch: threads that build whole batches ahead of the trainer,
# and how many batches they may hold (memory: batches x batch bytes).
_READ_THREADS = 2
_PREFETCH_BATCHES = 4
# Inside each grain worker of a variable-size pipeline: the workers give the
# parallelism, and a 224 batch of 256 is 38.5 MB of uint8.
_WORKER_READ_OPTIONS = dict(num_threads=1, prefetch_buffer_size=2)


# ----------------------------------------------------------------- sources


class ArraySource:
  """Random access over in-memory data: {'image': uint8 HWC, 'label'}.

  `images` is a uint8 (N, H, W, C) array, or a sequence of images (arrays
  of different sizes, or encoded bytes) for variable-size datasets.
  """

  def __init__(self, images, labels: np.ndarray):
    if len(images) != len(labels):
      raise ValueError(f'{len(images)} images but {len(labels)} labels')
    self.images = images
    self.labels = np.asarray(labels, np.int32)

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> Dict[str, Any]:
    return {'image': self.images[index], 'label': self.labels[index]}

  def get_batch(self, rows: np.ndarray) -> Dict[str, np.ndarray]:
    if isinstance(self.images, np.ndarray):
      return {'image': self.images[rows], 'label': self.labels[rows]}
    return {'image': np.stack([np.asarray(self.images[int(r)]) for r in rows]),
            'label': self.labels[rows]}

  def get_examples(self, rows: np.ndarray) -> Dict[str, Any]:
    """Images as a list (variable sizes, possibly encoded), labels."""
    return {'image': [self.images[int(row)] for row in rows],
            'label': self.labels[rows]}

  def __repr__(self) -> str:
    return f'ArraySource(num_examples={len(self)})'


class TfdsSource:
  """A `tfds.data_source` split reduced to {'image', 'label'}: 'image' is
  uint8 HWC, or the encoded bytes where the source skips decoding."""

  def __init__(self, source: Sequence[Dict[str, Any]], name: str):
    self.source = source
    self.name = name
    # tfds' mock answers `__getitems__` with a TypeError.
    self._batched_reads = (hasattr(source, '__getitems__')
                           and not _is_mocked(source))

  def __len__(self) -> int:
    return len(self.source)

  def _read(self, rows: Sequence[int]):
    """Examples of `rows`; one `__getitems__` call where the source has it
    (ArrayRecord reads them in parallel)."""
    rows = [int(row) for row in rows]
    try:
      if self._batched_reads:
        return list(self.source.__getitems__(rows))
      return [self.source[row] for row in rows]
    except ImportError as e:  # tfds decodes PNG/JPEG with pillow or opencv
      raise ImportError(f'reading {self.name} images needs pillow or opencv '
                        f'to decode them: pip install pillow ({e})'
                        .replace('\n', ' ')) from e

  @staticmethod
  def _reduce(example) -> Dict[str, Any]:
    image = example['image']
    if not isinstance(image, bytes):
      image = np.asarray(image)
    return {'image': image, 'label': np.int32(example['label'])}

  def __getitem__(self, index: int) -> Dict[str, Any]:
    return self._reduce(self._read([index])[0])

  def get_batch(self, rows: np.ndarray) -> Dict[str, np.ndarray]:
    examples = [self._reduce(e) for e in self._read(rows)]
    return {'image': np.stack([e['image'] for e in examples]),
            'label': np.array([e['label'] for e in examples], np.int32)}

  def get_examples(self, rows: np.ndarray) -> Dict[str, Any]:
    examples = [self._reduce(e) for e in self._read(rows)]
    return {'image': [e['image'] for e in examples],
            'label': np.array([e['label'] for e in examples], np.int32)}

  def __repr__(self) -> str:
    return f'TfdsSource({self.name!r}, num_examples={len(self)})'


def _one_line(text: str) -> str:
  return ' '.join(str(text).split())


def _missing_message(spec: DatasetSpec, data_dir: Optional[str],
                     error: Exception) -> str:
  """One line: which dataset, where it was looked for, how to prepare it."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core import constants  # pylint: disable=g-import-not-at-top
  from flax_attn.data import prepare  # pylint: disable=g-import-not-at-top
  where = data_dir or constants.DATA_DIR
  command = f'python -m flax_attn.data prepare {spec.name} --data_dir={where}'
  if prepare.tfds_can_build(spec):
    command += (f'` (= `tfds build {spec.tfds_name} '
                f'--file_format=array_record --data_dir={where}`)')
  else:
    command += '`'
  head = f'dataset {spec.name!r} (tfds {spec.tfds_name!r}) '
  try:
    builder = tfds.builder(spec.tfds_name, data_dir=where)
  except Exception as e:  # pylint: disable=broad-except
    reason = str(e).strip().split('\n')[0][:200]  # tfds lists every name
    hint = f'; {spec.prepare_hint}' if spec.prepare_hint else ''
    return _one_line(f'{head}cannot be opened in data_dir {where!r}: '
                     f'{type(e).__name__}: {reason}{hint}')
  if builder.is_prepared():
    return _one_line(
        f'{head}in data_dir {where!r} could not be read as array_record '
        f'files ({error}); training reads array_record only: delete '
        f'{builder.data_dir} and prepare it again with `{command}')
  manual = ''
  layout = prepare.manual_layout(spec)
  if layout:
    manual = (f' --manual_dir DIR (default '
              f'{os.path.join(where, "downloads", "manual")}), DIR holding '
              f'{layout}')
  elif spec.prepare_hint:
    manual = f' ({spec.prepare_hint})'
  return _one_line(
      f'{head}not found in data_dir {where!r} (looked for {builder.data_dir}):'
      f' prepare it once with `{command}{manual}; preparing may need '
      f'TensorFlow (pip install tensorflow pillow), training never does')


def _is_mocked(source) -> bool:
  """True for the random data of `tfds.testing.mock_data`."""
  from unittest import mock  # pylint: disable=g-import-not-at-top
  return isinstance(getattr(source, 'data_source', None), mock.Mock)


def load_source(spec: DatasetSpec, split: str,
                data_dir: Optional[str] = None, encoded: bool = False):
  """A random-access source of {'image': uint8 (H, W, C), 'label': int32}.

  encoded=True: tfds image features are not decoded ('image' holds the
  JPEG / PNG bytes, decoded later by `transforms.decode_rgb`), so variable-
  size pipelines decode in their workers and skip extra image features
  (CUB's segmentation masks) altogether. Mocked tfds data comes decoded.
  """
  if spec.source == 'memory':
    images, labels = spec.loader(split)
    return ArraySource(images, labels)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    source = tfds.data_source(spec.tfds_name, split=split,
                              data_dir=data_dir or None, download=False)
  except Exception as e:  # pylint: disable=broad-except
    raise DatasetNotFoundError(_missing_message(spec, data_dir, e)) from e
  if encoded and not _is_mocked(source):
    features = source.dataset_info.features
    skip = {key: tfds.decode.SkipDecoding() for key, feature in
            features.items() if isinstance(feature, tfds.features.Image)}
    if skip:
      source = tfds.data_source(spec.tfds_name, split=split,
                                data_dir=data_dir or None, download=False,
                                decoders=skip)
  return TfdsSource(source, spec.name)


# ----------------------------------------------------------------- config


def _augment(config, field: str, default):
  augment = config.get('augment', None) if hasattr(config, 'get') else None
  if augment is None:
    return default
  value = augment.get(field, default)
  return default if value is None else value


def _spec_and_size(config):
  spec = get_dataset_spec(config.dataset)
  image_size = int(config.get('image_size', 0) or spec.image_size)
  return spec, image_size


def _check_augment(config, spec: DatasetSpec) -> None:
  """Options of one preprocessing family set for the other fail."""
  crop = _augment(config, 'crop', '')
  padding = int(_augment(config, 'crop_padding', 0))
  if spec.preprocessing == 'imagenet' and padding > 0:
    raise ConfigError(
        f'config.augment.crop_padding={padding} pads fixed-size images; '
        f'dataset {spec.name!r} has variable-size images cropped by '
        f'config.augment.crop ({", ".join(TRAIN_CROPS)}; default '
        f'{spec.train_crop}): set config.augment.crop_padding=0')
  if spec.preprocessing == 'small' and crop:
    raise ConfigError(
        f'config.augment.crop={crop!r} crops variable-size images; dataset '
        f'{spec.name!r} has fixed-size images (config.augment.crop_padding '
        'gives its random crops): set config.augment.crop=\'\'')
  if crop and crop not in TRAIN_CROPS:
    raise ConfigError(f'config.augment.crop={crop!r} is not valid; valid: '
                      + ', '.join(TRAIN_CROPS))
  hue = float(_augment(config, 'hue', 0.0))
  if not 0.0 <= hue <= 0.5:
    raise ConfigError(f'config.augment.hue={hue} not in [0, 0.5]')


def _check_process(process_index: int, process_count: int):
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, '
                     f'process_count={process_count})')


def per_process_batch_size(batch_size: int, process_count: int) -> int:
  if batch_size <= 0 or batch_size % process_count:
    raise ValueError(f'batch_size {batch_size} must be a positive multiple '
                     f'of process_count {process_count}')
  return batch_size // process_count


def _derived_seeds(seed: int, process_index: int, count: int):
  """Independent 32-bit seeds from (seed, process_index); SeedSequence
  hashes them, so nearby seeds give unrelated streams."""
  entropy = [int(seed) % 2**64, int(process_index)]
  return [int(s) for s in
          np.random.SeedSequence(entropy).generate_state(count, np.uint32)]


def num_examples(config, split: str) -> int:
  """Examples in the 'train' or 'eval' split of `config.dataset`."""
  spec = get_dataset_spec(config.dataset)
  source = load_source(spec, spec.split(split), config.get('data_dir', ''))
  return len(source)


# ----------------------------------------------------------------- training


@functools.lru_cache(maxsize=4)
def epoch_permutation(seed: int, epoch: int, size: int) -> np.ndarray:
  """The order of epoch `epoch`: a permutation of range(size) from
  (seed, epoch) (numpy's PCG64 via SeedSequence)."""
  order = np.random.default_rng([seed, epoch]).permutation(size)
  order.setflags(write=False)
  return order


class ShuffledBatches:
  """Random access to the batches of an endless stream of shuffled epochs.

  Stream position q holds example `rows[perm_e[q % n]]` with e = q // n,
  n = len(rows) and perm_e = epoch_permutation(seed, e, n); global batch k
  holds positions [k * G, (k + 1) * G), G = batch_size * num_slices, and
  this object's batch k is slice `slice_index` of it: positions
  k * G + slice_index * batch_size + [0, batch_size).
  """

  def __init__(self, source, rows: np.ndarray, batch_size: int, seed: int,
               slice_index: int = 0, num_slices: int = 1):
    if len(rows) == 0:
      raise ValueError('no training examples for this process')
    self.source = source
    self.rows = np.asarray(rows, np.int64)
    self.batch_size = batch_size
    self.seed = seed
    # This process's slice of each global batch of batch_size * num_slices.
    self.slice_index, self.num_slices = slice_index, num_slices

  def __len__(self) -> int:
    return sys.maxsize  # endless

  def example_rows(self, step: int) -> np.ndarray:
    """The source rows of batch `step`, in order."""
    return self.epochs_and_rows(step)[1]

  def epochs_and_rows(self, step: int):
    """(epochs, source rows) of the examples of batch `step`, in order."""
    size = len(self.rows)
    positions = ((step * self.num_slices + self.slice_index) * self.batch_size
                 + np.arange(self.batch_size))
    epochs, offsets = np.divmod(positions, size)
    order = np.empty(self.batch_size, np.int64)
    for epoch in np.unique(epochs):
      here = epochs == epoch
      order[here] = epoch_permutation(self.seed, int(epoch), size)[
          offsets[here]]
    return epochs, self.rows[order]

  def __getitem__(self, step: int) -> Dict[str, np.ndarray]:
    return self.source.get_batch(self.example_rows(step))


class ShuffledExamples(ShuffledBatches):
  """ShuffledBatches for variable-size images: batch `step` is
  {'image': list of (encoded) images, 'label', 'epoch', 'index'}, where
  'index' is each example's source row."""

  def __getitem__(self, step: int) -> Dict[str, Any]:
    epochs, rows = self.epochs_and_rows(step)
    batch = self.source.get_examples(rows)
    batch['epoch'] = epochs
    batch['index'] = rows
    return batch


def _ensure_absl_flags_parsed():
  """grain's worker processes read absl flags (--grain_*); outside an
  absl app (a notebook, a test) nothing parsed them, so take the defaults."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def train_dataset(config, *, seed: int, process_index: int = 0,
                  process_count: int = 1) -> grain.IterDataset:
  """The grain IterDataset behind `create_train_iterator`."""
  _check_process(process_index, process_count)
  spec, image_size = _spec_and_size(config)
  _check_augment(config, spec)
  batch_size = per_process_batch_size(config.batch_size, process_count)
  variable_size = spec.preprocessing == 'imagenet'
  source = load_source(spec, spec.train_split, config.get('data_dir', ''),
                       encoded=variable_size)
  # Seeded by `seed` alone (process 0's seeds of old, so one process reads
  # what it always did): every process draws the same global batches.
  shuffle_seed, augment_seed = _derived_seeds(seed, 0, 2)
  rows = np.arange(len(source))
  layout = dict(slice_index=process_index, num_slices=process_count)
  flip = bool(_augment(config, 'flip', False))
  rotation = float(_augment(config, 'rotation', 0.0))
  jitter = float(_augment(config, 'color_jitter', 0.0))
  hue = float(_augment(config, 'hue', 0.0))
  if variable_size:
    # Seeded by `seed` alone: an example's augmentation in an epoch does not
    # depend on the process layout.
    transform = VariableSizeTrainTransform(
        image_size=image_size, seed=_derived_seeds(seed, 0, 3)[2],
        crop=str(_augment(config, 'crop', '') or spec.train_crop),
        scale=tuple(float(v) for v in _augment(config, 'crop_scale',
                                               (0.08, 1.0))),
        ratio=tuple(float(v) for v in _augment(config, 'crop_ratio',
                                               (3 / 4, 4 / 3))),
        crop_fraction=float(_augment(config, 'crop_fraction',
                                     spec.crop_fraction)),
        flip=flip, rotation=rotation, color_jitter=jitter, hue=hue)
    batches = ShuffledExamples(source, rows, batch_size, shuffle_seed,
                               **layout)
    dataset = grain.MapDataset.source(batches).map(transform)
  else:
    transform = TrainTransform(
        image_size=image_size, crop_padding=int(_augment(config, 'crop_padding', 0)),
        flip=flip, rotation=rotation, color_jitter=jitter, hue=hue,
        **layout)
    batches = ShuffledBatches(source, rows, batch_size, shuffle_seed,
                              **layout)
    dataset = grain.MapDataset.source(batches)
    dataset = dataset.random_map(transform, seed=augment_seed)
  num_workers = int(config.get('num_workers', 0) or 0)
  if num_workers > 0 and variable_size:
    read_options = grain.ReadOptions(**_WORKER_READ_OPTIONS)
  else:
    read_options = grain.ReadOptions(num_threads=_READ_THREADS,
                                     prefetch_buffer_size=_PREFETCH_BATCHES)
  dataset = dataset.to_iter_dataset(read_options)
  if num_workers > 0:
    _ensure_absl_flags_parsed()
    dataset = dataset.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=num_workers))
  return dataset


def create_train_iterator(config, *, seed: int, process_index: int = 0,
                          process_count: int = 1) -> grain.DatasetIterator:
  """Endless, deterministic, resumable per-process training batches.

  Yields {'image': pixels (B, S, S, C), 'label': int32 (B,)}: uint8, or
  float32 on the 0-255 scale where the recipe computes fractions
  (fixed-size resize / rotation / colour jitter, colour jitter without
  hue); not normalised: `data.prepare_on_device` does that in the step
  with B = config.batch_size // process_count and S = config.image_size
  (0 = the dataset's native size). `it.get_state()` is a JSON-serialisable
  dict (grain's, e.g. {'next_index': 12}; with workers a larger dict of
  ints); save it with `grain.checkpoint.CheckpointSave(it)` in an orbax
  Composite or as `json.dumps(state)`. `set_state(state)` on an iterator
  made with the same config and seed continues with exactly the same
  global batches, on any number of processes (each reads its slice). With config.num_workers > 0, call `it.close()`
  when done to stop the worker processes.
  """
  return iter(train_dataset(config, seed=seed, process_index=process_index,
                            process_count=process_count))


# ----------------------------------------------------------------- evaluation


class PaddedEvalBatches:
  """Batches of examples [start, stop) of `source`, the last one padded
  with zero images, label 0 and mask 0.0 up to `num_batches` batches."""

  def __init__(self, source, start: int, stop: int, num_batches: int,
               batch_size: int, pad_shape: Sequence[int]):
    self.source = source
    self.start, self.stop = start, stop
    self.num_batches, self.batch_size = num_batches, batch_size
    self.pad_shape = tuple(pad_shape)

  def __len__(self) -> int:
    return self.num_batches

  def __getitem__(self, index: int) -> Dict[str, np.ndarray]:
    positions = self.start + index * self.batch_size + np.arange(
        self.batch_size)
    real = positions < self.stop
    images = np.zeros((self.batch_size,) + self.pad_shape, np.uint8)
    labels = np.zeros(self.batch_size, np.int32)
    if real.any():
      batch = self.source.get_batch(positions[real])
      if batch['image'].shape[1:] != self.pad_shape:
        images = np.zeros((self.batch_size,) + batch['image'].shape[1:],
                          batch['image'].dtype)
      images[real] = batch['image']
      labels[real] = batch['label']
    return {'image': images, 'label': labels,
            'mask': real.astype(np.float32)}


class PaddedEvalExamples(PaddedEvalBatches):
  """PaddedEvalBatches of variable-size images: 'image' is a list holding
  each example's (encoded) image, None for padding."""

  def __getitem__(self, index: int) -> Dict[str, Any]:
    positions = self.start + index * self.batch_size + np.arange(
        self.batch_size)
    real = positions < self.stop
    images = [None] * self.batch_size
    labels = np.zeros(self.batch_size, np.int32)
    if real.any():
      batch = self.source.get_examples(positions[real])
      for slot, image in zip(np.flatnonzero(real), batch['image']):
        images[slot] = image
      labels[real] = batch['label']
    return {'image': images, 'label': labels,
            'mask': real.astype(np.float32)}


class EvalIterable:
  """A finite, re-iterable pass over this process's share of the eval split.

  Each `iter()` starts a new pass of `len(self)` batches of
  {'image': pixels (B, S, S, C) (as create_train_iterator's), 'label':
  int32 (B,), 'mask': float32 (B,)}.
  """

  def __init__(self, dataset: grain.MapDataset, num_batches: int,
               num_examples: int, share: range, batch_size: int):
    self._dataset = dataset
    self.num_batches = num_batches
    self.num_examples = num_examples  # the whole split, all processes
    self.share = share                # this process's example indices
    self.batch_size = batch_size

  def __len__(self) -> int:
    return self.num_batches

  def __iter__(self) -> Iterator[Dict[str, np.ndarray]]:
    return iter(self._dataset.to_iter_dataset(grain.ReadOptions(
        num_threads=_READ_THREADS, prefetch_buffer_size=_PREFETCH_BATCHES)))


def create_eval_iterator(config, *, batch_size: int, process_index: int = 0,
                         process_count: int = 1,
                         split: Optional[str] = None) -> EvalIterable:
  """Every eval example exactly once across processes, padded and masked.

  `split`: the split to read with the eval transform (no augmentation);
  None = the dataset's eval split.

  `batch_size` is per process. Process p reads the contiguous examples
  [p * ceil(N / P), min(N, (p + 1) * ceil(N / P))); all processes yield
  ceil(ceil(N / P) / batch_size) batches; padding images are zeros with
  label 0 and mask 0.0, so sum(mask) over all processes equals N.
  """
  _check_process(process_index, process_count)
  if batch_size <= 0:
    raise ValueError(f'eval batch_size {batch_size} must be positive')
  spec, image_size = _spec_and_size(config)
  variable_size = spec.preprocessing == 'imagenet'
  source = load_source(spec, split or spec.eval_split,
                       config.get('data_dir', ''), encoded=variable_size)
  total = len(source)
  share_size = math.ceil(total / process_count)
  start = min(total, process_index * share_size)
  stop = min(total, start + share_size)
  num_batches = math.ceil(share_size / batch_size)
  if variable_size:
    batches = PaddedEvalExamples(source, start, stop, num_batches,
                                 batch_size, pad_shape=())
    transform = VariableSizeEvalTransform(
        image_size=image_size, crop_fraction=float(_augment(config, 'crop_fraction',
                                     spec.crop_fraction)))
  else:
    batches = PaddedEvalBatches(
        source, start, stop, num_batches, batch_size,
        pad_shape=(spec.image_size, spec.image_size, spec.channels))
    transform = EvalTransform(image_size=image_size)
  dataset = grain.MapDataset.source(batches).map(transform)
  return EvalIterable(dataset, num_batches, total, range(start, stop),
                      batch_size)

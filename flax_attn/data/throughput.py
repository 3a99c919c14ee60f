"""How fast this host feeds an accelerator: `python -m flax_attn.data bench`.

Runs a dataset's training recipe through `create_train_iterator` (the code
training uses, in process, pinned to one CPU core) and reports images per
CPU-second: the rate one core of this host sustains. Multiplying out the
accelerators' consumption gives the cores the input pipeline needs.
"""
from __future__ import annotations

import importlib.util
import math
import os
import time
from typing import Dict, Optional

import ml_collections

from flax_attn.data.pipeline import create_train_iterator
from flax_attn.data.specs import get_dataset_spec

# An assumption, not a measurement: training images/s of one accelerator
# for ResNet-50 at 224 px, of the order published for an H100-class GPU or
# a TPU v5e chip with mixed precision. Pass your own with
# --accelerator_images_per_s.
DEFAULT_ACCELERATOR_IMAGES_PER_S = 3000.0


def default_recipe(name: str, image_size: int = 0, batch_size: int = 64,
                   data_dir: str = '') -> ml_collections.ConfigDict:
  """The training recipe the project's configs use for dataset `name`:
  fixed-size sets pad-and-crop (4 px at 32, 1 px at 8) and flip; variable-
  size sets their default crop and a flip, the fine-grained ones (default
  crop 'center') also rotation 15, colour jitter 0.4 and hue 0.1 (the
  CSCA configs)."""
  spec = get_dataset_spec(name)
  config = ml_collections.ConfigDict()
  config.dataset, config.data_dir = name, data_dir
  config.image_size, config.batch_size, config.num_workers = (
      image_size, batch_size, 0)
  augment = ml_collections.ConfigDict()
  augment.flip = True
  augment.crop_padding = 0
  augment.rotation, augment.color_jitter, augment.hue = 0.0, 0.0, 0.0
  if spec.preprocessing == 'small':
    augment.crop_padding = max(1, (image_size or spec.image_size) // 8)
  elif spec.train_crop == 'center':
    augment.rotation, augment.color_jitter, augment.hue = 15.0, 0.4, 0.1
  config.augment = augment
  return config


def config_from_file(path: str, name: str) -> ml_collections.ConfigDict:
  """`get_config()` of a config file (as train.py --config), for `name`."""
  module_spec = importlib.util.spec_from_file_location('bench_config', path)
  if module_spec is None or not os.path.exists(path):
    raise FileNotFoundError(f'--config {path!r}: no such file')
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config()
  config.dataset = name
  config.num_workers = 0
  return config


def _settled_cpu() -> float:
  """Process CPU seconds once the prefetch threads have filled their
  buffers and stopped."""
  before = time.process_time()
  while True:
    time.sleep(0.3)
    now = time.process_time()
    if now - before < 0.02:
      return now
    before = now


def measure(config, batches: int = 8, cpu: Optional[int] = None
            ) -> Dict[str, float]:
  """Images per CPU-second of `config`'s training pipeline, pinned to one
  CPU (`cpu`; default: the last one this process may use)."""
  pinned = None
  if hasattr(os, 'sched_getaffinity'):
    pinned = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu if cpu is not None else max(pinned)})
  try:
    iterator = create_train_iterator(config, seed=0)
    batch = next(iterator)
    next(iterator)
    start = _settled_cpu()  # buffers full: the window holds `batches`
    wall = time.perf_counter()
    for _ in range(batches):
      next(iterator)
    wall = time.perf_counter() - wall
    cpu_seconds = _settled_cpu() - start
  finally:
    if pinned is not None:
      os.sched_setaffinity(0, pinned)
  images = batches * len(batch['label'])
  return {'images_per_cpu_s': images / cpu_seconds,
          'images_per_s_wall': images / wall,
          'image_shape': tuple(batch['image'].shape[1:]),
          'dtype': str(batch['image'].dtype)}


def cores_needed(images_per_core: float, accelerators: int,
                 accelerator_images_per_s: float) -> int:
  return math.ceil(accelerators * accelerator_images_per_s / images_per_core)


def report_lines(name: str, config, result: Dict[str, float],
                 accelerators: int, accelerator_images_per_s: float):
  rate = result['images_per_cpu_s']
  augment = config.get('augment', {}) or {}
  recipe = ', '.join(f'{k}={v}' for k, v in sorted(dict(augment).items())
                     if v not in (0, 0.0, False, ''))
  cores = cores_needed(rate, accelerators, accelerator_images_per_s)
  return [
      f'{name}: {result["dtype"]} batches of {result["image_shape"]}, '
      f'recipe: {recipe or "none"}',
      f'images/s per core: {rate:.0f} (per CPU-second, one pinned core; '
      f'wall {result["images_per_s_wall"]:.0f}/s with this host\'s load)',
      f'{accelerators} accelerator(s) at {accelerator_images_per_s:g} '
      f'images/s each (assumed; --accelerator_images_per_s) need {cores} '
      f'core(s) of this host for input'
      + (f' (config.num_workers={cores})' if cores > 1 else
         ' (config.num_workers=0 keeps up)'),
  ]

"""Input pipeline throughput next to the train step's consumption.

  python benchmarks/input_throughput.py [--quick] [--workers 0 2]

Measures, on this machine, in images per second:
  * the input pipelines (`flax_attn.data.create_train_iterator`, the code
    training uses) on fabricated in-memory data:
      cifar       32 x 32 uint8 arrays, pad-4 crop + flip (CIFAR recipe),
      imagenet    JPEGs of ImageNet's typical size (300-500 px sides, smooth
                  content so they compress like photographs), decoded,
                  random-resized crop to 224 + flip,
      finegrained the same JPEGs, resize-256 / centre-224 + flip, rotation
                  15 degrees, colour jitter 0.4 (the CSCA configs);
    for each number of grain worker processes given (0 = in-process threads);
  * the cost of each step of the 224 pipeline, per image, one thread;
  * the jitted train step (`flax_attn.train.train_step`, SGD) of resnet20 at
    32 x 32 and resnet50 at 224 x 224 at the same batch sizes.
The input pipeline keeps up when its images/s exceed the step's.
"""
from __future__ import annotations

import argparse
import functools
import io
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from configs import default  # noqa: E402
from flax_attn import data, train  # noqa: E402
from flax_attn.data import transforms as T  # noqa: E402
from flax_attn.init_rng import init_key  # noqa: E402
from flax_attn.models import model_from_config  # noqa: E402

_MEAN = (123.7, 116.3, 103.5)
_STD = (58.4, 57.1, 57.4)


def smooth_jpegs(count: int, seed: int = 0):
  """JPEG bytes of `count` photograph-like pictures (low-frequency colour
  fields plus mild noise), sides uniform in [300, 500], quality 90."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(count):
    height, width = (int(v) for v in rng.integers(300, 501, size=2))
    coarse = rng.integers(0, 256, (height // 40 + 2, width // 40 + 2, 3),
                          np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((width, height),
                                                      Image.BICUBIC),
                       np.float32)
    field += rng.normal(0, 6, field.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(field, 0, 255).astype(np.uint8)).save(
        buffer, format='JPEG', quality=90)
    out.append(buffer.getvalue())
  return out


def register_benchmark_datasets(num_jpegs: int):
  if 'bench_cifar' in data.DATASETS:
    return
  rng = np.random.default_rng(0)
  cifar = rng.integers(0, 256, (4096, 32, 32, 3), np.uint8)
  jpegs = smooth_jpegs(num_jpegs)
  labels = rng.integers(0, 1000, num_jpegs)
  data.register_dataset(data.DatasetSpec(
      name='bench_cifar', num_classes=10, train_split='train',
      eval_split='train', image_size=32, channels=3, mean=_MEAN, std=_STD,
      source='memory', loader=lambda split: (cifar, np.arange(4096) % 10)))
  for name, crop in (('bench_imagenet', 'random_resized'),
                     ('bench_finegrained', 'center')):
    data.register_dataset(data.DatasetSpec(
        name=name, num_classes=1000, train_split='train', eval_split='train',
        image_size=224, channels=3, mean=_MEAN, std=_STD, source='memory',
        loader=lambda split: (jpegs, labels), preprocessing='imagenet',
        train_crop=crop))
  return jpegs


def pipeline_config(kind: str, batch_size: int, workers: int):
  config = default.get_config()
  config.batch_size = batch_size
  config.num_workers = workers
  if kind == 'cifar':
    config.dataset, config.image_size = 'bench_cifar', 32
    config.augment.crop_padding, config.augment.flip = 4, True
  else:
    config.dataset = f'bench_{kind}'
    config.image_size = 224
    config.augment.crop_padding, config.augment.flip = 0, True
    if kind == 'finegrained':
      config.augment.rotation, config.augment.color_jitter = 15.0, 0.4
  return config


def pipeline_rate(kind: str, batch_size: int, workers: int,
                  batches: int) -> float:
  config = pipeline_config(kind, batch_size, workers)
  iterator = data.create_train_iterator(config, seed=0)
  try:
    for _ in range(max(2, workers)):  # start-up and worker spawn
      next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
      next(iterator)
    elapsed = time.perf_counter() - start
  finally:
    if workers:
      iterator.close()
  return batches * batch_size / elapsed


def stage_costs(jpegs, repeats: int = 1):
  """Milliseconds per image of each step of the 224 pipelines."""
  rng = np.random.default_rng(0)
  decoded = [T.decode_rgb(j) for j in jpegs]
  crops = []
  costs = {}

  def timed(name, fn, items):
    start = time.perf_counter()
    out = [fn(x) for _ in range(repeats) for x in items]
    costs[name] = (time.perf_counter() - start) * 1e3 / (repeats * len(items))
    return out[:len(items)]

  timed('JPEG decode (pillow)', T.decode_rgb, jpegs)
  crops = timed('random-resized crop to 224',
                lambda im: T.resized_crop(im, T.random_resized_crop_box(
                    im.shape[0], im.shape[1], rng), 224), decoded)
  timed('resize 256 + centre crop 224',
        lambda im: T.resize_and_center_crop(im, 224), decoded)
  timed('flip', lambda im: np.ascontiguousarray(im[:, ::-1]), crops)
  timed('rotation (pillow)', lambda im: T.rotate_uint8(im, 12.0), crops)
  timed('colour jitter (numpy float)',
        lambda im: T.color_jitter(im.astype(np.float32), 1.2, 0.8, 1.1),
        crops)
  timed('normalise', lambda im: T.normalize(im, _MEAN, _STD), crops)
  return costs


def step_rate(model: str, image_size: int, batch_size: int,
              steps: int) -> float:
  """Images/s of the jitted `train.train_step` (SGD, L2) on random data."""
  config = default.get_config()
  config.model = model
  num_classes = 10 if image_size == 32 else 1000
  net = model_from_config(config, num_classes)
  lr_fn = train.create_learning_rate_fn(config, 100, 1000)
  tx = train.create_optimizer(config, lr_fn)
  state = train.create_train_state(init_key(0), net, tx,
                                   (image_size, image_size, 3), False)
  step = jax.jit(functools.partial(
      train.train_step, model=net, tx=tx, lr_fn=lr_fn,
      num_classes=num_classes, label_smoothing=0.0, ema_decay=0.0),
                 donate_argnums=(0,))
  rng = np.random.default_rng(0)
  batch = {'image': rng.normal(size=(batch_size, image_size, image_size, 3))
                    .astype(np.float32),
           'label': rng.integers(0, num_classes, batch_size).astype(np.int32)}
  state, metrics = step(state, batch)  # compile
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  return steps * batch_size / (time.perf_counter() - start)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument('--quick', action='store_true',
                      help='fewer batches and steps')
  parser.add_argument('--workers', type=int, nargs='+', default=[0, 2])
  parser.add_argument('--cifar_batch', type=int, default=128)
  parser.add_argument('--imagenet_batch', type=int, default=32)
  parser.add_argument('--skip_steps', action='store_true')
  args = parser.parse_args(argv)
  batches = 5 if args.quick else 20
  jpegs = register_benchmark_datasets(64 if args.quick else 256)
  print(f'machine: {os.cpu_count()} CPU cores, jax devices '
        f'{[d.platform for d in jax.devices()]}')
  print(f'fabricated JPEGs: mean {np.mean([len(j) for j in jpegs]) / 1e3:.0f}'
        ' kB')
  print('\n| pipeline | batch | workers | images/s |\n|---|---|---|---|')
  for kind, batch in (('cifar', args.cifar_batch),
                      ('imagenet', args.imagenet_batch),
                      ('finegrained', args.imagenet_batch)):
    for workers in args.workers:
      rate = pipeline_rate(kind, batch, workers, batches)
      print(f'| {kind} | {batch} | {workers} | {rate:.0f} |', flush=True)
  print('\n| 224 pipeline step | ms per image (1 thread) |\n|---|---|')
  for name, cost in stage_costs(jpegs[:32]).items():
    print(f'| {name} | {cost:.2f} |', flush=True)
  if args.skip_steps:
    return
  print('\n| train step (jit, SGD) | input | batch | images/s |\n|---|---|---|---|')
  for model, size, batch, steps in (
      ('resnet20', 32, args.cifar_batch, 3 if args.quick else 10),
      ('resnet50', 224, args.imagenet_batch, 2 if args.quick else 3)):
    rate = step_rate(model, size, batch, steps)
    print(f'| {model} | {size}x{size} | {batch} | {rate:.1f} |', flush=True)


if __name__ == '__main__':
  main()

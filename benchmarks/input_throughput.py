"""ImageNet input pipelines side by side: ours, tf.data, plain pillow.

  python benchmarks/input_throughput.py            # 48 runs of ~5-40 s
  python benchmarks/input_throughput.py --quick    # 8 runs

Data: JPEGs that look like ImageNet's, made here from the real photographs
shipped inside installed packages (matplotlib's grace_hopper.jpg; with
scikit-learn and scikit-image installed also china.jpg, flower.jpg,
astronaut, coffee, chelsea, rocket): each file a random window of a photo
(60-100% of its largest window of the target aspect), resized to an
ImageNet-like size (70% with a 500 px long side, the rest 300-800; aspect
4:3, 3:2, 1:1 or 1-2; 3 in 4 landscape) and re-encoded at the JPEG quality
that brings it nearest a log-normal target size of mean ~110 kB per
470 x 390 px (ImageNet's mean file). The figures printed say what came out.

Recipes, the same files for all three pipelines:
  train  random-resized crop (area 0.08-1, aspect 3/4-4/3, 10 attempts),
         224 x 224 bilinear, random flip; uint8 out (ours, tf.data),
  eval   resize shorter side 256, centre 224.
Pipelines:
  ours     `flax_attn.data.create_train_iterator` / `create_eval_iterator`
           (what training runs; uint8 batches, normalised on the device);
  tf.data  the TPU reference ResNet pipeline's way (needs `pip install
           tensorflow`): `sample_distorted_bounding_box` +
           `decode_and_crop_jpeg` (decodes only the crop's rows and
           columns), `tf.image.resize` bilinear without antialiasing (as
           the reference; the headline's tf.data figure), flip;
           num_parallel_calls and a private thread pool of the core count;
  tf.data antialias  the same with `antialias=True`: the resize ours and
           pillow do (torchvision's PIL resize antialiases);
  pillow   torchvision's PIL `RandomResizedCrop` way: full decode, crop,
           antialiased bilinear resize, flip, float32 normalise (ToTensor +
           Normalize), per image, in threads or worker processes.
Each measurement runs in a fresh subprocess pinned with `taskset` (1 core:
CPU 1; 2 cores: CPUs 0-1); the three pipelines alternate (ours, tf.data,
pillow, ours, ...) and every configuration is repeated. Per core figures:
  cpu  images per CPU-second of the pipeline's processes (all threads and
       worker processes; user + system): what a dedicated core gives,
       the figure least disturbed by other jobs on a shared machine;
  wall images/s / cores, pinned: what these cores gave under the load of
       the moment (printed).
The last line: `images/s per core: ours X, tf.data Y, pillow Z`, the train
recipe on one core (median cpu figure; Y without antialiasing).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

SIZE = 224
BATCH = 32
_MEAN = (123.7, 116.3, 103.5)
_STD = (58.4, 57.1, 57.4)


# ------------------------------------------------------------------ data


def photographs():
  """{name: uint8 (H, W, 3)} of the photographs the installed packages
  ship."""
  import matplotlib.cbook  # pylint: disable=g-import-not-at-top
  with matplotlib.cbook.get_sample_data('grace_hopper.jpg') as f:
    out = {'grace_hopper': np.asarray(Image.open(f).convert('RGB'))}
  try:
    from sklearn.datasets import load_sample_images  # pylint: disable=g-import-not-at-top
    found = load_sample_images()
    for name, image in zip(found.filenames, found.images):
      out[os.path.basename(name)] = image
  except ImportError:
    pass
  try:
    import skimage.data  # pylint: disable=g-import-not-at-top
    for name in ('astronaut', 'coffee', 'chelsea', 'rocket'):
      out[name] = getattr(skimage.data, name)()[..., :3]
  except (ImportError, AttributeError):
    pass
  return out


def imagenet_like_jpegs(count: int, seed: int = 0, mean_kb: float = 110.0):
  """JPEG bytes of `count` ImageNet-like files cut from `photographs()`."""
  rng = np.random.default_rng(seed)
  sources = list(photographs().values())
  out = []
  for i in range(count):
    source = sources[i % len(sources)]
    longer = 500 if rng.random() < 0.7 else int(rng.integers(300, 801))
    aspect = rng.choice([4 / 3, 3 / 2, 1.0, rng.uniform(1.0, 2.0)],
                        p=[0.5, 0.3, 0.1, 0.1])
    shorter = int(round(longer / aspect))
    width, height = ((longer, shorter) if rng.random() < 0.75
                     else (shorter, longer))
    source_h, source_w = source.shape[:2]
    crop_w = min(source_w, source_h * width / height) * rng.uniform(0.6, 1)
    crop_h = crop_w * height / width
    top = rng.uniform(0, source_h - crop_h)
    left = rng.uniform(0, source_w - crop_w)
    picture = Image.fromarray(source).resize(
        (width, height), Image.LANCZOS,
        box=(left, top, left + crop_w, top + crop_h))
    if rng.random() < 0.5:
      picture = picture.transpose(Image.FLIP_LEFT_RIGHT)
    target = (mean_kb * 1e3 * np.exp(rng.normal(-0.125, 0.5))
              * width * height / (470 * 390))
    low, high, best = 60, 100, None
    while low <= high:  # the quality whose size is nearest the target
      quality = (low + high) // 2
      buffer = io.BytesIO()
      picture.save(buffer, 'JPEG', quality=quality)
      encoded = buffer.getvalue()
      if best is None or abs(len(encoded) - target) < abs(len(best) - target):
        best = encoded
      low, high = ((quality + 1, high) if len(encoded) < target
                   else (low, quality - 1))
    out.append(best)
  return out


def describe(jpegs) -> str:
  sizes = np.array([Image.open(io.BytesIO(j)).size for j in jpegs])
  kb = np.array([len(j) for j in jpegs]) / 1e3
  return (f'{len(jpegs)} files from {len(photographs())} photographs: mean '
          f'{kb.mean():.0f} kB (median {np.median(kb):.0f}), mean '
          f'{sizes[:, 0].mean():.0f} x {sizes[:, 1].mean():.0f} px')


# ------------------------------------------------------------- pipelines


def run_ours(jpegs, recipe, cores, processes, batches):
  from configs import default  # pylint: disable=g-import-not-at-top
  from flax_attn import data  # pylint: disable=g-import-not-at-top
  labels = np.arange(len(jpegs)) % 1000
  if 'bench_jpegs' not in data.DATASETS:
    data.register_dataset(data.DatasetSpec(
        name='bench_jpegs', num_classes=1000, train_split='train',
        eval_split='train', image_size=SIZE, channels=3, mean=_MEAN,
        std=_STD, source='memory', loader=lambda split: (jpegs, labels),
        preprocessing='imagenet'))
  config = default.get_config()
  config.dataset, config.image_size, config.batch_size = (
      'bench_jpegs', SIZE, BATCH)
  config.augment.crop_padding, config.augment.flip = 0, True
  config.num_workers = cores if processes else 0
  if recipe == 'train':
    iterator = data.create_train_iterator(config, seed=0)
    return iterator, (lambda: next(iterator)), getattr(iterator, 'close',
                                                       None)
  evaluation = data.create_eval_iterator(config, batch_size=BATCH)

  def endless():
    while True:
      yield from evaluation
  stream = endless()
  return None, (lambda: next(stream)), None


def run_tf(jpegs, recipe, cores, processes, batches, antialias=False):
  if processes:
    return None
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_inter_op_parallelism_threads(cores)
  tf.config.threading.set_intra_op_parallelism_threads(cores)

  def train(encoded):
    shape = tf.io.extract_jpeg_shape(encoded)
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        shape, tf.zeros([0, 0, 4], tf.float32), min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    image = tf.io.decode_and_crop_jpeg(encoded, window, channels=3)
    image = tf.image.resize(image, [SIZE, SIZE], antialias=antialias)
    return tf.cast(tf.image.random_flip_left_right(image), tf.uint8)

  def evaluate(encoded):
    image = tf.io.decode_jpeg(encoded, channels=3)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = 256.0 / tf.reduce_min(shape)
    new = tf.cast(shape * scale, tf.int32)
    image = tf.image.resize(image, new, antialias=True)
    return tf.cast(tf.image.resize_with_crop_or_pad(image, SIZE, SIZE),
                   tf.uint8)

  options = tf.data.Options()
  options.threading.private_threadpool_size = cores
  dataset = (tf.data.Dataset.from_tensor_slices(jpegs).repeat()
             .map(train if recipe == 'train' else evaluate,
                  num_parallel_calls=cores)
             .batch(BATCH).prefetch(2).with_options(options))
  iterator = iter(dataset)
  return None, (lambda: next(iterator)), None


def _pillow_example(args):
  encoded, seed, recipe = args
  from flax_attn.data import transforms as T  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  image = T.decode_rgb(encoded)
  if recipe == 'train':
    box = T.random_resized_crop_box(image.shape[0], image.shape[1], rng)
    image = T.resized_crop(image, box, SIZE)
    if rng.random() < 0.5:
      image = image[:, ::-1]
  else:
    image = T.resize_and_center_crop(image, SIZE)
  return T.normalize(image, _MEAN, _STD)


def run_pillow(jpegs, recipe, cores, processes, batches):
  import concurrent.futures  # pylint: disable=g-import-not-at-top
  pool = (concurrent.futures.ProcessPoolExecutor(cores) if processes
          else concurrent.futures.ThreadPoolExecutor(cores))
  position = [0]

  def next_batch():
    start = position[0]
    position[0] += BATCH
    work = [(jpegs[(start + i) % len(jpegs)], start + i, recipe)
            for i in range(BATCH)]
    return np.stack(list(pool.map(_pillow_example, work,
                                  chunksize=max(1, BATCH // cores // 2))))
  return None, next_batch, (lambda: pool.shutdown())


def run_tf_antialias(jpegs, recipe, cores, processes, batches):
  return run_tf(jpegs, recipe, cores, processes, batches, antialias=True)


PIPELINES = {'ours': run_ours, 'tf.data': run_tf,
             'tf.data antialias': run_tf_antialias, 'pillow': run_pillow}


def _cpu_seconds(process) -> float:
  total = 0.0
  for p in [process] + process.children(recursive=True):
    try:
      times = p.cpu_times()
      total += times.user + times.system
    except Exception:  # pylint: disable=broad-except  (a child just left)
      pass
  return total


def measure(jpeg_file, pipeline, recipe, cores, processes, batches):
  """In a subprocess: images per CPU-second and per wall-second."""
  import psutil  # pylint: disable=g-import-not-at-top
  with open(jpeg_file, 'rb') as f:
    jpegs = pickle.load(f)
  made = PIPELINES[pipeline](jpegs, recipe, cores, processes, batches)
  if made is None:
    return None
  _, next_batch, close = made
  me = psutil.Process()

  def settled_cpu():
    """CPU seconds once the prefetch buffers are full (nothing runs): the
    timed window then starts and ends with full buffers, so its CPU time
    is that of exactly `batches` batches."""
    before = _cpu_seconds(me)
    while True:
      time.sleep(0.3)
      now = _cpu_seconds(me)
      if now - before < 0.02:
        return now
      before = now

  try:
    for _ in range(2 + (cores if processes else 0)):  # start-up, workers
      next_batch()
    cpu0 = settled_cpu()
    stamps = [time.perf_counter()]
    for _ in range(batches):
      next_batch()
      stamps.append(time.perf_counter())
    cpu = settled_cpu() - cpu0
    # Wall: the second half, once the full prefetch buffers have drained.
    half = batches // 2
    wall = (stamps[-1] - stamps[half]) * batches / (batches - half)
  finally:
    if close:
      close()
  images = batches * BATCH
  return dict(cpu_per_core=images / cpu, wall_per_core=images / wall / cores)


def _child(args):
  row = measure(args.jpegs, args.pipeline, args.recipe, args.cores,
                args.processes, args.batches)
  print('RESULT' + json.dumps(row))


def _run_child(jpeg_file, pipeline, recipe, cores, processes, batches):
  cpus = '1' if cores == 1 else f'0-{cores - 1}'
  command = ['taskset', '-c', cpus, sys.executable, os.path.abspath(__file__),
             '--_child', '--jpegs', jpeg_file, '--pipeline', pipeline,
             '--recipe', recipe, '--cores', str(cores), '--batches',
             str(batches)] + (['--processes'] if processes else [])
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu',
             TF_CPP_MIN_LOG_LEVEL='3')
  try:
    run = subprocess.run(command, cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
  except subprocess.TimeoutExpired:
    return 'timeout'
  lines = [l for l in run.stdout.splitlines() if l.startswith('RESULT')]
  if run.returncode or not lines:
    last = (run.stderr.strip().splitlines() or ['?'])[-1]
    return f'failed: {last[:120]}'
  return json.loads(lines[-1][len('RESULT'):])


def main(argv=None) -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument('--quick', action='store_true',
                      help='128 files, 8 batches, 1 repeat, train recipe at 1 core and 2 worker processes only')
  parser.add_argument('--repeats', type=int, default=None)
  parser.add_argument('--files', type=int, default=None)
  parser.add_argument('--_child', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--jpegs', help=argparse.SUPPRESS)
  parser.add_argument('--pipeline', help=argparse.SUPPRESS)
  parser.add_argument('--recipe', default='train', help=argparse.SUPPRESS)
  parser.add_argument('--cores', type=int, default=1, help=argparse.SUPPRESS)
  parser.add_argument('--processes', action='store_true',
                      help=argparse.SUPPRESS)
  parser.add_argument('--batches', type=int, default=8,
                      help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args._child:  # pylint: disable=protected-access
    _child(args)
    return
  files = args.files or (128 if args.quick else 512)
  repeats = args.repeats or (1 if args.quick else 3)
  batches = 8 if args.quick else 16
  jpegs = imagenet_like_jpegs(files)
  print(f'data: {describe(jpegs)}')
  print(f'machine: {os.cpu_count()} CPUs, load average '
        f'{os.getloadavg()[0]:.1f} at start', flush=True)
  configs = [('train', 1, False), ('train', 2, False), ('train', 2, True),
             ('eval', 1, False)]
  if args.quick:  # the headline and the worker processes only
    configs = [configs[0], configs[2]]
  results = {}
  with tempfile.TemporaryDirectory() as tmp:
    jpeg_file = os.path.join(tmp, 'jpegs.pkl')
    with open(jpeg_file, 'wb') as f:
      pickle.dump(jpegs, f)
    for _ in range(repeats):
      for config in configs:
        for pipeline in PIPELINES:  # interleaved
          row = _run_child(jpeg_file, pipeline, *config, batches)
          results.setdefault((pipeline,) + config, []).append(row)
          print(f'  {pipeline}, {config}: {row}, load average '
                f'{os.getloadavg()[0]:.1f}', flush=True)
  print(f'load average at end {os.getloadavg()[0]:.1f}\n')
  print('| recipe | cores | parallelism | pipeline | images/s per core '
        '(cpu) | images/s per core (wall, pinned) |\n|---|---|---|---|---|---|')
  headline = {}
  for config in configs:
    for pipeline in PIPELINES:
      rows = results[(pipeline,) + config]
      good = [r for r in rows if isinstance(r, dict)]
      recipe, cores, processes = config
      kind = 'processes' if processes else 'threads'
      if not good:
        reason = ('threads only' if rows and rows[0] is None else
                  str(rows[0]) if rows else '')
        print(f'| {recipe} | {cores} | {kind} | {pipeline} | {reason} | |')
        continue
      cpu = [r['cpu_per_core'] for r in good]
      wall = [r['wall_per_core'] for r in good]
      print(f'| {recipe} | {cores} | {kind} | {pipeline} | '
            f'{np.median(cpu):.0f} ({min(cpu):.0f}-{max(cpu):.0f}) | '
            f'{np.median(wall):.0f} ({min(wall):.0f}-{max(wall):.0f}) |')
      if config == ('train', 1, False):
        headline[pipeline] = f'{np.median(cpu):.0f}'
  print('\ntf.data with an antialiased resize (the recipe ours and pillow '
        'run): ' + headline.get('tf.data antialias', 'n/a'))
  print('images/s per core: ' + ', '.join(
      f'{name} {headline.get(name, "n/a")}'
      for name in ('ours', 'tf.data', 'pillow')))


if __name__ == '__main__':
  main()

"""The fast decode path of variable-size images (issue 29): the same crop
statistics as torchvision's RandomResizedCrop, and pixels within resampling
noise of a full decode followed by crop and resize."""
import functools
import io
import math

import numpy as np
import pytest
from PIL import Image

from flax_attn.data import transforms as T


def _reference_box(height, width, rng, scale=(0.08, 1.0),
                   ratio=(3 / 4, 4 / 3)):
  """torchvision's RandomResizedCrop.get_params, written out again."""
  area = height * width
  for _ in range(10):
    target = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(
        target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return h, w
  return None  # fallback: rare at these sizes


def _ks_distance(a, b):
  """Two-sample Kolmogorov-Smirnov statistic."""
  a, b = np.sort(a), np.sort(b)
  points = np.concatenate([a, b])
  return np.max(np.abs(np.searchsorted(a, points, 'right') / len(a)
                       - np.searchsorted(b, points, 'right') / len(b)))


def test_crop_area_and_aspect_match_the_reference_recipe():
  transform = T.VariableSizeTrainTransform(224, seed=3)
  height, width, draws = 375, 500, 3000
  ours = np.array([transform.crop_window(height, width,
                                         T.example_rng(3, 0, i))[2:]
                   for i in range(draws)], np.float64)
  rng = np.random.default_rng(12345)
  ref = np.array([b for b in (_reference_box(height, width, rng)
                              for _ in range(draws)) if b], np.float64)
  # KS at the 0.1% level: c(alpha) = 1.95.
  bound = 1.95 * math.sqrt((len(ours) + len(ref)) / (len(ours) * len(ref)))
  for name, f in (('area', lambda x: x[:, 0] * x[:, 1] / (height * width)),
                  ('aspect', lambda x: x[:, 1] / x[:, 0])):
    assert _ks_distance(f(ours), f(ref)) < bound, name
  # And a recipe with another scale range is told apart.
  narrow = T.VariableSizeTrainTransform(224, seed=3, scale=(0.25, 1.0))
  other = np.array([narrow.crop_window(height, width,
                                       T.example_rng(3, 0, i))[2:]
                    for i in range(draws)], np.float64)
  assert _ks_distance(other[:, 0] * other[:, 1], ref[:, 0] * ref[:, 1]) > (
      3 * bound)


@functools.lru_cache(maxsize=None)
def _photo_like_jpeg(height=640, width=880, quality=90):
  """Texture at many frequencies (the hard case for resampling), as JPEG."""
  rng = np.random.default_rng(0)
  y, x = np.mgrid[0:height, 0:width].astype(np.float32)
  image = np.zeros((height, width, 3), np.float32)
  for _ in range(24):
    fy, fx = rng.uniform(-0.25, 0.25, 2)
    image += rng.uniform(5, 20, 3) * np.sin(
        2 * np.pi * (fy * y + fx * x) + rng.uniform(0, 6.3))[..., None]
  image += 128 + rng.normal(0, 4, image.shape)
  buffer = io.BytesIO()
  Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
      buffer, 'JPEG', quality=quality)
  return buffer.getvalue()


def _psnr(a, b):
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return 10 * math.log10(255.0 ** 2 / max(mse, 1e-12))


@pytest.mark.parametrize('box,size,dct_scale', [
    ((20, 30, 600, 800), 224, 2),    # decoded at 1/2: window >= 448 px
    ((0, 0, 640, 880), 128, 4),      # at 1/4
    ((100, 150, 300, 260), 224, 1),  # full size, resized in one pass
    ((37, 411, 90, 120), 224, 1),    # upsampled
])
def test_fast_path_is_within_resampling_noise_of_full_decode(box, size,
                                                             dct_scale):
  encoded = _photo_like_jpeg()
  assert T.dct_scale(box[2], box[3], size) == dct_scale
  reference = T.resized_crop(T.decode_rgb(encoded), box, size)
  fast = np.asarray(T.decode_window(encoded, box, size))
  assert fast.dtype == np.uint8 and fast.shape == (size, size, 3)
  assert _psnr(fast, reference) > 30.0
  # The bound is tight enough to see a window off by 3% of its side.
  top, left, height, width = box
  shifted = np.asarray(T.decode_window(
      encoded, (top, left + 0.03 * width, height, width * 0.97), size))
  assert _psnr(shifted, reference) < 30.0


def test_eval_and_grey_images_on_the_fast_path():
  encoded = _photo_like_jpeg(500, 700)
  window = T.center_window(500, 700, 224, 0.875)
  reference = T.resize_and_center_crop(T.decode_rgb(encoded), 224)
  fast = np.asarray(T.decode_window(encoded, window, 224))
  assert _psnr(fast, reference) > 35.0
  grey = io.BytesIO()
  Image.open(io.BytesIO(encoded)).convert('L').save(grey, 'JPEG')
  out = np.asarray(T.decode_window(grey.getvalue(), window, 224))
  assert out.shape == (224, 224, 3)
  np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_bench_command_reports_rate_and_cores(capsys):
  from flax_attn.data import __main__ as cli
  from flax_attn.data import throughput
  assert cli.main(['bench', 'digits', '--batches', '2', '--batch_size', '32',
                   '--accelerators', '4',
                   '--accelerator_images_per_s', '1e9']) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].startswith('digits: uint8 batches of (8, 8, 1)')
  rate = float(lines[1].split()[3])
  assert rate > 100
  cores = int(lines[2].split(' need ')[1].split()[0])
  # The printed rate is rounded to a whole number.
  assert math.ceil(4e9 / (rate + 0.5)) <= cores <= math.ceil(4e9 / (rate - 0.5))
  assert throughput.cores_needed(450.0, 8, 3000.0) == 54
  assert cli.main(['bench', 'no_such_set']) == 1
  assert "unknown dataset 'no_such_set'" in capsys.readouterr().err

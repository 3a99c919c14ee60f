"""Image transforms on whole batches, in plain numpy (no TensorFlow, no JAX).

The CIFAR recipe of the papers (He et al. 2016, Sec. 4.2; MLAN Sec. IV;
HGA; SPEC.md): pad 4 pixels on each side, take a random 32x32 crop, flip
horizontally with probability 1/2, then normalise each channel with the
training set's mean and std. Readings taken:
  * padding is with zeros of the raw 0-255 image (black), as torchvision's
    `RandomCrop(32, padding=4)` before `Normalize`;
  * each image's crop offset (top, left) is uniform on {0, ..., 2 *
    padding}^2 of the padded image, so (padding, padding) is no shift;
  * rotation (HGA's recipe) turns the picture counter-clockwise by an angle
    uniform in [-rotation, rotation] degrees about its centre, bilinear,
    zero fill;
  * colour jitter of strength s draws brightness, contrast and saturation
    factors uniform in [max(0, 1 - s), 1 + s] and applies them in that fixed
    order, clipping to [0, 255] after each (torchvision's blends; its random
    order is not taken);
  * a stored image whose side differs from the configured size is resized
    bilinearly (half-pixel centres, no antialiasing: meant for upsampling
    small images such as 8x8 digits).
The training transform runs on a whole batch (grain's `random_map` after
`batch`): every image draws its own offsets, flip and factors from the one
`np.random.Generator` grain seeds from (pipeline seed, batch position), so a
batch is a pure function of (seed, step) whatever the number of workers,
and crop/flip/normalise are vectorised (per-example grain generators cost
more than the augmentation itself).

Arrays are NHWC batches: images (N, H, W, C).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Sequence, Tuple

import grain
import numpy as np

# ITU-R 601 luma weights, as torchvision's `rgb_to_grayscale`.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def resize_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out, in) linear-interpolation weights with half-pixel centres."""
  centres = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
  centres = np.clip(centres, 0.0, in_size - 1)
  low = np.floor(centres).astype(np.int64)
  high = np.minimum(low + 1, in_size - 1)
  frac = (centres - low).astype(np.float32)
  weights = np.zeros((out_size, in_size), np.float32)
  rows = np.arange(out_size)
  np.add.at(weights, (rows, low), 1.0 - frac)
  np.add.at(weights, (rows, high), frac)
  return weights


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
  """(N, H, W, C) -> float32 (N, size, size, C), separable bilinear."""
  height, width = images.shape[1:3]
  if (height, width) == (size, size):
    return images.astype(np.float32)
  rows = resize_matrix(height, size)
  cols = resize_matrix(width, size)
  return np.einsum('ah,nhwc,bw->nabc', rows, images.astype(np.float32), cols)


def pad_and_crop(images: np.ndarray, padding: int, tops: np.ndarray,
                 lefts: np.ndarray) -> np.ndarray:
  """Zero-pads `padding` pixels per side; image i keeps the window at
  (tops[i], lefts[i]) of its padded copy, each offset in [0, 2 * padding].

  The output has the input's shape and dtype.
  """
  if padding == 0:
    return images
  tops, lefts = np.asarray(tops), np.asarray(lefts)
  if (tops.min(initial=0) < 0 or lefts.min(initial=0) < 0
      or tops.max(initial=0) > 2 * padding
      or lefts.max(initial=0) > 2 * padding):
    raise ValueError(f'crop offsets outside [0, {2 * padding}]')
  count, height, width, _ = images.shape
  padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding),
                           (0, 0)))
  out = np.empty_like(images)
  for i, (top, left) in enumerate(zip(tops, lefts)):  # faster than a gather
    out[i] = padded[i, top:top + height, left:left + width]
  return out


def flip_left_right(images: np.ndarray, flips: np.ndarray) -> np.ndarray:
  """Mirrors image i left-right where flips[i] is true."""
  flips = np.asarray(flips, bool)
  out = images.copy()
  out[flips] = images[flips, :, ::-1]
  return out


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
  """Turns one (H, W, C) picture counter-clockwise by `degrees` about its
  centre. Bilinear; points falling outside the input read zero. float32."""
  height, width, _ = image.shape
  theta = np.deg2rad(degrees)
  cos, sin = np.cos(theta), np.sin(theta)
  cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
  ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing='ij')
  # (u, v): right/up coordinates about the centre; the output point (u, v)
  # is the input point turned by +theta, so read the input turned by -theta.
  u, v = xs - cx, cy - ys
  src_x = cx + cos * u + sin * v
  src_y = cy - (-sin * u + cos * v)
  # Snap values within float noise of a pixel centre (e.g. at 90 degrees).
  src_x = np.where(np.abs(src_x - np.round(src_x)) < 1e-6, np.round(src_x),
                   src_x)
  src_y = np.where(np.abs(src_y - np.round(src_y)) < 1e-6, np.round(src_y),
                   src_y)
  x0, y0 = np.floor(src_x).astype(np.int64), np.floor(src_y).astype(np.int64)
  fx, fy = (src_x - x0)[..., None], (src_y - y0)[..., None]
  source = image.astype(np.float32)

  def read(y, x):
    inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
    values = source[np.clip(y, 0, height - 1), np.clip(x, 0, width - 1)]
    return values * inside[..., None]

  out = ((1 - fy) * ((1 - fx) * read(y0, x0) + fx * read(y0, x0 + 1))
         + fy * ((1 - fx) * read(y0 + 1, x0) + fx * read(y0 + 1, x0 + 1)))
  return out.astype(np.float32)


def grayscale(image: np.ndarray) -> np.ndarray:
  """(..., 1) luma of RGB images; grey images are returned as they are."""
  if image.shape[-1] == 1:
    return image
  return (image @ _LUMA)[..., None]


def _blend(image, other, factor):
  return np.clip(factor * image + (1.0 - factor) * other,
                 0.0, 255.0).astype(np.float32)


def adjust_brightness(image: np.ndarray, factor: float) -> np.ndarray:
  """One (H, W, C) image scaled by `factor`, clipped to [0, 255]."""
  return _blend(image, 0.0, factor)


def adjust_contrast(image: np.ndarray, factor: float) -> np.ndarray:
  """One image blended with the mean of its luma."""
  return _blend(image, grayscale(image).mean(), factor)


def adjust_saturation(image: np.ndarray, factor: float) -> np.ndarray:
  """One image blended with its own luma (grey images are unchanged)."""
  return _blend(image, grayscale(image), factor)


def color_jitter(image: np.ndarray, brightness: float, contrast: float,
                 saturation: float) -> np.ndarray:
  image = adjust_brightness(image, brightness)
  image = adjust_contrast(image, contrast)
  return adjust_saturation(image, saturation)


def normalize(images: np.ndarray, mean: Sequence[float],
              std: Sequence[float]) -> np.ndarray:
  """(x - mean) / std per channel, float32; mean/std on the 0-255 scale."""
  width, channels = images.shape[-2:]
  if len(mean) != channels or len(std) != channels:
    raise ValueError(f'{channels} channels but {len(mean)} means and '
                     f'{len(std)} stds')
  # Rows of width * channels values: numpy broadcasts a length-3 last axis
  # several times slower.
  out = images.astype(np.float32).reshape(-1, width * channels)
  out -= np.tile(np.asarray(mean, np.float32), width)
  out /= np.tile(np.asarray(std, np.float32), width)
  return out.reshape(images.shape)


@dataclasses.dataclass(frozen=True)
class TrainTransform(grain.transforms.RandomMap):
  """A batch {'image': uint8 (N, h, w, C), 'label': (N,)} ->
  {'image': normalised float32 (N, S, S, C), 'label': int32 (N,)}.

  Order: resize to `image_size` (if needed), pad-and-random-crop, random
  flip, random rotation, colour jitter, normalise. Random draws, in this
  order and only for the steps switched on: offsets (2, N), flips (N,),
  angles (N,), jitter factors (N, 3).
  """
  image_size: int
  mean: Tuple[float, ...]
  std: Tuple[float, ...]
  crop_padding: int = 0
  flip: bool = False
  rotation: float = 0.0
  color_jitter: float = 0.0

  def random_map(self, batch: Dict[str, Any],
                 rng: np.random.Generator) -> Dict[str, np.ndarray]:
    images = batch['image']
    count = len(images)
    if images.shape[1:3] != (self.image_size, self.image_size):
      images = resize_bilinear(images, self.image_size)
    if self.crop_padding > 0:
      tops, lefts = rng.integers(0, 2 * self.crop_padding + 1,
                                 size=(2, count))
      images = pad_and_crop(images, self.crop_padding, tops, lefts)
    if self.flip:
      images = flip_left_right(images, rng.random(count) < 0.5)
    if self.rotation > 0:
      angles = rng.uniform(-self.rotation, self.rotation, size=count)
      images = np.stack([rotate(im, a) for im, a in zip(images, angles)])
    if self.color_jitter > 0:
      low = max(0.0, 1.0 - self.color_jitter)
      factors = rng.uniform(low, 1.0 + self.color_jitter, size=(count, 3))
      images = np.stack([color_jitter(im.astype(np.float32), *f)
                         for im, f in zip(images, factors)])
    return {'image': normalize(images, self.mean, self.std),
            'label': np.asarray(batch['label'], np.int32)}


@dataclasses.dataclass(frozen=True)
class EvalTransform(grain.transforms.Map):
  """A batch -> resized (if needed) and normalised; padding (mask 0.0)
  images become zeros. A 'mask' is passed on as float32."""
  image_size: int
  mean: Tuple[float, ...]
  std: Tuple[float, ...]

  def map(self, batch: Dict[str, Any]) -> Dict[str, np.ndarray]:
    images = batch['image']
    if images.shape[1:3] != (self.image_size, self.image_size):
      images = resize_bilinear(images, self.image_size)
    images = normalize(images, self.mean, self.std)
    out = {'image': images, 'label': np.asarray(batch['label'], np.int32)}
    if 'mask' in batch:
      mask = np.asarray(batch['mask'], np.float32)
      out['image'] = np.where(mask[:, None, None, None] > 0, images,
                              np.float32(0))
      out['mask'] = mask
    return out

"""Per-example image transforms in plain numpy (no TensorFlow, no JAX).

The CIFAR recipe of the papers (He et al. 2016, Sec. 4.2; MLAN Sec. IV;
HGA; SPEC.md): pad 4 pixels on each side, take a random 32x32 crop, flip
horizontally with probability 1/2, then normalise each channel with the
training set's mean and std. Readings taken:
  * padding is with zeros of the raw 0-255 image (black), as torchvision's
    `RandomCrop(32, padding=4)` before `Normalize`;
  * the crop offset (top, left) is uniform on {0, ..., 2 * padding}^2, so
    offset (padding, padding) is the un-shifted image;
  * rotation (HGA's recipe) turns the picture counter-clockwise by an angle
    uniform in [-rotation, rotation] degrees about its centre, bilinear, zero
    fill;
  * colour jitter of strength s draws brightness, contrast and saturation
    factors uniform in [max(0, 1 - s), 1 + s] and applies them in that fixed
    order, clipping to [0, 255] after each (torchvision's blends; its random
    order is not taken);
  * a stored image whose side differs from the configured size is resized
    bilinearly (half-pixel centres, no antialiasing: meant for upsampling
    small images such as 8x8 digits).
Every random choice comes from the `np.random.Generator` grain hands to
`random_map`, seeded from the pipeline seed and the element's index, so a
batch is a pure function of (seed, step) whatever the number of workers.
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


def resize_bilinear(image: np.ndarray, size: int) -> np.ndarray:
  """(H, W, C) -> float32 (size, size, C), separable bilinear."""
  height, width = image.shape[:2]
  if (height, width) == (size, size):
    return image.astype(np.float32)
  rows = resize_matrix(height, size)
  cols = resize_matrix(width, size)
  return np.einsum('ah,hwc,bw->abc', rows, image.astype(np.float32), cols)


def pad_and_crop(image: np.ndarray, padding: int, top: int,
                 left: int) -> np.ndarray:
  """Zero-pads `padding` pixels per side, returns the window at (top, left).

  The output has the input's shape; (top, left) index the padded image, so
  each lies in [0, 2 * padding].
  """
  if padding == 0:
    return image
  if not (0 <= top <= 2 * padding and 0 <= left <= 2 * padding):
    raise ValueError(f'crop offset ({top}, {left}) outside [0, {2 * padding}]')
  height, width = image.shape[:2]
  padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  return padded[top:top + height, left:left + width]


def random_pad_and_crop(image: np.ndarray, padding: int,
                        rng: np.random.Generator) -> np.ndarray:
  top, left = rng.integers(0, 2 * padding + 1, size=2)
  return pad_and_crop(image, padding, int(top), int(left))


def flip_left_right(image: np.ndarray) -> np.ndarray:
  return image[:, ::-1]


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
  """Turns the picture counter-clockwise by `degrees` about its centre.

  Bilinear sampling; points falling outside the input read zero. float32.
  """
  height, width, _ = image.shape
  theta = np.deg2rad(degrees)
  cos, sin = np.cos(theta), np.sin(theta)
  cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
  ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing='ij')
  # (u, v): right/up coordinates about the centre; the output point (u, v)
  # is the input point (u, v) turned by +theta, so read the input at -theta.
  u, v = xs - cx, cy - ys
  src_x = cx + cos * u + sin * v
  src_y = cy - (-sin * u + cos * v)
  # Snap values within float noise of a pixel centre (e.g. 90 degrees).
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
  """(H, W, 1) luma of an RGB image; a grey image is returned as is."""
  if image.shape[-1] == 1:
    return image
  return (image @ _LUMA)[..., None]


def _blend(image, other, factor):
  return np.clip(factor * image + (1.0 - factor) * other, 0.0, 255.0)


def adjust_brightness(image: np.ndarray, factor: float) -> np.ndarray:
  return _blend(image, 0.0, factor).astype(np.float32)


def adjust_contrast(image: np.ndarray, factor: float) -> np.ndarray:
  return _blend(image, grayscale(image).mean(), factor).astype(np.float32)


def adjust_saturation(image: np.ndarray, factor: float) -> np.ndarray:
  return _blend(image, grayscale(image), factor).astype(np.float32)


def random_color_jitter(image: np.ndarray, strength: float,
                        rng: np.random.Generator) -> np.ndarray:
  low = max(0.0, 1.0 - strength)
  brightness, contrast, saturation = rng.uniform(low, 1.0 + strength, size=3)
  image = adjust_brightness(image, brightness)
  image = adjust_contrast(image, contrast)
  return adjust_saturation(image, saturation)


def normalize(image: np.ndarray, mean: Sequence[float],
              std: Sequence[float]) -> np.ndarray:
  """(image - mean) / std per channel, float32; mean/std on the 0-255 scale."""
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)
  return (image.astype(np.float32) - mean) / std


@dataclasses.dataclass(frozen=True)
class TrainTransform(grain.transforms.RandomMap):
  """{'image': uint8 (h, w, C), 'label'} -> normalised float32 (S, S, C).

  Order: resize to `image_size` (if needed), pad-and-random-crop, random
  flip, random rotation, colour jitter, normalise.
  """
  image_size: int
  mean: Tuple[float, ...]
  std: Tuple[float, ...]
  crop_padding: int = 0
  flip: bool = False
  rotation: float = 0.0
  color_jitter: float = 0.0

  def random_map(self, element: Dict[str, Any],
                 rng: np.random.Generator) -> Dict[str, np.ndarray]:
    image = resize_bilinear(element['image'], self.image_size)
    if self.crop_padding > 0:
      image = random_pad_and_crop(image, self.crop_padding, rng)
    if self.flip and rng.random() < 0.5:
      image = flip_left_right(image)
    if self.rotation > 0:
      image = rotate(image, rng.uniform(-self.rotation, self.rotation))
    if self.color_jitter > 0:
      image = random_color_jitter(image, self.color_jitter, rng)
    return {'image': normalize(image, self.mean, self.std),
            'label': np.int32(element['label'])}


@dataclasses.dataclass(frozen=True)
class EvalTransform(grain.transforms.Map):
  """Resize (if needed) and normalise; padding elements (mask 0) become zeros.

  Elements with a 'mask' keep it (float32); those without get none.
  """
  image_size: int
  mean: Tuple[float, ...]
  std: Tuple[float, ...]

  def map(self, element: Dict[str, Any]) -> Dict[str, np.ndarray]:
    image = normalize(resize_bilinear(element['image'], self.image_size),
                      self.mean, self.std)
    out = {'image': image, 'label': np.int32(element['label'])}
    if 'mask' in element:
      mask = np.float32(element['mask'])
      if mask == 0:
        out['image'] = np.zeros_like(image)
      out['mask'] = mask
    return out

"""Image transforms in plain numpy and pillow (no TensorFlow, no JAX).

The CIFAR recipe of the papers (He et al. 2016, Sec. 4.2; MLAN Sec. IV;
HGA Sec. 5.1 gives none): pad 4 pixels on each side, take a random 32x32
crop, flip horizontally with probability 1/2, then normalise each channel
with the training set's mean and std. The transforms here stop before the
normalisation: they yield pixels (uint8 wherever the values stay whole)
and the jitted step normalises them (device.py, `prepare_on_device`).
Readings taken:
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

Variable-size images (the 'imagenet' family: ImageNet, CUB-200-2011,
Stanford Dogs, Stanford Cars) are decoded, cropped and resized one by one
with pillow, as torchvision's PIL path does, then stacked:
  * random-resized crop (Szegedy et al. 2015, Sec. 6; torchvision
    `RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3))`): up to 10
    draws of an area fraction uniform in `scale` and a log-uniform aspect
    ratio in `ratio`; the first whose rounded w x h fits gives a window at a
    uniform position; after 10 misses, the central window of the image
    clamped to the ratio range. The window is resized to size x size,
    bilinear with pillow's antialiasing (torchvision on PIL images);
  * evaluation: the shorter side resized to floor(size / crop_fraction)
    (256 for 224, torchvision `Resize(256)`: the longer side truncated),
    then the central size x size window (`CenterCrop`: offset
    round((side - size) / 2));
  * rotation of a crop: pillow's bilinear `rotate` about the centre,
    counter-clockwise, zero fill (the numpy `rotate` below, on uint8, but
    a pixel whose source point falls outside the image is zero rather
    than blended with the border);
  * hue (torchvision's PIL `adjust_hue`): the HSV hue channel, as uint8,
    shifted by uint8(factor * 255) modulo 256, factor uniform in
    [-hue, hue], after brightness, contrast and saturation.
Encoded images (the tfds files) take a fast path with the same draws and
geometry (`decode_window`): only the JPEG header is read before the crop is
drawn; the image is decoded at 1/2, 1/4 or 1/8 scale by libjpeg-turbo's DCT
scaling (pillow's `draft`) where the crop window stays at least the output
size, and the window is resampled to the output size in one antialiased
bilinear pass (pillow's `resize(box=...)`), with no full-size crop, copy
or RGB conversion. It differs from decode-crop-resize by resampling noise
(tests/test_fast_decode.py bounds the PSNR). Arrays take the reference
path above.
Each example draws from its own generator, seeded from (seed, epoch, source
index): its augmentation does not depend on the batch it falls in, the
batch size, the process layout or the number of workers.

Arrays are NHWC batches: images (N, H, W, C).
"""
from __future__ import annotations

import dataclasses
import io
import math
from typing import Any, Dict, Sequence, Tuple

import grain
import numpy as np
from PIL import Image

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


def adjust_hue(image: np.ndarray, factor: float) -> np.ndarray:
  """One RGB image with its HSV hue turned by `factor` of a full turn
  (|factor| <= 0.5), as torchvision's PIL `adjust_hue`: the image is
  rounded to uint8 first. Returns float32; grey images are unchanged."""
  if not -0.5 <= factor <= 0.5:
    raise ValueError(f'hue factor {factor} not in [-0.5, 0.5]')
  if image.shape[-1] != 3:
    return image.astype(np.float32)
  rgb = np.clip(np.round(image), 0, 255).astype(np.uint8)
  hsv = np.array(Image.fromarray(rgb, 'RGB').convert('HSV'))
  # numpy's uint8 wraps modulo 256, as torchvision's in-place addition.
  hsv[..., 0] += np.array(factor * 255).astype(np.uint8)
  return np.asarray(Image.fromarray(hsv, 'HSV').convert('RGB'), np.float32)


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
  {'image': pixels (N, S, S, C), 'label': int32 (N,)}, not normalised
  (`prepare_on_device` normalises inside the jitted step).

  Pixels are uint8 unless a step computes fractions (resize, rotation,
  colour jitter without hue): then float32 on the 0-255 scale, unrounded.
  The dtype depends on the configuration only, never on the data.

  Order: resize to `image_size` (if needed), pad-and-random-crop, random
  flip, random rotation, colour jitter, hue. Random draws, in
  this order and only for the steps switched on: offsets (2, G), flips
  (G,), angles (G,), jitter factors (G, 3), hue factors (G,), for the
  whole global batch of G = N * num_slices examples, of which this batch
  is slice `slice_index` (one process's share: the same augmentation
  whatever the number of processes).
  """
  image_size: int
  crop_padding: int = 0
  flip: bool = False
  rotation: float = 0.0
  color_jitter: float = 0.0
  hue: float = 0.0
  slice_index: int = 0
  num_slices: int = 1

  def random_map(self, batch: Dict[str, Any],
                 rng: np.random.Generator) -> Dict[str, np.ndarray]:
    images = batch['image']
    count = len(images)
    total, mine = count * self.num_slices, slice(
        self.slice_index * count, (self.slice_index + 1) * count)
    if images.shape[1:3] != (self.image_size, self.image_size):
      images = resize_bilinear(images, self.image_size)
    if self.crop_padding > 0:
      tops, lefts = rng.integers(0, 2 * self.crop_padding + 1,
                                 size=(2, total))[:, mine]
      images = pad_and_crop(images, self.crop_padding, tops, lefts)
    if self.flip:
      images = flip_left_right(images, rng.random(total)[mine] < 0.5)
    if self.rotation > 0:
      angles = rng.uniform(-self.rotation, self.rotation, size=total)[mine]
      images = np.stack([rotate(im, a) for im, a in zip(images, angles)])
    if self.color_jitter > 0:
      low = max(0.0, 1.0 - self.color_jitter)
      factors = rng.uniform(low, 1.0 + self.color_jitter,
                            size=(total, 3))[mine]
      images = np.stack([color_jitter(im.astype(np.float32), *f)
                         for im, f in zip(images, factors)])
    if self.hue > 0:
      shifts = rng.uniform(-self.hue, self.hue, size=total)[mine]
      # adjust_hue's values are whole (a uint8 round trip): exact in uint8.
      images = np.stack([adjust_hue(im, h) for im, h in zip(images, shifts)
                         ]).astype(np.uint8)
    return {'image': as_pixels(images),
            'label': np.asarray(batch['label'], np.int32)}


def as_pixels(images: np.ndarray) -> np.ndarray:
  """uint8 stays uint8; anything else becomes float32 (0-255 scale)."""
  if images.dtype == np.uint8:
    return images
  return images.astype(np.float32, copy=False)


@dataclasses.dataclass(frozen=True)
class EvalTransform(grain.transforms.Map):
  """A batch -> resized (if needed: float32, else uint8), not normalised;
  padding (mask 0.0) images become zeros. A 'mask' is passed on as
  float32."""
  image_size: int

  def map(self, batch: Dict[str, Any]) -> Dict[str, np.ndarray]:
    images = batch['image']
    if images.shape[1:3] != (self.image_size, self.image_size):
      images = resize_bilinear(images, self.image_size)
    images = as_pixels(images)
    out = {'image': images, 'label': np.asarray(batch['label'], np.int32)}
    if 'mask' in batch:
      mask = np.asarray(batch['mask'], np.float32)
      out['image'] = np.where(mask[:, None, None, None] > 0, images,
                              images.dtype.type(0))
      out['mask'] = mask
    return out


# ------------------------------------------------- variable-size images


def decode_rgb(image: Any) -> np.ndarray:
  """Encoded bytes (JPEG, PNG) or an array -> uint8 (H, W, 3).

  Grey images are repeated to three channels; RGBA loses its alpha; CMYK
  (a few ImageNet JPEGs) is converted by pillow.
  """
  if isinstance(image, (bytes, bytearray, memoryview, np.bytes_)):
    with Image.open(io.BytesIO(bytes(image))) as decoded:
      return np.asarray(decoded.convert('RGB'))
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  elif image.shape[-1] == 4:
    image = image[..., :3]
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f'cannot read an image of shape {image.shape} as RGB')
  return image.astype(np.uint8, copy=False)


def random_resized_crop_box(height: int, width: int,
                            rng: np.random.Generator,
                            scale: Tuple[float, float] = (0.08, 1.0),
                            ratio: Tuple[float, float] = (3 / 4, 4 / 3),
                            attempts: int = 10) -> Tuple[int, int, int, int]:
  """(top, left, crop_height, crop_width) of torchvision's
  `RandomResizedCrop.get_params`, drawn from `rng`.

  Draws per attempt: area fraction, log aspect ratio; on success two more
  (top, then left). The box always lies inside the image.
  """
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(attempts):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
    crop_width = int(round(math.sqrt(target_area * aspect)))
    crop_height = int(round(math.sqrt(target_area / aspect)))
    if 0 < crop_width <= width and 0 < crop_height <= height:
      top = int(rng.integers(0, height - crop_height + 1))
      left = int(rng.integers(0, width - crop_width + 1))
      return top, left, crop_height, crop_width
  # Fallback: the central window, the image's aspect clamped to `ratio`.
  in_ratio = width / height
  if in_ratio < min(ratio):
    crop_width = width
    crop_height = int(round(crop_width / min(ratio)))
  elif in_ratio > max(ratio):
    crop_height = height
    crop_width = int(round(crop_height * max(ratio)))
  else:
    crop_width, crop_height = width, height
  return ((height - crop_height) // 2, (width - crop_width) // 2,
          crop_height, crop_width)


def resized_crop(image: np.ndarray, box: Tuple[int, int, int, int],
                 size: int) -> np.ndarray:
  """The (top, left, height, width) window of a uint8 (H, W, 3) image,
  resized to (size, size) bilinearly with pillow's antialiasing (crop, then
  resize: torchvision's `resized_crop` on PIL images). uint8."""
  top, left, height, width = box
  window = Image.fromarray(image).crop((left, top, left + width, top + height))
  if window.size == (size, size):
    return np.asarray(window)
  return np.asarray(window.resize((size, size), Image.BILINEAR))


def resize_shorter_side(image: np.ndarray, shorter: int) -> np.ndarray:
  """uint8 (H, W, 3) -> shorter side `shorter`, the longer one
  int(shorter * long / short) (torchvision `Resize(int)`); bilinear,
  antialiased."""
  height, width = image.shape[:2]
  if height <= width:
    new_height, new_width = shorter, int(shorter * width / height)
  else:
    new_height, new_width = int(shorter * height / width), shorter
  if (new_height, new_width) == (height, width):
    return image
  return np.asarray(Image.fromarray(image).resize((new_width, new_height),
                                                  Image.BILINEAR))


def center_crop_offsets(height: int, width: int,
                        size: int) -> Tuple[int, int]:
  """(top, left) of torchvision's `CenterCrop(size)` of an image at least
  size x size."""
  if height < size or width < size:
    raise ValueError(f'cannot centre-crop {size}x{size} out of '
                     f'{height}x{width}')
  return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def resize_and_center_crop(image: np.ndarray, size: int,
                           crop_fraction: float = 0.875) -> np.ndarray:
  """Evaluation geometry: shorter side floor(size / crop_fraction), then the
  central size x size window. uint8."""
  resized = resize_shorter_side(image, int(math.floor(size / crop_fraction)))
  top, left = center_crop_offsets(resized.shape[0], resized.shape[1], size)
  return resized[top:top + size, left:left + size]


def rotate_uint8(image: np.ndarray, degrees: float) -> np.ndarray:
  """Counter-clockwise turn of a uint8 (H, W, 3) picture about its centre,
  bilinear, zero fill (pillow; `rotate` above on floats)."""
  if degrees == 0:
    return image
  return np.asarray(Image.fromarray(image).rotate(
      degrees, resample=Image.BILINEAR, fillcolor=(0,) * image.shape[-1]))


def _is_encoded(image: Any) -> bool:
  return isinstance(image, (bytes, bytearray, memoryview, np.bytes_))


def dct_scale(window_height: float, window_width: float, size: int) -> int:
  """The JPEG DCT scaling denominator (1, 2, 4 or 8: libjpeg-turbo's fast
  ones) that still leaves a window of window_height x window_width source
  pixels at least `size` pixels on each side, so the resize after it only
  shrinks."""
  for scale in (8, 4, 2):
    if min(window_height, window_width) >= scale * size:
      return scale
  return 1


def decode_window(encoded: Any, window, size: int) -> Image.Image:
  """The (top, left, height, width) window of an encoded image, in source
  pixels (fractions allowed), as an RGB size x size pillow image. `window`
  may be a function of the image's (height, width) returning it (the
  header is then read once).

  The fast path of `resized_crop` and `resize_and_center_crop`: a JPEG is
  decoded at 1/2, 1/4 or 1/8 scale where the window stays >= `size` pixels
  (`dct_scale`; libjpeg-turbo's DCT scaling through pillow's `draft`), and
  the window is resampled to size x size in one antialiased bilinear pass
  (pillow's `resize(box=...)`), without cropping or converting the whole
  image. Differs from the full decode by resampling noise only (the tests
  bound the PSNR).
  """
  with Image.open(io.BytesIO(bytes(encoded))) as picture:
    full_width = picture.size[0]
    if callable(window):
      window = window(picture.size[1], full_width)
    top, left, height, width = window
    scale = dct_scale(height, width, size)
    factor = 1.0
    if scale > 1:
      # draft() picks the largest of 8/4/2/1 with source // request >= it:
      # a request of floor(side / scale) gives exactly `scale`. It returns
      # the source's extent in decoded pixels (None: not a JPEG).
      drafted = picture.draft(None, (max(1, picture.size[0] // scale),
                                     max(1, picture.size[1] // scale)))
      if drafted is not None:
        factor = drafted[1][2] / full_width  # 1 / scale
    if picture.mode not in ('RGB', 'L'):
      picture = picture.convert('RGB')  # CMYK, palette, alpha: as decode_rgb
    decoded_width, decoded_height = picture.size
    out = picture.resize((size, size), Image.BILINEAR, box=(
        left * factor, top * factor,
        min(decoded_width, (left + width) * factor),
        min(decoded_height, (top + height) * factor)))
  if out.mode != 'RGB':
    out = out.convert('RGB')  # grey: the copy to three channels is exact
  return out


def image_size_of(image: Any) -> Tuple[int, int]:
  """(height, width) of an encoded image (from its header) or an array."""
  if _is_encoded(image):
    with Image.open(io.BytesIO(bytes(image))) as picture:
      return picture.size[1], picture.size[0]
  shape = np.shape(image)
  return int(shape[0]), int(shape[1])


def center_window(height: int, width: int, size: int,
                  crop_fraction: float) -> Tuple[float, float, float, float]:
  """The evaluation crop (`resize_and_center_crop`) as a window of the
  source image, in source pixels."""
  shorter = int(math.floor(size / crop_fraction))
  new_height, new_width = _shorter_side_shape(height, width, shorter)
  top, left = center_crop_offsets(new_height, new_width, size)
  return _window_in_source(top, left, size, height, width, new_height,
                           new_width)


def _shorter_side_shape(height: int, width: int,
                        shorter: int) -> Tuple[int, int]:
  if height <= width:
    return shorter, int(shorter * width / height)
  return int(shorter * height / width), shorter


def _window_in_source(top, left, size, height, width, new_height, new_width):
  scale_y, scale_x = height / new_height, width / new_width
  return top * scale_y, left * scale_x, size * scale_y, size * scale_x


def example_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
  """The generator of one example's augmentation (PCG64 via SeedSequence)."""
  return np.random.default_rng([int(seed), int(epoch), int(index)])


@dataclasses.dataclass(frozen=True)
class VariableSizeTrainTransform(grain.transforms.Map):
  """A batch of variable-size examples -> a training batch of pixels.

  In: {'image': sequence of N encoded bytes or uint8 (H, W, C) arrays,
  'label': (N,), 'epoch': (N,), 'index': (N,)}. Out: {'image': uint8
  (N, S, S, 3) (float32 on the 0-255 scale where colour jitter runs without
  hue), 'label': int32 (N,)}, not normalised (`prepare_on_device` does that
  in the jitted step).

  Per example, drawing from `example_rng(seed, epoch, index)` in this order
  and only for the steps switched on: crop window ('random_resized': the
  window of `random_resized_crop_box`; 'random': a uniform window (top,
  left) of the image resized as for evaluation; 'center': the evaluation
  crop, no draw) resized to S x S; flip (one draw); rotation (one angle);
  colour jitter (three factors, as TrainTransform); hue (one factor).
  Encoded images take the fast path (`decode_window`: only the header is
  read before the draws, then a DCT-scaled decode and one resize); arrays
  the reference path (crop, then resize; `resized_crop`,
  `resize_and_center_crop`). The draws are the same on both paths.
  """
  image_size: int
  seed: int
  crop: str = 'random_resized'
  scale: Tuple[float, float] = (0.08, 1.0)
  ratio: Tuple[float, float] = (3 / 4, 4 / 3)
  crop_fraction: float = 0.875
  flip: bool = False
  rotation: float = 0.0
  color_jitter: float = 0.0
  hue: float = 0.0

  def crop_window(self, height: int, width: int, rng: np.random.Generator
                  ) -> Tuple[float, float, float, float]:
    """The crop as a (top, left, height, width) window of the source."""
    size = self.image_size
    if self.crop == 'random_resized':
      return random_resized_crop_box(height, width, rng, self.scale,
                                     self.ratio)
    if self.crop == 'center':
      return center_window(height, width, size, self.crop_fraction)
    if self.crop == 'random':
      new_height, new_width = _shorter_side_shape(
          height, width, int(math.floor(size / self.crop_fraction)))
      top = int(rng.integers(0, new_height - size + 1))
      left = int(rng.integers(0, new_width - size + 1))
      return _window_in_source(top, left, size, height, width, new_height,
                               new_width)
    raise ValueError(f'unknown crop {self.crop!r}; valid: random_resized, '
                     'random, center')

  def crop_example(self, image: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """The reference path on a decoded uint8 image (crop, then resize)."""
    size = self.image_size
    if self.crop == 'random_resized':
      box = random_resized_crop_box(image.shape[0], image.shape[1], rng,
                                    self.scale, self.ratio)
      return resized_crop(image, box, size)
    if self.crop == 'center':
      return resize_and_center_crop(image, size, self.crop_fraction)
    if self.crop == 'random':
      resized = resize_shorter_side(
          image, int(math.floor(size / self.crop_fraction)))
      top = int(rng.integers(0, resized.shape[0] - size + 1))
      left = int(rng.integers(0, resized.shape[1] - size + 1))
      return resized[top:top + size, left:left + size]
    raise ValueError(f'unknown crop {self.crop!r}; valid: random_resized, '
                     'random, center')

  @property
  def pixel_dtype(self):
    """uint8, or float32 where colour jitter's fractions are kept (no hue
    after it: hue rounds to uint8 as torchvision's PIL path does)."""
    return np.float32 if self.color_jitter > 0 and self.hue <= 0 else np.uint8

  def augment_example(self, image: Any, epoch: int,
                      index: int) -> np.ndarray:
    """One example -> (S, S, 3) pixels of `pixel_dtype`."""
    rng = example_rng(self.seed, epoch, index)
    if _is_encoded(image):
      out = decode_window(
          image, lambda height, width: self.crop_window(height, width, rng),
          self.image_size)
      if self.flip and rng.random() < 0.5:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
      if self.rotation > 0:
        out = out.rotate(rng.uniform(-self.rotation, self.rotation),
                         resample=Image.BILINEAR, fillcolor=(0, 0, 0))
      out = np.asarray(out)
    else:
      out = self.crop_example(decode_rgb(image), rng)
      if self.flip and rng.random() < 0.5:
        out = out[:, ::-1]
      if self.rotation > 0:
        out = rotate_uint8(np.ascontiguousarray(out),
                           rng.uniform(-self.rotation, self.rotation))
    if self.color_jitter > 0:
      low = max(0.0, 1.0 - self.color_jitter)
      out = color_jitter(out.astype(np.float32),
                         *rng.uniform(low, 1.0 + self.color_jitter, 3))
    if self.hue > 0:
      out = adjust_hue(out, rng.uniform(-self.hue, self.hue))
    return out.astype(self.pixel_dtype, copy=False)

  def map(self, batch: Dict[str, Any]) -> Dict[str, np.ndarray]:
    size = self.image_size
    images = np.empty((len(batch['image']), size, size, 3), self.pixel_dtype)
    for i, (image, epoch, index) in enumerate(zip(
        batch['image'], batch['epoch'], batch['index'])):
      images[i] = self.augment_example(image, epoch, index)
    return {'image': images, 'label': np.asarray(batch['label'], np.int32)}


@dataclasses.dataclass(frozen=True)
class VariableSizeEvalTransform(grain.transforms.Map):
  """{'image': sequence of N encoded images / arrays, None for padding,
  'label', 'mask'} -> resized, centre-cropped uint8 (N, S, S, 3) (encoded
  images by `decode_window`); padding images are zeros."""
  image_size: int
  crop_fraction: float = 0.875

  def map(self, batch: Dict[str, Any]) -> Dict[str, np.ndarray]:
    size = self.image_size
    out = np.zeros((len(batch['image']), size, size, 3), np.uint8)
    mask = np.asarray(batch['mask'], np.float32)
    for i, image in enumerate(batch['image']):
      if mask[i] <= 0:
        continue
      if _is_encoded(image):
        out[i] = np.asarray(decode_window(
            image, lambda height, width: center_window(
                height, width, size, self.crop_fraction), size))
      else:
        out[i] = resize_and_center_crop(decode_rgb(image), size,
                                        self.crop_fraction)
    return {'image': out, 'label': np.asarray(batch['label'], np.int32),
            'mask': mask}

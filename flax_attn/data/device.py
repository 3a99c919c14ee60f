"""The input pipeline's last step, run on the accelerator inside the jitted
train / eval step.

The host pipelines (transforms.py) hand over pixels on the 0-255 scale --
uint8 wherever the recipe keeps whole values (every variable-size recipe,
CIFAR's pad-crop-flip), float32 where a fixed-size recipe resizes, rotates
or colour-jitters -- and the step normalises them here. A 224 x 224 batch
of 256 is 38.5 MB as uint8 and 154 MB as float32: uint8 cuts the bytes
copied between grain's worker processes and to the device by four, and the
normalisation is one fused elementwise op on the device.

  images = data.prepare_on_device(batch['image'], data.input_spec(config))
"""
from __future__ import annotations

import dataclasses
from typing import Tuple

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """What `prepare_on_device` needs: per-channel mean and std on the 0-255
  pixel scale (`normalised = (pixel - mean) / std`). Hashable, so it can be
  a static argument of a jitted function."""
  mean: Tuple[float, ...]
  std: Tuple[float, ...]

  def __post_init__(self):
    if len(self.mean) != len(self.std) or not self.mean:
      raise ValueError(f'input spec: {len(self.mean)} means but '
                       f'{len(self.std)} stds')
    if min(self.std) <= 0:
      raise ValueError(f'input spec: std {self.std} must be positive')


def input_spec(spec_or_config) -> InputSpec:
  """The InputSpec of a DatasetSpec, of a config (its `dataset`), or of
  anything with `mean` and `std` attributes."""
  if hasattr(spec_or_config, 'mean') and hasattr(spec_or_config, 'std'):
    return InputSpec(tuple(float(v) for v in spec_or_config.mean),
                     tuple(float(v) for v in spec_or_config.std))
  from flax_attn.data.specs import get_dataset_spec  # pylint: disable=g-import-not-at-top
  return input_spec(get_dataset_spec(spec_or_config.dataset))


def prepare_on_device(images, spec_or_config, dtype=jnp.float32):
  """Pixels from the input pipeline -> the network's normalised input.

  images: (N, H, W, C) uint8, or float on the 0-255 scale (what
  `create_train_iterator` / `create_eval_iterator` yield).
  spec_or_config: an InputSpec, a DatasetSpec or a config (see input_spec).
  Returns `dtype` (N, H, W, C): (images - mean) / std per channel, computed
  in float32 as the host did before.
  """
  spec = (spec_or_config if isinstance(spec_or_config, InputSpec)
          else input_spec(spec_or_config))
  images = jnp.asarray(images)
  channels = images.shape[-1]
  if len(spec.mean) != channels:
    raise ValueError(f'images have {channels} channels but the input spec '
                     f'{len(spec.mean)} means/stds')
  mean = jnp.asarray(spec.mean, jnp.float32)
  std = jnp.asarray(spec.std, jnp.float32)
  return ((images.astype(jnp.float32) - mean) / std).astype(dtype)

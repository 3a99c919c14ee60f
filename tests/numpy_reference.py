"""NumPy (float64) building blocks for hand-built forward passes in tests:
convolution with PyTorch's symmetric padding, eval / train BatchNorm,
PyTorch-style average pooling. Written from the definitions, not from the
library's code."""
from __future__ import annotations

import numpy as np


def conv(x, kernel, bias=None, stride=1, groups=1, padding=None):
  """NHWC x HWIO convolution, zero padding k // 2 on each side (PyTorch's),
  `groups` feature groups (HWIO's I is in_channels / groups)."""
  x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
  k = kernel.shape[0]
  pad = k // 2 if padding is None else padding
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  n, h, w, cin = x.shape
  ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
  cout = kernel.shape[-1]
  gin, gout = cin // groups, cout // groups
  out = np.zeros((n, ho, wo, cout))
  for i in range(k):
    for j in range(k):
      patch = xp[:, i:i + stride * (ho - 1) + 1:stride,
                 j:j + stride * (wo - 1) + 1:stride, :]
      for g in range(groups):
        out[..., g * gout:(g + 1) * gout] += (
            patch[..., g * gin:(g + 1) * gin] @ kernel[i, j, :,
                                                       g * gout:(g + 1) * gout])
  return out if bias is None else out + np.asarray(bias, np.float64)


def batch_norm(x, params, stats, eps=1e-5):
  """Eval-mode BatchNorm with running statistics."""
  return ((x - np.asarray(stats['mean'])) / np.sqrt(np.asarray(stats['var'])
                                                    + eps)
          * np.asarray(params['scale']) + np.asarray(params['bias']))


def batch_norm_train(x, params, eps=1e-5):
  """Train-mode BatchNorm: batch mean and biased variance over N, H, W
  (two-pass). Returns (y, mean, var)."""
  x = np.asarray(x, np.float64)
  axes = tuple(range(x.ndim - 1))
  mean = x.mean(axes)
  var = ((x - mean) ** 2).mean(axes)
  y = ((x - mean) / np.sqrt(var + eps) * np.asarray(params['scale'])
       + np.asarray(params['bias']))
  return y, mean, var


def relu(z):
  return np.maximum(z, 0.0)


def sigmoid(z):
  return 1 / (1 + np.exp(-z))


def avg_pool_3x3(x, stride):
  """PyTorch AvgPool2d(3, stride, padding=1), count_include_pad=True."""
  kernel = np.zeros((3, 3, x.shape[-1], x.shape[-1]))
  for c in range(x.shape[-1]):
    kernel[:, :, c, c] = 1 / 9
  return conv(x, kernel, stride=stride)

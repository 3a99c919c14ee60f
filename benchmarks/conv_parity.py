"""Per-convolution CPU time, flax_attn's JAX path next to PyTorch, one process.

  pip install torch==2.13.0   # benchmark-only
  GLIBC_TUNABLES=glibc.malloc.hugetlb=1 XLA_FLAGS=--xla_cpu_multi_thread_eigen=false \
  taskset -c 1 python benchmarks/conv_parity.py [--batch 64] [--rounds 40]

For ResNet-20's three stride-1 3x3 convolutions (32x32x16, 16x16x32,
8x8x64, NHWC / channels_last), times the forward, the input gradient and the
kernel gradient as flax_attn computes them (`cpu_kernels._conv_nhwc`, whose backward
pass is YNNPACK for the input gradient and `cpu_kernels._kernel_grad_im2col` for the
kernel's) and as PyTorch eager does (`conv2d`, `aten.convolution_backward`:
oneDNN), each on one thread. The six are timed round-robin, `--rounds` times,
so both frameworks see the same machine state; the table gives the median
process CPU time per call. Gradients are checked equal first.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
import torch  # pylint: disable=wrong-import-position

from flax_attn import cpu_kernels  # pylint: disable=wrong-import-position

SHAPES = ((32, 16), (16, 32), (8, 64))  # (spatial size, channels)
PAD = ((1, 1), (1, 1))


def _cpu_seconds(fn) -> float:
  start = time.process_time()
  fn()
  return time.process_time() - start


def jax_calls(x, kernel, g):
  forward = jax.jit(lambda x, k: cpu_kernels._conv_nhwc(x, k, (1, 1), PAD))
  input_grad = jax.jit(lambda x, k, g: jax.vjp(
      lambda v: cpu_kernels._conv_nhwc(v, k, (1, 1), PAD), x)[1](g)[0])
  kernel_grad = jax.jit(lambda x, g: cpu_kernels._kernel_grad_im2col(
      x, g, kernel.shape, (1, 1), PAD))
  x, kernel, g = map(jax.numpy.asarray, (x, kernel, g))
  return {'forward': lambda: forward(x, kernel).block_until_ready(),
          'input grad': lambda: input_grad(x, kernel, g).block_until_ready(),
          'kernel grad': lambda: kernel_grad(x, g).block_until_ready()}


def torch_calls(x, kernel, g):
  # NHWC arrays viewed as channels_last NCHW tensors: no copies.
  tx = torch.from_numpy(x).permute(0, 3, 1, 2)
  tg = torch.from_numpy(g).permute(0, 3, 1, 2)
  tk = torch.from_numpy(kernel).permute(3, 2, 0, 1).contiguous(
      memory_format=torch.channels_last)
  backward = torch.ops.aten.convolution_backward

  def grads(mask):
    return backward(tg, tx, tk, None, (1, 1), (1, 1), (1, 1), False, (0, 0),
                    1, mask)

  return {'forward': lambda: torch.conv2d(tx, tk, padding=1),
          'input grad': lambda: grads((True, False, False))[0],
          'kernel grad': lambda: grads((False, True, False))[1]}


def check_equal(jax_fns, torch_fns):
  """flax_attn's input and kernel gradients against PyTorch's."""
  for name in ('input grad', 'kernel grad'):
    ours = np.asarray(jax_fns[name]())
    theirs = torch_fns[name]().numpy()
    theirs = (theirs.transpose(0, 2, 3, 1) if name == 'input grad'
              else theirs.transpose(2, 3, 1, 0))
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-2,
                               err_msg=name)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--rounds', type=int, default=40)
  args = parser.parse_args(argv)
  torch.set_num_threads(1)
  rng = np.random.default_rng(0)
  print(f'batch {args.batch}, median CPU ms per call, {args.rounds} rounds; '
        f'load {os.getloadavg()[0]:.1f}')
  print('| conv | forward JAX / PyTorch | input grad | kernel grad | all three |')
  print('|---|---|---|---|---|')
  for size, channels in SHAPES:
    x = rng.standard_normal((args.batch, size, size, channels), np.float32)
    g = rng.standard_normal((args.batch, size, size, channels), np.float32)
    kernel = 0.1 * rng.standard_normal((3, 3, channels, channels), np.float32)
    calls = {'jax': jax_calls(x, kernel, g), 'torch': torch_calls(x, kernel, g)}
    fns = {(fw, k): f for fw, by_kind in calls.items()
           for k, f in by_kind.items()}
    with torch.no_grad():
      check_equal(calls['jax'], calls['torch'])
      for fn in fns.values():
        fn()
      times = {key: [] for key in fns}
      for _ in range(args.rounds):
        for key, fn in fns.items():
          times[key].append(_cpu_seconds(fn))
    ms = {key: 1e3 * float(np.median(v)) for key, v in times.items()}
    kinds = ('forward', 'input grad', 'kernel grad')
    cells = [f"{ms[('jax', k)]:.2f} / {ms[('torch', k)]:.2f}" for k in kinds]
    total = [sum(ms[(fw, k)] for k in kinds) for fw in ('jax', 'torch')]
    print(f'| {size}x{size}x{channels} | ' + ' | '.join(cells)
          + f' | {total[0]:.1f} / {total[1]:.1f} ({total[1] / total[0]:.2f}x) |',
          flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())

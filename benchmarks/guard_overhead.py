"""A/B: the train step with and without the divergence guard (issue 19).

  python benchmarks/guard_overhead.py

CPU, ResNet-20 (no attention), batch 128 of random 32 x 32 images, one
device; `train.train_step` and `train.guarded_train_step` compiled alike,
timed in 6 alternated rounds of 5 steps; prints the medians and their ratio.
"""
import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from configs import default  # noqa: E402
from flax_attn import cpu_kernels  # noqa: E402
from flax_attn import train  # noqa: E402
from flax_attn.init_rng import init_key  # noqa: E402
from flax_attn.models import model_from_config  # noqa: E402


def main():
  # The CPU kernels, as train.py switches them on for CPU devices.
  cpu_kernels.configure('auto', jax.default_backend())
  config = default.get_config()
  config.model, config.attn, config.batch_size = 'resnet20', 'none', 128
  model = model_from_config(config, 10)
  lr_fn = train.create_learning_rate_fn(config, 100, 100)
  tx = train.create_optimizer(config, lr_fn)
  state = jax.jit(functools.partial(
      train.create_train_state, model=model, tx=tx, image_shape=(32, 32, 3),
      use_ema=False))(init_key(0))
  kwargs = dict(model=model, tx=tx, lr_fn=lr_fn, num_classes=10,
                label_smoothing=0.0, ema_decay=0.0)
  plain = jax.jit(functools.partial(train.train_step, **kwargs))
  guarded = jax.jit(functools.partial(train.guarded_train_step,
                                      divergence_factor=10.0, **kwargs))
  rng = np.random.RandomState(0)
  batch = {'image': jnp.asarray(rng.randn(128, 32, 32, 3), jnp.float32),
           'label': jnp.asarray(rng.randint(0, 10, 128))}
  a, _ = plain(state, batch)
  b, guard, _ = guarded(state, train.init_guard(), batch)
  jax.block_until_ready((a, b))
  times = {'plain': [], 'guarded': []}
  for _ in range(6):
    for name in times:
      start = time.perf_counter()
      for _ in range(5):
        if name == 'plain':
          a, metrics = plain(a, batch)
        else:
          b, guard, metrics = guarded(b, guard, batch)
      jax.block_until_ready(metrics)
      times[name].append((time.perf_counter() - start) / 5)
  p, q = np.median(times['plain']), np.median(times['guarded'])
  print(f'plain {p * 1e3:.1f} ms, guarded {q * 1e3:.1f} ms, ratio {q / p:.3f}')


if __name__ == '__main__':
  main()

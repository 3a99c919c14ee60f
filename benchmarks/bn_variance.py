"""Train-step time of ResNet-20 with BatchNorm's one-pass and two-pass variance.

  python benchmarks/bn_variance.py [--batch 64] [--rounds 5] [--steps 5]

Builds the same jitted train step (forward, closed-form BatchNorm backward,
SGD update) twice in one process: once with the two-pass variance of
`flax_attn.ops.batch_moments` (what the library uses) and once
with the one-pass E[x^2] - E[x]^2 it replaced, and times them alternately
(A/B/A/B..., median of `--steps` steps per round) so that machine load
drifts hit both alike. Prints the medians and their ratio.
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import flax_attn  # noqa: E402  (this checkout's, not an installed one)
from flax_attn import cpu_kernels, ops  # noqa: E402


def one_pass_moments(xf, axes):
  """What ops.batch_moments replaced: E[x^2] - E[x]^2 in one pass."""
  mean = jnp.mean(xf, axes)
  return (mean, jnp.zeros_like(mean),
          jnp.maximum(0.0, jnp.mean(xf * xf, axes) - mean * mean))


def make_step(model, moments):
  tx = optax.sgd(0.1, momentum=0.9)

  def loss_fn(params, batch_stats, images, labels):
    logits, state = model.apply(
        {'params': params, 'batch_stats': batch_stats}, images, train=True,
        mutable=['batch_stats'])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return loss.mean(), state['batch_stats']

  def step(params, batch_stats, opt_state, images, labels):
    original = ops.batch_moments
    ops.batch_moments = moments          # read while tracing only
    try:
      (_, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          params, batch_stats, images, labels)
    finally:
      ops.batch_moments = original
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), stats, opt_state

  return jax.jit(step), tx


def main():
  # The CPU kernels, as train.py switches them on for CPU devices.
  cpu_kernels.configure('auto', jax.default_backend())
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--steps', type=int, default=5)
  args = parser.parse_args()
  model = flax_attn.create_model('resnet20', num_classes=10)
  images = jax.random.normal(jax.random.key(0), (args.batch, 32, 32, 3))
  labels = jnp.arange(args.batch) % 10
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(1), images)
  variants = {'two-pass': ops.batch_moments,
              'one-pass': one_pass_moments}
  states, steps = {}, {}
  for name, moments in variants.items():
    step, tx = make_step(model, moments)
    state = (variables['params'], variables['batch_stats'],
             tx.init(variables['params']))
    state = step(*state, images, labels)           # compile
    jax.block_until_ready(state)
    states[name], steps[name] = state, step
  times = {name: [] for name in variants}
  for _ in range(args.rounds):
    for name in variants:
      for _ in range(args.steps):
        start = time.perf_counter()
        states[name] = steps[name](*states[name], images, labels)
        jax.block_until_ready(states[name])
        times[name].append(time.perf_counter() - start)
  medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
  for name, ms in medians.items():
    print(f'{name}: {ms:.1f} ms / step of {args.batch} (median of '
          f'{len(times[name])})')
  print(f'two-pass / one-pass: {medians["two-pass"] / medians["one-pass"]:.3f}')


if __name__ == '__main__':
  main()

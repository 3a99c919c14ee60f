"""The loss and the two compiled steps: one optimiser step on a batch, and
the masked metric sums of one evaluation batch."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from flax_attn import data as data_lib
from flax_attn.training.state import TrainState


def cross_entropy(logits, labels, num_classes: int, label_smoothing: float):
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def model_input(images, input_spec):
  """The input pipeline's pixels as the model takes them.

  input_spec: a `data.InputSpec` (`data.input_spec(dataset_spec)`): the
  pipeline's uint8 (or 0-255 float) pixels are normalised here, on the
  device, so the host moves a quarter of the bytes. None: the images are
  already the model's input (float), as in a user's own loop.
  """
  if input_spec is not None:
    return data_lib.prepare_on_device(images, input_spec)
  if images.dtype == jnp.uint8:
    raise ValueError('uint8 images need input_spec=data.input_spec(spec) '
                     '(normalised on the device); got input_spec=None')
  return images


def train_step(state: TrainState, batch, *, model, tx, lr_fn, num_classes,
               label_smoothing, ema_decay, input_spec=None):
  """One SGD step on a (globally sharded) batch; returns state and metrics.
  input_spec: see `model_input`."""
  images = model_input(batch['image'], input_spec)

  def loss_fn(params):
    logits, new_model_state = model.apply(
        {'params': params, 'batch_stats': state.batch_stats}, images,
        train=True, mutable=['batch_stats'])
    loss = cross_entropy(logits, batch['label'], num_classes,
                         label_smoothing).mean()
    return loss, (logits, new_model_state)

  (loss, (logits, new_model_state)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema = state.ema_params
  if ema_decay:
    ema = jax.tree_util.tree_map(
        lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema, params)
  metrics = {
      'train_loss': loss,
      'train_top1': jnp.mean(jnp.argmax(logits, -1) == batch['label']),
      'lr': lr_fn(state.step),
      'grad_norm': optax.tree_utils.tree_norm(grads),
  }
  new_state = state.replace(step=state.step + 1, params=params,
                            batch_stats=new_model_state['batch_stats'],
                            opt_state=opt_state, ema_params=ema)
  return new_state, metrics


def eval_step(variables, batch, *, model, num_classes, input_spec=None):
  """Masked sums over one batch: loss, top-1, top-5 hits and count.
  input_spec: see `model_input`."""
  logits = model.apply(variables, model_input(batch['image'], input_spec),
                       train=False)
  mask = batch['mask']
  labels = batch['label']
  loss = cross_entropy(logits, labels, num_classes, 0.0)
  k = min(5, num_classes)
  topk = jax.lax.top_k(logits, k)[1]
  top1 = (topk[:, 0] == labels)
  top5 = jnp.any(topk == labels[:, None], axis=-1)
  return {'loss': jnp.sum(loss * mask), 'top1': jnp.sum(top1 * mask),
          'top5': jnp.sum(top5 * mask), 'count': jnp.sum(mask)}

"""Every model under JAX's transformations (issue 28, item 1).

Without the CPU kernels (flax_attn/cpu_kernels.py, off by default) the
models are plain flax / lax, so forward mode works too:

* every registered name: `jax.jvp` in an input direction against a central
  finite difference, at tiny size (one block per stage, 32 x 32 images);
* three papers' models (CSM, MLAN, MGAN), each transformation against
  an independent computation of the same number: jvp and `jax.linearize` in
  a parameter direction in training mode (batch statistics) against the
  vjp-based directional derivative, `jax.jacfwd` on a 2 x 2 input slice
  against a vjp, the Hessian-vector product forward over reverse against
  `jax.grad` of `jax.grad` (reverse over reverse), `jax.vmap` over inputs
  and over parameters, `jax.checkpoint` and `shard_map` against the plain
  computation;
* the Hessian-vector product against a finite difference of the gradient,
  on a smooth network.

Each model is checked in one jitted function (one XLA compile); names whose
tiny model is identical (depth variants: resnet50/101/152 with one block
per stage) share one check.
"""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flax_attn
from flax_attn import cpu_kernels
from flax_attn.models.vgg import VGG, VGGHead

IMAGE = 32


def tiny_model(name):
  """The named model at one block per stage (VGG: one conv per stage and a
  16-unit head): every module kind it has, little compile time."""
  model = flax_attn.create_model(name, 3)
  if hasattr(model, 'stage_sizes'):
    model = model.clone(stage_sizes=(1,) * len(model.stage_sizes))
  if isinstance(model, VGG):
    model = model.clone(head=functools.partial(VGGHead, hidden=16,
                                               pool_size=1))
  return model


def random_variables(model, batch=1, seed=0):
  """He-scaled random weights, BatchNorm statistics near (0, 1), other
  leaves (biases, attention gates that start at zero) 0.2 N(0, 1): every
  branch contributes. No initialiser runs (each would compile)."""
  x = jnp.zeros((batch, IMAGE, IMAGE, 3))
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x,
                                             train=False))
  rng = np.random.RandomState(seed)

  def draw(path, s):
    name = jax.tree_util.keystr(path[-1:])
    if name == "['var']":
      value = rng.uniform(0.5, 1.5, s.shape)
    elif name == "['scale']":
      value = 1 + 0.2 * rng.randn(*s.shape)
    elif len(s.shape) >= 2:
      value = rng.randn(*s.shape) / np.sqrt(np.prod(s.shape[:-1]))
    else:
      value = 0.2 * rng.randn(*s.shape)
    return jnp.asarray(value, s.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def _rel_err(got, want):
  return float(jnp.linalg.norm((got - want).ravel())
               / jnp.linalg.norm(want.ravel()))


_JVP_VERDICTS = {}


@pytest.mark.parametrize('name', flax_attn.list_models())
def test_jvp_matches_finite_differences(name):
  """Eval mode, d logits in a random input direction v: forward mode
  against the central difference (f(x + e v) - f(x - e v)) / 2e. One jvp
  of the model on the batch (x + e v, x - e v, x) with tangent (0, 0, v)
  gives both (eval mode: images are independent)."""
  assert not cpu_kernels.active()
  model = tiny_model(name)
  key = repr(model)
  if key not in _JVP_VERDICTS:
    variables = random_variables(model)
    x, v = jax.random.normal(jax.random.key(1), (2, 1, IMAGE, IMAGE, 3))
    eps = 1e-3

    @jax.jit
    def check(variables, x, v):
      f = lambda x: model.apply(variables, x, train=False)
      zero = jnp.zeros_like(x)
      out, tangent = jax.jvp(f, (jnp.concatenate([x + eps * v, x - eps * v,
                                                   x]),),
                             (jnp.concatenate([zero, zero, v]),))
      return tangent[2:], (out[:1] - out[1:2]) / (2 * eps)

    tangent, difference = check(variables, x, v)
    _JVP_VERDICTS[key] = (_rel_err(tangent, difference),
                          float(jnp.abs(tangent).max()))
  err, size = _JVP_VERDICTS[key]
  # A tangent that is not negligible, so the comparison says something
  # (the smallest measured: 4.9e-3, hga_inception_tiny's small logits).
  assert size > 1e-3, size
  # Central differences of float32 logits: rounding (|f| / e ~ 1e-4 of the
  # tangent) and the ReLU / max-pool kinks a step of e crosses leave up to
  # ~5e-2 (measured: 0.014 and 0.042 for ca_resnet50 and resnet18); a wrong
  # or missing rule leaves O(1). The full-set test below checks jvp against
  # the vjp to rounding.
  assert err < 0.15, err


# The papers' models with the most kinds of layers: CSM (the position
# attention's custom_jvp, ImageNet basic blocks), MLAN (its own backbone,
# narrow-output convolutions) and MGAN (Res2Net, depthwise convolutions,
# per-stage attention). Each costs about a minute of one core's compile
# time, so the other papers and families (HGA and Inception, the
# fine-grained paper's CSCA, ResNeXt, VGG) are covered by the every-name
# jvp test above only.
FULL_SET = ['csm_resnet18', 'mlan_resnet20', 'mgan_res2net18']


def _tree_dot(a, b):
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree_util.tree_leaves(a),
                                            jax.tree_util.tree_leaves(b)))


def _axpy(a, x, y):
  return jax.tree_util.tree_map(lambda u, w: a * u + w, x, y)


def _setup(model, seed=2):
  """Variables, a parameter direction (0.1 of each leaf's spread), images,
  labels and a logits cotangent."""
  variables = random_variables(model, batch=2)
  params = variables['params']
  stats = {k: v for k, v in variables.items() if k != 'params'}
  rng = np.random.RandomState(seed)
  dparams = jax.tree_util.tree_map(
      lambda p: jnp.asarray(0.1 * (float(jnp.std(p)) if p.size > 1 else 1.0)
                            * rng.randn(*p.shape), p.dtype), params)
  x = jnp.asarray(rng.randn(2, IMAGE, IMAGE, 3), jnp.float32)
  u = jnp.asarray(rng.randn(2, 3), jnp.float32)
  return params, stats, dparams, x, jnp.array([0, 2]), u


def _loss_fn(model, stats, x, labels):
  def loss(p):
    lp = jax.nn.log_softmax(model.apply({'params': p, **stats}, x,
                                        train=False))
    return -jnp.mean(jnp.take_along_axis(lp, labels[:, None], 1))
  return loss


@pytest.mark.parametrize('name', FULL_SET)
def test_every_transformation(name):
  """Each transformation against an independent computation of the same
  number, all in one jitted function (one compile per model)."""
  model = tiny_model(name)
  params, stats, dparams, x, labels, u = _setup(model)
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:2]), ('batch',))
  loss = _loss_fn(model, stats, x, labels)

  def logits(p, x):
    return model.apply({'params': p, **stats}, x, train=False)

  def train_logits(p):  # training mode: batch statistics
    return model.apply({'params': p, **stats}, x, train=True,
                       mutable=['batch_stats'])[0]

  @jax.jit
  def run(params, dparams, x):
    out = {}
    # jvp and linearize (training mode) against the vjp-based directional
    # derivative: <J dp, u> = <dp, J^T u>.
    _, tangent = jax.jvp(train_logits, (params,), (dparams,))
    _, lin = jax.linearize(train_logits, params)
    by_vjp = _tree_dot(jax.vjp(train_logits, params)[1](u)[0], dparams)
    out['jvp'] = (jnp.vdot(tangent, u), by_vjp)
    out['linearize'] = (lin(dparams), tangent)
    # jacfwd on a 2 x 2 patch of image 0's first channel, contracted with
    # u, against one vjp.
    def of_patch(patch):
      return logits(params, x.at[0, :2, :2, 0].set(patch))
    patch = x[0, :2, :2, 0]
    out['jacfwd'] = (jnp.einsum('nkij,nk->ij', jax.jacfwd(of_patch)(patch), u),
                     jax.vjp(of_patch, patch)[1](u)[0])
    # Hessian-vector product forward over reverse, against grad of grad
    # (reverse over reverse: the gradient of <grad, dp>).
    grad = jax.grad(loss)
    g, hvp = jax.jvp(grad, (params,), (dparams,))
    out['hvp'] = (hvp, jax.grad(lambda p: _tree_dot(grad(p), dparams))(params))
    # vmap over inputs (eval mode: images independent) and parameters.
    whole = logits(params, x)
    out['vmap_inputs'] = (jax.vmap(lambda xi: logits(params, xi[None])[0])(x),
                          whole)
    shifted = _axpy(1.0, dparams, params)
    out['vmap_params'] = (
        jax.vmap(lambda p: logits(p, x))(jax.tree_util.tree_map(
            lambda a, b: jnp.stack([a, b]), params, shifted)),
        jnp.stack([whole, logits(shifted, x)]))
    # checkpoint: the same gradient, recomputed.
    out['checkpoint'] = (jax.grad(jax.checkpoint(loss))(params), g)
    # shard_map: each of 2 devices takes one image.
    sharded = jax.shard_map(lambda xs: logits(params, xs), mesh=mesh,
                            in_specs=jax.P('batch'), out_specs=jax.P('batch'))
    out['shard_map'] = (sharded(x), whole)
    return out

  for check, (got, want) in run(params, dparams, x).items():
    scale = max(float(jnp.abs(a).max())
                for a in jax.tree_util.tree_leaves(want))
    assert scale > 1e-6, (name, check)
    chex.assert_trees_all_close(got, want, atol=1e-4 * scale, rtol=1e-3,
                                custom_message=f'{name}: {check}')


def test_hessian_vector_product_matches_finite_differences():
  """Forward over reverse against (grad(p + e dp) - grad(p - e dp)) / 2e on
  a smooth network (CIFAR ResNet-20 with softplus: with ReLU the gradient
  jumps at every kink a perturbation crosses, and finite differences of it
  do not converge)."""
  model = tiny_model('resnet20').clone(act=jax.nn.softplus)
  params, stats, dparams, x, labels, _ = _setup(model)
  loss = _loss_fn(model, stats, x, labels)
  eps = 1e-2

  @jax.jit
  def run(params, dparams):
    grad = jax.grad(loss)
    hvp = jax.jvp(grad, (params,), (dparams,))[1]
    ends = jax.vmap(lambda e: grad(_axpy(e, dparams, params)))(
        jnp.array([eps, -eps]))
    fd = jax.tree_util.tree_map(lambda a: (a[0] - a[1]) / (2 * eps), ends)
    return hvp, fd

  flat = lambda t: jnp.concatenate([a.ravel()
                                    for a in jax.tree_util.tree_leaves(t)])
  hvp, fd = (flat(t) for t in run(params, dparams))
  assert float(jnp.abs(hvp).max()) > 1e-3
  assert _rel_err(hvp, fd) < 1e-2, _rel_err(hvp, fd)

"""Pretrained weights: PyTorch ResNet-family state dicts into Flax variables.

  sd = weights.load_state_dict('resnet50.pth')        # or .safetensors
  variables = weights.from_torch('resnet50', sd)      # create_model's tree
  variables, report = weights.import_torch('csca_resnet50', sd,
                                           num_classes=200)
  print(report.summary())   # backbone loaded, attention + head fresh

Sources: torchvision's and timm's ResNet family, whose architectures the
models of the same name here reproduce (flax_attn/models/resnet.py):
resnet18/34/50/101/152, resnext50_32x4d/101_32x8d/..., wide_resnet50_2/101_2,
res2net50_26w_4s (timm's Bottle2neck: `convs.i`, `bns.i`) and seresnet50
(timm's SE: `se.fc1`/`se.fc2`, 1x1 convs with bias), and the backbone of any
attention model built on them (hga_resnet50, csca_resnet50, ...); timm's
attention networks (flax_attn/models/zoo/timm_resnets.py): resnet26d/50d/101d,
seresnext26d_32x4d, seresnext50_32x4d, ecaresnet26t/50d/50t/101d,
skresnet18/34, skresnext50_32x4d and the ByobNet gcresnet50t.

The mapping is derived from the model's own variable tree (`jax.eval_shape`
of `model.init`), not from a list per model, by renaming each module:

  conv_stem, bn_stem                 conv1, bn1
    deep stem (stem_type):             conv1.{0,1,3,4,6}, bn1  (timm -D/-T)
  stage{i}_block{j}/...              layer{i}.{j}.
    conv1..3, bn1..3                   conv1..3, bn1..3
    shortcut/conv, shortcut/bn         downsample.0, downsample.1
      (avg_down)                       downsample.1, downsample.2
    multiscale/convs_k, bns_k          convs.k, bns.k           (Res2Net)
    attn/...                           se.<timm name>: the attention class's
                                       `timm_names` (SE fc1/fc2, ECA conv,
                                       GC conv_attn, mlp_add.*)
    SK blocks: convN/bnN               convN.conv, convN.bn     (ConvNormAct)
      convN/pathP_conv, pathP_bn       convN.paths.P.conv, .bn
      convN/fc_reduce, attn_bn, fc_select  convN.attn.fc_reduce, .bn, ...
  head/fc (GAP + FC)                 fc
  head/classifier (FCN 1x1 conv)     fc (a linear layer is a 1x1 conv)

and, for a block with `torch_layout = 'byobnet'` (gcresnet50t), timm's
ByobNet keys: stem.conv{1,2,3}.conv/.bn, stages.{i-1}.{j}.conv1_1x1 /
conv2_kxk / conv3_1x1 / shortcut (.conv, .bn), ...attn.*, head.fc,

and each leaf: conv kernel OIHW -> HWIO (Conv1d OIW -> WIO), linear weight
(out, in) -> (in, out), BN / LayerNorm weight, bias -> scale, bias,
running_mean/var -> batch_stats mean/var (`num_batches_tracked` is ignored). Our convs pad symmetrically as PyTorch
does, so logits agree to float32 rounding.

Anything else in the model (attention modules timm does not have, stage
attention, a head of another size; the block attention too when the file
holds none of it, e.g. a plain ResNet file for an SE model) is freshly
initialised and listed in the `ImportReport`; a
checkpoint key or shape that does not fit raises `CheckpointError` naming the
first offending key. Files are read safely only: safetensors, or
`torch.load(..., weights_only=True)`, which refuses arbitrary pickled objects.
PyTorch is imported lazily, only to read .pth files.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from flax_attn.errors import CheckpointError
from flax_attn.init_rng import init_key

# BatchNorm / conv / dense leaf names: ours -> PyTorch's.
_LEAF_NAMES = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias',
               'mean': 'running_mean', 'var': 'running_var'}
# Keys of a PyTorch state dict that carry no weights.
_IGNORED_SUFFIXES = ('num_batches_tracked',)
_BLOCK = re.compile(r'stage(\d+)_block(\d+)')
_BLOCK_LAYERS = {'conv1', 'conv2', 'conv3', 'bn1', 'bn2', 'bn3'}
_TORCH_SUFFIXES = ('.pth', '.pt', '.bin', '.ckpt', '.tar')
_SAFETENSORS_SUFFIX = '.safetensors'


@dataclasses.dataclass(frozen=True)
class _Entry:
  """One variable of our model and the PyTorch tensor it comes from."""
  path: Tuple[str, ...]     # ('params', 'stage1_block0', 'conv1', 'kernel')
  torch_key: str            # 'layer1.0.conv1.weight'
  shape: Tuple[int, ...]    # our shape
  torch_linear: bool        # the PyTorch module is nn.Linear (else a conv/BN)
  is_head: bool

  @property
  def is_attention(self) -> bool:
    """A block's attention module (optional: a plain ResNet file has none)."""
    return len(self.path) > 3 and self.path[2] == 'attn'

  @property
  def name(self) -> str:
    return '/'.join(self.path)

  @property
  def torch_shape(self) -> Tuple[int, ...]:
    """The shape PyTorch stores this variable with."""
    if self.path[-1] != 'kernel':
      return self.shape
    if len(self.shape) == 4:           # conv HWIO; or the FCN 1x1 conv
      h, w, i, o = self.shape
      return (o, i) if self.torch_linear else (o, i, h, w)
    if len(self.shape) == 3:           # 1-D conv (ECA) WIO -> OIW
      return tuple(reversed(self.shape))
    i, o = self.shape                  # Dense (in, out)
    return (o, i) if self.torch_linear else (o, i, 1, 1)  # SE's 1x1 convs

  def convert(self, value: np.ndarray) -> np.ndarray:
    """PyTorch layout -> ours."""
    if self.path[-1] != 'kernel':
      return value
    if value.ndim == 4:                # OIHW -> HWIO
      value = value.transpose(2, 3, 1, 0)
    elif value.ndim == 3:              # Conv1d OIW -> WIO
      value = value.transpose(2, 1, 0)
    else:                              # (out, in) -> (in, out)
      value = value.T
    return value.reshape(self.shape)   # SE / FCN: drop or add the 1x1 dims


@dataclasses.dataclass(frozen=True)
class ImportReport:
  """What an import took from the checkpoint and what it initialised.

  Attributes:
    model: the model name.
    loaded: our variable paths filled from the checkpoint
      ('params/stage1_block0/conv1/kernel', ...).
    fresh: our variable paths the file does not hold (attention modules, a
      new head), freshly initialised.
    unused: checkpoint keys not used (the old head when the class count
      changes; anything else only with `strict=False`).
    initialised: whether `fresh` was initialised (else left out of the
      variables, for the training run to initialise).
  """
  model: str
  loaded: Tuple[str, ...]
  fresh: Tuple[str, ...]
  unused: Tuple[str, ...]
  initialised: bool = True

  def fresh_modules(self) -> List[str]:
    """The freshly initialised variables grouped by module, in model order."""
    modules = []
    for path in self.fresh:
      parts = path.split('/')[1:-1] or path.split('/')[1:]  # no leaf name
      # Group by the block-level module ('stage1_block0/attn').
      module = '/'.join(parts[:2] if _BLOCK.fullmatch(parts[0]) else parts[:1])
      if module not in modules:
        modules.append(module)
    return modules

  def summary(self) -> str:
    """One line, e.g. 'hga_resnet50: loaded 267 arrays from the checkpoint,
    128 freshly initialised (16 modules: stage1_block0/attn, ...), 0
    checkpoint keys unused'."""
    line = (f'{self.model}: loaded {len(self.loaded)} arrays from the '
            f'checkpoint, {len(self.fresh)} ' +
            ('freshly initialised' if self.initialised else
             'left to fresh initialisation'))
    modules = self.fresh_modules()
    if modules:
      shown = ', '.join(modules[:4]) + (', ...' if len(modules) > 4 else '')
      line += f' ({len(modules)} modules: {shown})'
    line += f', {len(self.unused)} checkpoint keys unused'
    if self.unused:
      shown = ', '.join(self.unused[:4]) + (', ...' if len(self.unused) > 4
                                           else '')
      line += f' ({shown})'
    return line


# ---------------------------------------------------------------------------
# The mapping, from the module tree
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Layout:
  """How the PyTorch model of the same architecture names its modules.

  byobnet: timm's ByobNet keys (stem.convN.conv, stages.i.j.conv1_1x1.conv,
    head.fc; gcresnet50t), chosen by the block's `torch_layout`; else the
    torchvision / timm ResNet keys (conv1, layerN.M.conv1, fc).
  deep_stem: timm's deep stem, a Sequential conv1.{0,1,3,4,6}.
  avg_down: the shortcut is Sequential(AvgPool2d, conv, bn).
  attn_names: our block-attention submodule -> timm's (the attention class's
    `timm_names`); empty when timm has no such module.
  """
  byobnet: bool = False
  deep_stem: bool = False
  avg_down: bool = False
  attn_names: Mapping[str, str] = dataclasses.field(default_factory=dict)

  @property
  def head(self) -> str:
    return 'head.fc' if self.byobnet else 'fc'


def _layout(model) -> _Layout:
  """The layout of `model`'s PyTorch counterpart, from its fields."""
  from flax_attn.models.resnet import BLOCKS  # pylint: disable=g-import-not-at-top
  block = BLOCKS.get(getattr(model, 'block', None))
  factory = getattr(model, 'attn', None)
  names = {}
  if factory is not None:
    try:  # an unbound instance only reads the options (no variables)
      names = dict(getattr(factory(), 'timm_names', None) or {})
    except TypeError:  # a factory that needs arguments: no timm names
      names = {}
  return _Layout(
      byobnet=getattr(block, 'torch_layout', 'resnet') == 'byobnet',
      deep_stem=bool(getattr(model, 'stem_type', '')),
      avg_down=(getattr(model, 'avg_down', False)
                or getattr(model, 'shortcut', 'B') == 'D'),
      attn_names=names)


# ResNet layout: the deep stem's Sequential indices (conv, BN, act) x 3.
_DEEP_STEM = {'conv_stem1': 'conv1.0', 'bn_stem1': 'conv1.1',
              'conv_stem2': 'conv1.3', 'bn_stem2': 'conv1.4',
              'conv_stem': 'conv1.6', 'bn_stem': 'bn1'}
_BYOB_STEM = {'conv_stem1': 'stem.conv1.conv', 'bn_stem1': 'stem.conv1.bn',
              'conv_stem2': 'stem.conv2.conv', 'bn_stem2': 'stem.conv2.bn',
              'conv_stem': 'stem.conv3.conv', 'bn_stem': 'stem.conv3.bn'}
_BYOB_CONVS = {'1': 'conv1_1x1', '2': 'conv2_kxk', '3': 'conv3_1x1'}
# A selective-kernel conv's submodules (timm's SelectiveKernel).
_SK_PARTS = {'fc_reduce': 'attn.fc_reduce', 'attn_bn': 'attn.bn',
             'fc_select': 'attn.fc_select'}


def _torch_module(module_path: Tuple[str, ...], layout: _Layout,
                  sk_block: bool = False) -> Optional[Tuple[str, bool]]:
  """(PyTorch module name, is nn.Linear) for one of our modules, or None
  when the module has no counterpart in the PyTorch model. `sk_block`: the
  block holds a selective-kernel conv (timm's SK blocks wrap every conv in
  ConvNormAct: conv1.conv, conv1.bn)."""
  if module_path in (('head', 'fc'), ('head', 'classifier')):
    return layout.head, True
  if len(module_path) == 1:
    stem = module_path[0]
    if layout.byobnet:
      target = _BYOB_STEM.get(stem)
    elif layout.deep_stem:
      target = _DEEP_STEM.get(stem)
    else:
      target = {'conv_stem': 'conv1', 'bn_stem': 'bn1'}.get(stem)
    return (target, False) if target else None
  block = _BLOCK.fullmatch(module_path[0]) if module_path else None
  if block is None:
    return None
  stage, index = int(block.group(1)), block.group(2)
  prefix = (f'stages.{stage - 1}.{index}' if layout.byobnet
            else f'layer{stage}.{index}')
  rest = module_path[1:]
  if len(rest) == 1 and rest[0] in _BLOCK_LAYERS:
    kind, number = rest[0][:-1], rest[0][-1]
    if layout.byobnet:
      return f'{prefix}.{_BYOB_CONVS[number]}.{kind}', False
    if sk_block:
      return f'{prefix}.conv{number}.{kind}', False
    return f'{prefix}.{rest[0]}', False
  if rest in (('shortcut', 'conv'), ('shortcut', 'bn')):
    if layout.byobnet:
      return f'{prefix}.shortcut.{rest[1]}', False
    first = 1 if layout.avg_down else 0  # downsample.0 is the AvgPool2d
    return (f'{prefix}.downsample.{first + (rest[1] == "bn")}', False)
  if len(rest) == 2 and rest[0] == 'multiscale':
    split = re.fullmatch(r'(convs|bns)_(\d+)', rest[1])
    if split:
      return f'{prefix}.{split.group(1)}.{split.group(2)}', False
  if len(rest) == 2 and rest[0] in _BLOCK_LAYERS:  # a selective-kernel conv
    path = re.fullmatch(r'path(\d+)_(conv|bn)', rest[1])
    part = (f'paths.{path.group(1)}.{path.group(2)}' if path
            else _SK_PARTS.get(rest[1]))
    if part:
      return f'{prefix}.{rest[0]}.{part}', False
  if len(rest) == 2 and rest[0] == 'attn' and rest[1] in layout.attn_names:
    # timm names a ResNet block's attention `se` whatever its type.
    attn = 'attn' if layout.byobnet else 'se'
    return f'{prefix}.{attn}.{layout.attn_names[rest[1]]}', False
  return None


def _plan(model, abstract: Mapping[str, Any]
          ) -> Tuple[List[_Entry], List[Tuple[str, ...]]]:
  """Splits the model's variables into those the PyTorch model's
  checkpoint holds (entries, in model order) and the rest (paths)."""
  layout = _layout(model)
  flat = traverse_util.flatten_dict(
      {c: abstract[c] for c in ('params', 'batch_stats') if c in abstract})
  sk_blocks = {path[1] for path in flat
               if len(path) > 3 and re.fullmatch(r'path\d+_conv', path[3])}
  entries, others = [], []
  for path, leaf in sorted(flat.items(), key=lambda item: _model_order(item[0])):
    target = _torch_module(path[1:-1], layout, path[1] in sk_blocks)
    if target is None or path[-1] not in _LEAF_NAMES:
      others.append(path)
      continue
    module, linear = target
    entries.append(_Entry(path, f'{module}.{_LEAF_NAMES[path[-1]]}',
                          tuple(leaf.shape), linear, module == layout.head))
  return entries, others


# PyTorch's module order inside the stem and a block, for reports and for
# naming the *first* key that does not fit.
_LAYER_RANK = {'conv_stem1': -4, 'bn_stem1': -3, 'conv_stem2': -2,
               'bn_stem2': -1, 'conv_stem': 0, 'bn_stem': 1, 'conv1': 0,
               'bn1': 1, 'fc_reduce': 60, 'attn_bn': 61, 'fc_select': 62,
               'conv_mask': 0, 'transform_conv1': 1, 'transform_ln': 2,
               'transform_conv2': 3,
               'multiscale': 2, 'conv2': 2, 'bn2': 3, 'conv3': 4, 'bn3': 5,
               'attn': 6, 'shortcut': 7, 'conv': 0, 'bn': 1}
_LEAF_RANK = {'kernel': 0, 'scale': 0, 'bias': 1, 'mean': 2, 'var': 3}


def _model_order(path: Tuple[str, ...]):
  """Sort key of a variable path in the order the network runs (jax
  flattens dicts alphabetically: 'bn1' < 'conv1', 'stage10' < 'stage2')."""
  modules = []
  for part in path[1:-1]:
    stage = re.fullmatch(r'stage(\d+)_(?:block(\d+)|attn)', part)
    if stage:
      block = int(stage.group(2)) if stage.group(2) is not None else 10**6
      modules.append((1, int(stage.group(1)), block, ''))
    elif part == 'head':
      modules.append((2, 0, 0, ''))
    elif re.fullmatch(r'path\d+_(conv|bn)', part):  # SK paths, then SK attn
      modules.append((0, 40 + int(part[4:].split('_')[0]),
                      int(part.endswith('bn')), ''))
    else:  # digits zero-padded: convs_2 < convs_10
      modules.append((0, _LAYER_RANK.get(part, 50), 0,
                      re.sub(r'\d+', lambda m: m.group().zfill(8), part)))
  return (modules, path[0] != 'params', _LEAF_RANK.get(path[-1], 9), path[-1])


def _abstract_variables(model, image_size: int):
  return jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)),
      train=False))


def torch_shapes(model_name: str, num_classes: int = 1000,
                 image_size: int = 224, **model_kwargs
                 ) -> Dict[str, Tuple[int, ...]]:
  """The PyTorch state-dict keys and shapes a model's backbone and head take.

  Costs no compute (jax.eval_shape). For `resnet50` these are exactly the
  keys of torchvision's / timm's `resnet50().state_dict()` less
  `num_batches_tracked`.
  """
  from flax_attn.models import create_model  # pylint: disable=g-import-not-at-top
  model = create_model(model_name, num_classes=num_classes, **model_kwargs)
  entries, _ = _plan(model, _abstract_variables(model, image_size))
  return {e.torch_key: e.torch_shape for e in entries}


# ---------------------------------------------------------------------------
# Import
# ---------------------------------------------------------------------------


def _to_numpy(value) -> np.ndarray:
  """A torch tensor, jax or numpy array as a float32 numpy array."""
  if hasattr(value, 'detach'):  # torch.Tensor, without importing torch
    value = value.detach().cpu()
    if value.is_floating_point():
      value = value.float()
    return value.numpy()
  return np.asarray(value, dtype=np.float32)


def _shape(value) -> Tuple[int, ...]:
  return tuple(int(d) for d in value.shape)


def import_torch(model_name: str, state_dict: Mapping[str, Any],
                 num_classes: Optional[int] = None, *, seed: int = 0,
                 init_fresh: bool = True, strict: bool = True,
                 image_size: int = 224, **model_kwargs
                 ) -> Tuple[Dict[str, Any], ImportReport]:
  """Converts a PyTorch ResNet-family state dict to `model_name`'s variables.

  Args:
    model_name: a registered model name (`flax_attn.list_models()`).
    state_dict: PyTorch key -> tensor (torch, numpy or jax arrays), e.g. from
      `load_state_dict(path)` or `torchvision_model.state_dict()`.
    num_classes: classifier outputs; None keeps the checkpoint's. Another
      count than the checkpoint's gives a freshly initialised head.
    seed: seed of the fresh initialisation (`flax_attn.init_key(seed)`, as
      train.py initialises).
    init_fresh: initialise what the file does not hold (the model's own
      `init`, one jit compilation); with False the variables hold only the
      arrays taken from the file (what a pretrained checkpoint for
      `config.pretrained_path` needs: training initialises the rest).
    strict: a checkpoint key the model has no place for is an error; with
      False it is only listed in `report.unused`.
    image_size: input size used to initialise fresh modules.
    **model_kwargs: passed on to `create_model` (e.g. `attn_kwargs`).

  Returns:
    `(variables, report)`: `{'params': ..., 'batch_stats': ...}` that
    `create_model(model_name, num_classes=...)` applies (with `init_fresh`),
    and an `ImportReport`.

  Raises:
    CheckpointError: a missing key, a key of another shape, or (strict) a
      key the model does not have; the message names the first one.
    UnknownNameError: `model_name` is not registered.
  """
  from flax_attn.models import create_model  # pylint: disable=g-import-not-at-top
  state_dict = {k: v for k, v in state_dict.items()
                if not k.endswith(_IGNORED_SUFFIXES)}
  # The layout (hence the classifier's key) does not depend on the class
  # count: read it from a model of any count (no initialisation).
  head = _layout(create_model(model_name, num_classes=num_classes or 1,
                              **model_kwargs)).head
  file_classes = (_shape(state_dict[f'{head}.weight'])[0]
                  if f'{head}.weight' in state_dict else None)
  if num_classes is None:
    if file_classes is None:
      raise CheckpointError(f'the checkpoint has no classifier '
                            f'({head}.weight); pass num_classes for a new '
                            'head')
    num_classes = file_classes
  model = create_model(model_name, num_classes=num_classes, **model_kwargs)
  abstract = _abstract_variables(model, image_size)
  entries, others = _plan(model, abstract)
  if not any(not e.is_head for e in entries):
    raise CheckpointError(f'model {model_name!r} has no layer a PyTorch '
                          'ResNet checkpoint names (conv1, bn1, layerN.M...)')
  new_head = file_classes != num_classes
  # A plain ResNet file for an SE / ECA model: the attention is new, like
  # any attention (one attention key present makes every one required).
  new_attn = not any(e.torch_key in state_dict for e in entries
                     if e.is_attention)
  return _import_planned(
      model, model_name, state_dict, entries, others,
      skip=lambda e: (e.is_head and new_head) or (e.is_attention and new_attn),
      spare_prefix=f'{head}.' if new_head else None, strict=strict,
      init_fresh=init_fresh, seed=seed, image_size=image_size,
      order=_model_order)


def _import_planned(model, model_name: str, state_dict, entries, others, *,
                    skip, spare_prefix: Optional[str], strict: bool,
                    init_fresh: bool, seed: int, image_size: int,
                    order=None):
  """What every importer shares, once it has planned where each PyTorch
  array goes: checks each key and shape, converts the arrays, refuses keys
  with no place (strict; `spare_prefix` keys, a replaced classifier, are
  allowed), and initialises what the file does not hold (`skip`, `others`).
  """
  fresh = list(others)
  values: Dict[Tuple[str, ...], np.ndarray] = {}
  for e in entries:
    if skip(e):
      fresh.append(e.path)
      continue
    if e.torch_key not in state_dict:
      raise CheckpointError(
          f'the checkpoint has no key {e.torch_key!r} (shape '
          f'{e.torch_shape}) that model {model_name!r} needs for {e.name}')
    got = _shape(state_dict[e.torch_key])
    if got != e.torch_shape:
      raise CheckpointError(
          f'checkpoint key {e.torch_key!r} has shape {got}; model '
          f'{model_name!r} needs {e.torch_shape} for {e.name}')
    values[e.path] = e.convert(_to_numpy(state_dict[e.torch_key]))
  used = {e.torch_key for e in entries if e.path in values}
  unused = [k for k in state_dict if k not in used]
  if strict:
    unexpected = [k for k in unused
                  if not (spare_prefix and k.startswith(spare_prefix))]
    if unexpected:
      raise CheckpointError(
          f'checkpoint key {unexpected[0]!r} (shape '
          f'{_shape(state_dict[unexpected[0]])}) has no place in model '
          f'{model_name!r}' + (f' ({len(unexpected)} such keys)'
                               if len(unexpected) > 1 else ''))
  flat = (_fresh_init(model, fresh, seed, image_size)
          if fresh and init_fresh else {})
  for path, value in values.items():
    flat[path] = jnp.asarray(value, dtype=jnp.float32)
  variables = traverse_util.unflatten_dict(flat)
  variables.setdefault('params', {})
  variables.setdefault('batch_stats', {})
  report = ImportReport(
      model=model_name,
      loaded=tuple('/'.join(e.path) for e in entries if e.path in values),
      fresh=tuple('/'.join(p) for p in sorted(fresh, key=order)),
      unused=tuple(unused), initialised=init_fresh)
  return variables, report


def _fresh_init(model, paths, seed: int, image_size: int):
  """The model's own initial values of `paths` (what `model.init` gives).

  Only those leaves leave the jitted init, so XLA drops the random draws and
  convolutions of everything that is loaded from the file instead.
  """
  wanted = list(paths)

  def init(key):
    variables = model.init(key, jnp.zeros((1, image_size, image_size, 3)),
                           train=False)
    flat = traverse_util.flatten_dict(
        {c: variables[c] for c in ('params', 'batch_stats') if c in variables})
    return [flat[p] for p in wanted]

  return dict(zip(wanted, jax.jit(init)(init_key(seed))))


def from_torch(model_name: str, state_dict: Mapping[str, Any],
               num_classes: Optional[int] = None, **kwargs) -> Dict[str, Any]:
  """`import_torch` without the report: the variables only."""
  return import_torch(model_name, state_dict, num_classes, **kwargs)[0]


# ---------------------------------------------------------------------------
# torchvision's VGG
# ---------------------------------------------------------------------------


def _vgg_plan(model, abstract: Mapping[str, Any]
              ) -> Tuple[List[_Entry], List[Tuple[str, ...]]]:
  """Our VGG's variables that torchvision's VGG state dict holds, and the
  rest. torchvision numbers `features` by position in one nn.Sequential
  (conv, [BN], ReLU per conv, a MaxPool after each stage) and names the
  classifier's Linear layers 0, 3 and 6 (ReLU and Dropout between)."""
  modules = {}
  index = 0
  for i, convs in enumerate(model.stage_sizes):
    for j in range(convs):
      modules[(f'stage{i + 1}_conv{j}',)] = (f'features.{index}', False)
      index += 1
      if model.batch_norm:
        modules[(f'stage{i + 1}_bn{j}',)] = (f'features.{index}', False)
        index += 1
      index += 1  # ReLU
    index += 1    # MaxPool2d
  for k in range(3):
    modules[('head', f'fc{k}')] = (f'classifier.{3 * k}', True)
  flat = traverse_util.flatten_dict(
      {c: abstract[c] for c in ('params', 'batch_stats') if c in abstract})
  entries, others = [], []
  for path, leaf in flat.items():
    target = modules.get(path[1:-1])
    if target is None or path[-1] not in _LEAF_NAMES:
      others.append(path)
      continue
    module, linear = target
    entries.append(_Entry(path, f'{module}.{_LEAF_NAMES[path[-1]]}',
                          tuple(leaf.shape), linear,
                          module == 'classifier.6'))
  # torchvision's order: by layer index, weight before bias before stats.
  entries.sort(key=lambda e: ([int(t) if t.isdigit() else t
                               for t in e.torch_key.split('.')[:-1]],
                              _LEAF_RANK[e.path[-1]]))
  return entries, others


def import_torchvision_vgg(model_name: str, state_dict: Mapping[str, Any],
                           num_classes: Optional[int] = None, *,
                           seed: int = 0, init_fresh: bool = True,
                           strict: bool = True, image_size: int = 32,
                           **model_kwargs
                           ) -> Tuple[Dict[str, Any], ImportReport]:
  """torchvision's `vgg16` / `vgg16_bn` state dict -> `model_name`'s
  variables (a VGG of flax_attn.models.vgg: vgg16, vgg16_bn, their CIFAR
  variants, or any of them with attention).

  Conv kernels OIHW -> HWIO, Linear weights transposed; our classifier
  flattens in PyTorch's (C, H, W) order, so classifier.0's weight needs no
  reordering. Attention modules, a head of another class count (the last
  Linear) and the CIFAR variants' GAP + FC head are freshly initialised and
  listed in the report; `features.*` must all fit. Arguments and errors as
  `import_torch`.
  """
  from flax_attn.models import create_model  # pylint: disable=g-import-not-at-top
  from flax_attn.models.vgg import VGG  # pylint: disable=g-import-not-at-top
  state_dict = {k: v for k, v in state_dict.items()
                if not k.endswith(_IGNORED_SUFFIXES)}
  file_classes = (_shape(state_dict['classifier.6.weight'])[0]
                  if 'classifier.6.weight' in state_dict else None)
  if num_classes is None:
    if file_classes is None:
      raise CheckpointError('the checkpoint has no classifier '
                            '(classifier.6.weight); pass num_classes')
    num_classes = file_classes
  model = create_model(model_name, num_classes=num_classes, **model_kwargs)
  if not isinstance(model, VGG):
    raise CheckpointError(f'model {model_name!r} is not a VGG; '
                          'import_torch reads ResNet-family checkpoints')
  entries, others = _vgg_plan(model, _abstract_variables(model, image_size))
  # The classifier's keys may go unused: a CIFAR VGG takes the features only.
  return _import_planned(
      model, model_name, state_dict, entries, others,
      skip=lambda e: e.is_head and file_classes != num_classes,
      spare_prefix='classifier.', strict=strict, init_fresh=init_fresh,
      seed=seed, image_size=image_size)


# ---------------------------------------------------------------------------
# Reading files, safely
# ---------------------------------------------------------------------------


def load_state_dict(path: str) -> Dict[str, Any]:
  """Reads a PyTorch state dict without unpickling arbitrary objects.

  `.safetensors` files are read with safetensors (no PyTorch needed);
  `.pth`/`.pt`/`.bin`/`.ckpt` with `torch.load(weights_only=True)`, which
  only rebuilds tensors and plain containers. A checkpoint that wraps the
  weights (`{'state_dict': ...}` or `{'model': ...}`) is unwrapped, and a
  `module.` prefix (DataParallel) is removed.
  """
  if not os.path.isfile(path):
    raise CheckpointError(f'checkpoint file {path!r} does not exist')
  if path.endswith(_SAFETENSORS_SUFFIX):
    state = _read_safetensors(path)
  elif path.endswith(_TORCH_SUFFIXES):
    state = _read_torch(path)
  else:
    raise CheckpointError(
        f'unknown checkpoint file type {os.path.basename(path)!r}; valid: '
        f'{", ".join((_SAFETENSORS_SUFFIX,) + _TORCH_SUFFIXES)}')
  return _unwrap(state, path)


def _read_safetensors(path: str) -> Dict[str, Any]:
  try:
    from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise CheckpointError('reading .safetensors needs the safetensors '
                          'package: pip install safetensors') from None
  state = {}
  try:
    with safe_open(path, framework='numpy') as f:
      for key in f.keys():
        try:
          state[key] = f.get_tensor(key)
        except TypeError:  # bfloat16 has no numpy dtype; jax has one
          with safe_open(path, framework='flax') as g:
            state[key] = g.get_tensor(key)
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f'{path!r} is not a readable safetensors file: '
                          f'{type(e).__name__}: {e}'.splitlines()[0]) from None
  return state


def _read_torch(path: str) -> Dict[str, Any]:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise CheckpointError(
        f'reading {os.path.basename(path)!r} needs PyTorch (pip install '
        'torch); or give a .safetensors file') from None
  import pickle  # pylint: disable=g-import-not-at-top
  with open(path, 'rb') as f:
    head = f.read(8)
  # torch.save writes a zip archive (PK..); before PyTorch 1.6, a pickle.
  if not (head.startswith(b'PK') or head.startswith(b'\x80')):
    raise CheckpointError(
        f'{path!r} is not a PyTorch checkpoint: torch.save writes a zip '
        f'archive, this file starts with {head!r}')
  try:
    return torch.load(path, map_location='cpu', weights_only=True)
  except pickle.UnpicklingError as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ''
    raise CheckpointError(
        f'{path!r} holds pickled objects other than tensors; refusing to '
        f'load it (torch.load weights_only=True: {first})') from None
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f'{path!r} is not a readable PyTorch checkpoint: '
                          f'{type(e).__name__}: {e}'.splitlines()[0]) from None


def _is_array(value) -> bool:
  return hasattr(value, 'shape') and hasattr(value, 'dtype')


def _unwrap(state: Any, path: str) -> Dict[str, Any]:
  if isinstance(state, Mapping) and not all(map(_is_array, state.values())):
    for key in ('state_dict', 'model'):
      if isinstance(state.get(key), Mapping):
        state = state[key]
        break
  if not isinstance(state, Mapping) or not state:
    raise CheckpointError(f'{path!r} holds no state dict (a mapping of '
                          f'names to tensors), but {type(state).__name__}')
  bad = next((k for k, v in state.items() if not _is_array(v)), None)
  if bad is not None:
    raise CheckpointError(f'{path!r}: key {bad!r} holds '
                          f'{type(state[bad]).__name__}, not a tensor')
  if all(k.startswith('module.') for k in state):
    state = {k[len('module.'):]: v for k, v in state.items()}
  return dict(state)


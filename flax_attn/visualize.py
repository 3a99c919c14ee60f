"""Attention maps, class activation maps and channel weights: arrays, then
pictures.

  python -m flax_attn.visualize --config configs/quickstart.py \
      --workdir runs/quickstart --out runs/quickstart/pictures \
      [--num_images 8] [--split test] [--checkpoint STEP] [--query 0.5,0.5]

Restores the workdir's checkpoint (`flax_attn.training.restore_state`, as
eval.py does), runs one batch of images of the eval split (or `--split`)
through `flax_attn.extract_features` and writes, under OUTDIR:

  image{i}.png     the input, the class activation map (CAM) of the
                   predicted class and every spatial attention map the model
                   records, each upsampled to the picture, overlaid with a
                   colour map, with a colour bar in the map's own units;
  grid.png         one figure per model: a row per image, a column per map
                   (the last block of each stage, per kind of map);
  channels.png     bar charts of channel weights (SE, ECA, HGA, CBAM's
                   channel gate, SK's path weights, ...), one per stage;
  maps.txt         what was drawn, how it was reduced, and every attention
                   module with nothing to draw.

The arrays are computed apart from the pictures (`compute_maps` returns a
`Maps`; `heat` and `overlay` are what the pictures show), so they can be
checked, and used in notebooks, without matplotlib.

Which maps:
  * CAM: the FCN head's pre-pooling map (`features['cam']`,
    flax_attn/models/heads.py) where the model has one; for a GAP + linear
    head, Zhou et al. 2016's CAM, M_k(x, y) = sum_c w_{c,k} f_c(x, y), from
    the last stage's features f and the classifier kernel w (no bias; its
    spatial mean plus the bias is the logit). Other heads (MGAN's) have none,
    and maps.txt says so.
  * Spatial maps: every sown value of shape (N, h, w, 1) (CBAM / SA spatial
    gates, MGAN's MSA maps, MLAN's masks, triplet's H-W branch, GC's context
    weights); (N, h, w, C) masks (FMA, SimAM) and triplet's C-W / H-C
    branches, (N, 1, w, C) and (N, h, 1, C), are averaged over channels.
  * Query attention: non-local blocks and CSM's position attention sow no
    map (their HW x HW matrix is never stored); their query and key
    projections are captured and the softmax row of one query position
    (`query`, a fraction of height and width; the centre by default) is
    computed here, for the few images drawn.
  * Channel weights: values of shape (N, 1, 1, C), and SK's (N, paths, C).
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from flax_attn.attention.csm import PositionAttention
from flax_attn.attention.non_local import NonLocalBlock
from flax_attn.errors import ConfigError
from flax_attn.models import extract_features
from flax_attn.registry import ATTENTION

# Features every model returns that are not attention maps.
_MODEL_FEATURES = ('logits', 'stem', 'pre_logits', 'cam', 'head/cam')
_STAGE = re.compile(r'^stage\d+$')
# Modules whose attention is softmax_j(q_i . k_j) over positions, computed by
# dot_product_attention and never stored: (query name, key name, logit scale
# given the module and the query width).
_PAIRWISE = (
    (NonLocalBlock, 'theta', 'phi',
     lambda m, width: width ** -0.5 if m.scale_logits else 1.0),
    (PositionAttention, 'query', 'key', lambda m, width: 1.0),
)
QUERY_SUFFIX = 'query_attention'
DEFAULT_CMAP = 'jet'
DEFAULT_ALPHA = 0.5


@dataclasses.dataclass
class Maps:
  """What a model attends to, for a batch of images, before any drawing.

  Attributes:
    images: (N, H, W, 3) the inputs as pictures, in [0, 1].
    labels: (N,) true classes, or None.
    predictions: (N,) predicted classes.
    confidences: (N,) softmax probability of the predicted class.
    cam: (N, h, w) the class activation map of the predicted class, or None.
    cam_source: how `cam` was computed, or why there is none.
    spatial: map name -> (N, h, w) raw values, in model order.
    channel: weights name -> (N, C).
    queries: query-attention map name -> (row, col, rows, cols) of the query
      position on the grid of the map's queries.
    notes: map name -> how it was reduced to (N, h, w) / (N, C), or why a
      recorded value is not drawn.
    nothing_to_draw: attention modules ('path (name)') with no map.
    attention_modules: module path -> registered attention name.
  """
  images: np.ndarray
  labels: Optional[np.ndarray]
  predictions: np.ndarray
  confidences: np.ndarray
  cam: Optional[np.ndarray]
  cam_source: str
  spatial: Dict[str, np.ndarray]
  channel: Dict[str, np.ndarray]
  queries: Dict[str, Tuple[int, int, int, int]]
  notes: Dict[str, str]
  nothing_to_draw: List[str]
  attention_modules: Dict[str, str]


# ---------------------------------------------------------------------------
# Arrays
# ---------------------------------------------------------------------------


def natural_key(name: str):
  """'stage2_block10' after 'stage2_block9'."""
  return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', name)]


def display_images(images, mean: Sequence[float], std: Sequence[float]
                   ) -> np.ndarray:
  """Normalised model inputs (pixel - mean) / std on the 0-255 scale back to
  RGB pictures in [0, 1]; grey images get three equal channels."""
  x = np.asarray(images, np.float32) * np.asarray(std, np.float32) + np.asarray(
      mean, np.float32)
  x = np.clip(x / 255.0, 0.0, 1.0)
  if x.shape[-1] == 1:
    x = np.repeat(x, 3, axis=-1)
  return x


def upsample(maps, size: Tuple[int, int], method: str = 'linear'
             ) -> np.ndarray:
  """(N, h, w) maps resized to (N, *size); bilinear by default."""
  maps = np.asarray(maps, np.float32)
  shape = (maps.shape[0],) + tuple(size)
  return np.asarray(jax.image.resize(jnp.asarray(maps), shape, method))


def normalise(maps) -> np.ndarray:
  """Per-map min-max scaling to [0, 1]; a constant map becomes zeros."""
  maps = np.asarray(maps, np.float32)
  axes = tuple(range(1, maps.ndim))
  low = maps.min(axis=axes, keepdims=True)
  span = maps.max(axis=axes, keepdims=True) - low
  return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1.0), 0.0
                  ).astype(np.float32)


def heat(maps, size: Tuple[int, int]) -> np.ndarray:
  """What a picture colours: the maps upsampled to `size`, then normalised
  per map to [0, 1] (so the colour bar spans the upsampled map's range)."""
  return normalise(upsample(maps, size))


def colormap(name: str = DEFAULT_CMAP):
  """A matplotlib colour map by name (needs matplotlib)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  return matplotlib.colormaps[name]


def overlay(image, heat_map, cmap=DEFAULT_CMAP, alpha: float = DEFAULT_ALPHA
            ) -> np.ndarray:
  """(H, W, 3) picture: (1 - alpha) image + alpha colour(heat)."""
  cmap = colormap(cmap) if isinstance(cmap, str) else cmap
  colours = np.asarray(cmap(np.asarray(heat_map, np.float32)),
                       np.float32)[..., :3]
  return ((1.0 - alpha) * np.asarray(image, np.float32) + alpha * colours
          ).astype(np.float32)


def _last_stage(features) -> Optional[str]:
  stages = sorted((k for k in features if _STAGE.match(k)), key=natural_key)
  return stages[-1] if stages else None


def class_activation_maps(features: Dict[str, Any], variables
                          ) -> Tuple[Optional[np.ndarray], str]:
  """(N, h, w, classes) class activation maps and how they were made.

  The FCN head's own map where there is one; else Zhou et al.'s CAM from
  the last stage and a GAP + linear head's kernel; else (None, reason).
  """
  if 'cam' in features:
    return (np.asarray(features['cam'], np.float32),
            "the FCN head's map (1x1 conv to the classes, before pooling)")
  head = dict(variables.get('params', {}).get('head', {}))
  last = _last_stage(features)
  kernel = dict(head.get('fc', {})).get('kernel')
  if (set(head) == {'fc'} and last is not None and kernel is not None
      and np.shape(kernel)[0] == np.shape(features[last])[-1]):
    f = np.asarray(features[last], np.float32)
    cam = np.einsum('nhwc,ck->nhwk', f, np.asarray(kernel, np.float32))
    return cam, (f'CAM (Zhou et al. 2016) from {last} and the linear '
                 'classifier, without its bias')
  return None, (f'no CAM: the head ({", ".join(sorted(head)) or "none"}) is '
                'neither GAP + linear nor FCN')


def _registered_name(module) -> Optional[str]:
  exact = None
  for name in ATTENTION.names():
    cls = ATTENTION.get(name)
    if type(module) is cls:  # pylint: disable=unidiomatic-typecheck
      return name
    if exact is None and isinstance(module, cls):
      exact = name
  return exact


class AttentionCapture:
  """A `capture_intermediates` filter that keeps the query / key
  projections of pairwise attention and notes every attention module."""

  def __init__(self):
    self.attention_modules: Dict[str, str] = {}
    self.pairs: Dict[str, Tuple[str, str, Any, Any]] = {}

  def __call__(self, module, method_name: str) -> bool:
    if method_name != '__call__':
      return False
    path = '/'.join(module.path)
    name = _registered_name(module)
    if name is not None:
      self.attention_modules[path] = name
    parent = module.parent
    for cls, query, key, scale in _PAIRWISE:
      if isinstance(parent, cls) and module.name in (query, key):
        self.pairs['/'.join(parent.path)] = (query, key, scale, parent)
        return True
    return False


def query_attention(queries, keys, scale: float,
                    query: Tuple[float, float] = (0.5, 0.5)
                    ) -> Tuple[np.ndarray, Tuple[int, int, int, int]]:
  """softmax_j(scale q_i . k_j) of one query position i, as (N, h, w).

  `queries` (N, H, W, d), `keys` (N, h, w, d); `query` is (row, column) as
  fractions of H and W. Returns the maps and (row, col, H, W).
  """
  q = np.asarray(queries, np.float32)
  k = np.asarray(keys, np.float32)
  rows, cols = q.shape[1:3]
  row = min(rows - 1, max(0, int(query[0] * rows)))
  col = min(cols - 1, max(0, int(query[1] * cols)))
  logits = np.einsum('nd,nhwd->nhw', q[:, row, col], k) * scale
  logits -= logits.max(axis=(1, 2), keepdims=True)
  weights = np.exp(logits)
  weights /= weights.sum(axis=(1, 2), keepdims=True)
  return weights, (row, col, rows, cols)


def compute_maps(model, variables, images, *, labels=None,
                 mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,),
                 query: Tuple[float, float] = (0.5, 0.5)) -> Maps:
  """Every map of `model` on `images` (normalised model inputs), as arrays.

  `mean`, `std`: the dataset's (0-255 scale), to turn the inputs back into
  pictures.
  """
  capture = AttentionCapture()
  features = jax.jit(lambda v, x: extract_features(model, v, x,
                                                   capture=capture))(
                                                       variables, images)
  return maps_from_features(jax.device_get(features), variables, capture,
                            images, labels=labels, mean=mean, std=std,
                            query=query)


def maps_from_features(features: Dict[str, Any], variables,
                       capture: AttentionCapture, images, *, labels=None,
                       mean: Sequence[float] = (0.0,),
                       std: Sequence[float] = (1.0,),
                       query: Tuple[float, float] = (0.5, 0.5)) -> Maps:
  """`compute_maps` after the forward pass: `features` are what
  `extract_features(model, variables, images, capture=capture)` returned."""
  logits = np.asarray(features['logits'], np.float32)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  predictions = logits.argmax(-1)
  rows = np.arange(len(predictions))

  cams, cam_source = class_activation_maps(features, variables)
  cam = None if cams is None else cams[rows, :, :, predictions]

  spatial: Dict[str, np.ndarray] = {}
  channel: Dict[str, np.ndarray] = {}
  queries: Dict[str, Tuple[int, int, int, int]] = {}
  notes: Dict[str, str] = {}
  captured = set()
  for owner, (q_name, k_name, scale_fn, module) in capture.pairs.items():
    q_key, k_key = f'{owner}/{q_name}', f'{owner}/{k_name}'
    captured |= {q_key, k_key}
    if q_key in features and k_key in features:
      q, k = features[q_key], features[k_key]
      name = f'{owner}/{QUERY_SUFFIX}'
      spatial[name], queries[name] = query_attention(
          q, k, scale_fn(module, np.shape(q)[-1]), query)
      notes[name] = (f'softmax over positions of one query '
                     f'({type(module).__name__}; the model stores no map, '
                     'computed here)')

  for key, value in features.items():
    if key in _MODEL_FEATURES or _STAGE.match(key) or key in captured:
      continue
    a = np.asarray(value, np.float32)
    if a.ndim == 4 and a.shape[-1] == 1:
      spatial[key] = a[..., 0]
    elif a.ndim == 4 and a.shape[1] == a.shape[2] == 1:
      channel[key] = a[:, 0, 0, :]
    elif a.ndim == 4:
      spatial[key] = a.mean(axis=-1)
      notes[key] = f'mean over its {a.shape[-1]} channels'
    elif a.ndim == 3:  # SK: (N, paths, C)
      for p in range(a.shape[1]):
        channel[f'{key}[{p}]'] = a[:, p, :]
      notes[key] = f'{a.shape[1]} paths, one chart each'
    else:
      notes[key] = f'shape {a.shape} is not a map; not drawn'

  spatial = {k: spatial[k] for k in sorted(spatial, key=natural_key)}
  channel = {k: channel[k] for k in sorted(channel, key=natural_key)}
  drawn = list(spatial) + list(channel)
  nothing = [f'{path} ({name})'
             for path, name in sorted(capture.attention_modules.items(),
                                      key=lambda kv: natural_key(kv[0]))
             if not any(k.startswith(path + '/') for k in drawn)]
  return Maps(images=display_images(images, mean, std),
              labels=None if labels is None else np.asarray(labels),
              predictions=predictions,
              confidences=probs[rows, predictions], cam=cam,
              cam_source=cam_source, spatial=spatial, channel=channel,
              queries=queries, notes=notes, nothing_to_draw=nothing,
              attention_modules=dict(capture.attention_modules))


def eval_images(config, num_images: int, split: Optional[str] = None
                ) -> Dict[str, np.ndarray]:
  """The first `num_images` images (and labels) of the eval split, or of
  `split` (either of the dataset's splits), as the model sees them."""
  from flax_attn import data as data_lib  # pylint: disable=g-import-not-at-top
  spec = data_lib.get_dataset_spec(config.dataset)
  valid = (spec.eval_split, spec.train_split)
  if split is not None and split not in valid:
    raise ConfigError(f'--split={split!r} is not a split of '
                      f'{config.dataset!r}; valid: {", ".join(valid)}')
  if not isinstance(num_images, int) or num_images < 1:
    raise ConfigError(f'--num_images={num_images!r} must be a positive '
                      'integer')
  batch = next(iter(data_lib.create_eval_iterator(
      config, batch_size=num_images, split=split)))
  keep = np.asarray(batch['mask']) > 0
  # The pipeline yields pixels; the model sees them normalised.
  images = np.asarray(data_lib.prepare_on_device(batch['image'], spec))
  return {'image': images[keep],
          'label': np.asarray(batch['label'])[keep]}


def maps_from_workdir(config, workdir: str, num_images: int = 8,
                      split: Optional[str] = None, step: Optional[int] = None,
                      query: Tuple[float, float] = (0.5, 0.5)) -> Maps:
  """Restores `workdir`'s checkpoint (the latest, or `step`) and computes the
  maps of its model on the first `num_images` eval images."""
  from flax_attn import data as data_lib  # pylint: disable=g-import-not-at-top
  from flax_attn import training  # pylint: disable=g-import-not-at-top
  batch = eval_images(config, num_images, split)
  exp, state, _ = training.restore_state(config, workdir, step)
  variables = jax.device_get(state.eval_variables(config.ema_decay > 0))
  spec = data_lib.get_dataset_spec(config.dataset)
  return compute_maps(exp.model, variables, batch['image'],
                      labels=batch['label'], mean=spec.mean, std=spec.std,
                      query=query)


# ---------------------------------------------------------------------------
# Pictures (matplotlib, object-oriented API: no pyplot, no global backend)
# ---------------------------------------------------------------------------


def display_size(maps: Maps, minimum: int = 96) -> Tuple[int, int]:
  """Pictures are drawn at least `minimum` pixels high (8x8 digits too)."""
  h, w = maps.images.shape[1:3]
  factor = max(1, -(-minimum // max(h, 1)))
  return h * factor, w * factor


def picture(maps: Maps, index: int, size: Tuple[int, int]) -> np.ndarray:
  """Image `index` at `size` (nearest neighbour: pixels stay pixels)."""
  img = maps.images[index]
  rows = (np.arange(size[0]) * img.shape[0]) // size[0]
  cols = (np.arange(size[1]) * img.shape[1]) // size[1]
  return img[rows][:, cols]


def panels(maps: Maps) -> List[Tuple[str, np.ndarray]]:
  """(title, (N, h, w) raw maps) in drawing order: CAM, then spatial maps."""
  out = []
  if maps.cam is not None:
    out.append(('CAM (predicted class)', maps.cam))
  out.extend(maps.spatial.items())
  return out


def _short(name: str, width: int = 34) -> str:
  """A panel title: the module on one line, the map on the next."""
  name = name.replace('/attn/', '/').replace('/features/', '/')
  first, _, rest = name.partition('/')
  lines = [first, rest] if rest else [first]
  return '\n'.join(l if len(l) <= width else '...' + l[-(width - 3):]
                   for l in lines)


def _caption(maps: Maps, i: int) -> str:
  text = f'pred {maps.predictions[i]} ({maps.confidences[i]:.2f})'
  if maps.labels is not None:
    text = f'label {maps.labels[i]}, ' + text
  return text


def _new_figure(width: float, height: float):
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(width, height), dpi=100)
  backend_agg.FigureCanvasAgg(fig)
  return fig


def _draw_overlay(fig, ax, maps: Maps, name: str, raw, i: int, size,
                  cmap, alpha: float, colorbar: bool = True):
  """One panel: image i with `raw` (N, h, w) overlaid; returns the heat."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  up = upsample(raw[i:i + 1], size)[0]
  hot = normalise(up[None])[0]
  ax.imshow(overlay(picture(maps, i, size), hot, cmap, alpha),
            interpolation='nearest')
  if name in maps.queries:
    row, col, rows, cols = maps.queries[name]
    ax.plot([(col + 0.5) * size[1] / cols - 0.5],
            [(row + 0.5) * size[0] / rows - 0.5], marker='x', color='white',
            markersize=8, mew=2)
  ax.set_xticks([])
  ax.set_yticks([])
  if colorbar:
    mappable = matplotlib.cm.ScalarMappable(
        norm=matplotlib.colors.Normalize(float(up.min()), float(up.max())),
        cmap=colormap(cmap) if isinstance(cmap, str) else cmap)
    fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.04)
  return hot


def image_figure(maps: Maps, index: int, cmap=DEFAULT_CMAP,
                 alpha: float = DEFAULT_ALPHA, columns: int = 5):
  """Image `index`: the input, the CAM and every spatial map, each with a
  colour bar in the map's units."""
  size = display_size(maps)
  items = panels(maps)
  n = 1 + len(items)
  cols = min(columns, n)
  rows = -(-n // cols)
  fig = _new_figure(3.0 * cols, 2.8 * rows + 0.4)
  axes = [fig.add_subplot(rows, cols, k + 1) for k in range(n)]
  axes[0].imshow(picture(maps, index, size), interpolation='nearest')
  axes[0].set_title('input: ' + _caption(maps, index), fontsize=8)
  axes[0].set_xticks([])
  axes[0].set_yticks([])
  for ax, (name, raw) in zip(axes[1:], items):
    _draw_overlay(fig, ax, maps, name, raw, index, size, cmap, alpha)
    ax.set_title(_short(name), fontsize=8)
  if maps.nothing_to_draw:
    fig.text(0.01, 0.005, 'nothing to draw: ' + ', '.join(
        maps.nothing_to_draw)[:200], fontsize=7)
  fig.tight_layout(rect=(0, 0.02, 1, 1))
  return fig


def grid_columns(maps: Maps, max_columns: int = 10) -> List[str]:
  """The spatial maps a grid shows: per stage and kind of map, the last
  block's (all of them when there are few)."""
  names = list(maps.spatial)
  if len(names) <= max_columns:
    return names
  chosen: Dict[Tuple[str, str], str] = {}
  for name in names:
    first, _, rest = name.partition('/')
    m = re.match(r'^(stage\d+)_block\d+$', first)
    group = (m.group(1), rest) if m else (first, rest)
    chosen[group] = name  # natural order: the last block wins
  return sorted(chosen.values(), key=natural_key)[:max_columns]


def grid_figure(maps: Maps, title: str = '', cmap=DEFAULT_CMAP,
                alpha: float = DEFAULT_ALPHA, max_columns: int = 10):
  """A row per image: input, CAM, spatial maps (see `grid_columns`)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  size = display_size(maps)
  names = grid_columns(maps, max_columns)
  items = ([('CAM', maps.cam)] if maps.cam is not None else []) + [
      (n, maps.spatial[n]) for n in names]
  n_img = len(maps.images)
  cols = 1 + len(items)
  fig = _new_figure(1.6 * cols + 0.8, 1.6 * n_img + 0.9)
  for i in range(n_img):
    ax = fig.add_subplot(n_img, cols, i * cols + 1)
    ax.imshow(picture(maps, i, size), interpolation='nearest')
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_ylabel(_caption(maps, i), fontsize=6)
    if i == 0:
      ax.set_title('input', fontsize=7)
    for j, (name, raw) in enumerate(items):
      ax = fig.add_subplot(n_img, cols, i * cols + j + 2)
      _draw_overlay(fig, ax, maps, name, raw, i, size, cmap, alpha,
                    colorbar=False)
      if i == 0:
        ax.set_title(_short(name, 22), fontsize=6)
  mappable = matplotlib.cm.ScalarMappable(
      norm=matplotlib.colors.Normalize(0.0, 1.0),
      cmap=colormap(cmap) if isinstance(cmap, str) else cmap)
  fig.colorbar(mappable, ax=fig.axes, fraction=0.02, pad=0.01,
               label='each map scaled to its own min..max')
  footer = []
  if maps.cam is None:
    footer.append(maps.cam_source)
  if len(names) < len(maps.spatial):
    footer.append(f'{len(maps.spatial) - len(names)} more maps in image*.png')
  if maps.nothing_to_draw:
    footer.append('nothing to draw: ' + ', '.join(maps.nothing_to_draw))
  if not maps.spatial and maps.cam is None:
    footer.append('no spatial map recorded')
  fig.suptitle(title, fontsize=9)
  if footer:
    fig.text(0.01, 0.003, '; '.join(footer)[:220], fontsize=6)
  return fig


def channel_groups(maps: Maps) -> Dict[str, List[str]]:
  """Channel-weight names grouped by stage ('stage2', 'head', ...)."""
  groups: Dict[str, List[str]] = {}
  for name in maps.channel:
    first = name.split('/')[0]
    m = re.match(r'^(stage\d+)', first)
    groups.setdefault(m.group(1) if m else first, []).append(name)
  return groups


def channel_figure(maps: Maps, title: str = ''):
  """Bar charts of channel weights, one panel per stage: for each of the
  stage's kinds of weights, the last block's, mean over the images (the
  whiskers span the images' minimum to maximum)."""
  groups = channel_groups(maps)
  panels_: List[Tuple[str, str]] = []
  for stage, names in groups.items():
    last: Dict[str, str] = {}
    for name in names:
      kind = re.sub(r'^stage\d+_block\d+', '', name)
      last[kind] = name
    panels_.extend((stage, n) for n in last.values())
  fig = _new_figure(7.0, 1.9 * max(1, len(panels_)) + 0.4)
  for k, (_, name) in enumerate(panels_):
    ax = fig.add_subplot(len(panels_), 1, k + 1)
    w = maps.channel[name]
    mean = w.mean(axis=0)
    err = np.stack([mean - w.min(axis=0), w.max(axis=0) - mean])
    ax.bar(np.arange(len(mean)), mean, yerr=err, color='tab:blue',
           ecolor='0.5', width=0.8)
    ax.set_xlim(-0.6, len(mean) - 0.4)
    ax.set_ylabel('weight', fontsize=7)
    ax.set_title(f'{name}: {len(mean)} channels', fontsize=8)
    ax.tick_params(labelsize=6)
  if panels_:
    fig.axes[-1].set_xlabel('channel', fontsize=7)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  return fig


def describe(maps: Maps) -> List[str]:
  """maps.txt: what was drawn and what was not."""
  lines = [f'images: {len(maps.images)}', f'CAM: {maps.cam_source}']
  modules = sorted(set(maps.attention_modules.values()))
  lines.append('attention modules: ' + (', '.join(
      f'{n} x{list(maps.attention_modules.values()).count(n)}'
      for n in modules) or 'none'))
  for name, value in maps.spatial.items():
    extra = f' ({maps.notes[name]})' if name in maps.notes else ''
    lines.append(f'spatial {name} {value.shape[1]}x{value.shape[2]}{extra}')
  for name, value in maps.channel.items():
    lines.append(f'channel {name} {value.shape[1]} channels')
  for name, note in maps.notes.items():
    if name not in maps.spatial and name not in maps.channel:
      lines.append(f'note {name}: {note}')
  for name in maps.nothing_to_draw:
    lines.append(f'nothing to draw: {name}')
  if not maps.attention_modules and not maps.spatial and not maps.channel:
    lines.append('nothing to draw: the model records no attention map')
  return lines


def write_pictures(maps: Maps, out_dir: str, title: str = '',
                   cmap=DEFAULT_CMAP, alpha: float = DEFAULT_ALPHA
                   ) -> List[str]:
  """image{i}.png, grid.png, channels.png (if any) and maps.txt in
  `out_dir`; returns their paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = []

  def save(fig, name):
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=100)
    paths.append(path)

  for i in range(len(maps.images)):
    save(image_figure(maps, i, cmap, alpha), f'image{i}.png')
  save(grid_figure(maps, title, cmap, alpha), 'grid.png')
  if maps.channel:
    save(channel_figure(maps, title), 'channels.png')
  path = os.path.join(out_dir, 'maps.txt')
  with open(path, 'w') as f:
    f.write('\n'.join(([title] if title else []) + describe(maps)) + '\n')
  paths.append(path)
  return paths


def visualize(config, workdir: str, out_dir: str, num_images: int = 8,
              split: Optional[str] = None, step: Optional[int] = None,
              query: Tuple[float, float] = (0.5, 0.5), cmap=DEFAULT_CMAP
              ) -> Tuple[Maps, List[str]]:
  """`maps_from_workdir` then `write_pictures`; returns both results."""
  maps = maps_from_workdir(config, workdir, num_images, split, step, query)
  title = f'{config.model} attn={config.attn} ({workdir})'
  return maps, write_pictures(maps, out_dir, title, cmap)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def _parse_query(text: str) -> Tuple[float, float]:
  try:
    row, col = (float(v) for v in text.split(','))
  except ValueError:
    row = col = -1.0
  if not (0.0 <= row <= 1.0 and 0.0 <= col <= 1.0):
    raise ConfigError(f'--query={text!r} must be ROW,COL, fractions of the '
                      'map in [0, 1], e.g. 0.5,0.5')
  return row, col


def main(argv=None) -> int:
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from flax_attn import cli  # pylint: disable=g-import-not-at-top
  cli.define_flags()
  flags.DEFINE_string('out', None, 'Folder for the PNGs (created).')
  flags.DEFINE_integer('num_images', 8, 'Eval images to draw.')
  flags.DEFINE_string('split', None, "Split to draw from (the dataset's eval "
                      'split by default).')
  flags.DEFINE_integer('checkpoint', None, 'Step to restore (default latest).')
  flags.DEFINE_string('query', '0.5,0.5', 'Query position of non-local / CSM '
                      'attention maps: ROW,COL as fractions.')
  flags.DEFINE_string('cmap', DEFAULT_CMAP, 'matplotlib colour map.')
  flags.mark_flag_as_required('out')

  def run(argv_):
    if len(argv_) > 1:
      raise app.UsageError(f'unexpected arguments: {" ".join(argv_[1:])}')
    config = cli.FLAGS.config

    def body():
      cli.start_jax(config, cli.FLAGS.multihost)
      query = _parse_query(cli.FLAGS.query)
      maps, paths = visualize(config, cli.FLAGS.workdir, cli.FLAGS.out,
                              cli.FLAGS.num_images, cli.FLAGS.split,
                              cli.FLAGS.checkpoint, query, cli.FLAGS.cmap)
      for line in describe(maps):
        if line.startswith(('CAM', 'nothing', 'attention')):
          print(line)
      print(f'wrote {len(paths)} files to {cli.FLAGS.out}')
      return 0

    sys.exit(cli.run_main(body))

  app.run(run, argv=argv, flags_parser=cli.parse_flags)
  return 0


if __name__ == '__main__':
  from flax_attn import runtime  # pylint: disable=g-import-not-at-top
  runtime.before_imports()  # the package is imported: re-execs only
  main()

"""VGG-16 (MGAN Table 5's comparator), torchvision's layout; the backbone is
flax_attn/models/vgg.py.

  vgg16, vgg16_bn               torchvision's models (224 x 224 ImageNet)
  vgg16_cifar, vgg16_bn_cifar   the same 13 convs, GAP + 512 -> classes

Any attention plugs in by name, e.g.
`create_model('vgg16_bn_cifar', 10, attn='se')` (after every conv stage) or
`create_model('vgg16_bn_cifar', 10, stage_attn='mgan',
stage_attn_after=(1, 2, 3))` (MGAN's multi-grained attention).
"""
import functools

from flax_attn.models.vgg import VGGHead, vgg16_kwargs
from flax_attn.registry import register_model



def _vgg16(batch_norm: bool, cifar: bool):
  def build(hidden: int = 4096):
    """hidden: width of the ImageNet classifier's two hidden layers."""
    kw = vgg16_kwargs(batch_norm=batch_norm, cifar=cifar)
    if not cifar and hidden != 4096:
      kw['head'] = functools.partial(VGGHead, hidden=hidden)
    return kw
  return build


for _bn in (False, True):
  register_model('vgg16' + ('_bn' if _bn else ''))(_vgg16(_bn, cifar=False))
  register_model('vgg16' + ('_bn' if _bn else '') + '_cifar')(
      lambda _bn=_bn: vgg16_kwargs(batch_norm=_bn, cifar=True))

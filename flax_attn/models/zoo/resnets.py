"""The plain backbones: torchvision's ResNets, ResNeXts and wide ResNets,
Res2Nets (Gao et al. 2021), the CIFAR ResNets (He et al. 2016 Sec. 4.2) and
WRN-28-10 (Zagoruyko & Komodakis 2016)."""
from flax_attn.models.builders import cifar_resnet, imagenet_resnet, res2net
from flax_attn.registry import MODELS, register_model

for _d in (18, 34, 50, 101, 152):
  register_model(f'resnet{_d}')(lambda _d=_d: imagenet_resnet(_d))
register_model('resnet26')(lambda: imagenet_resnet(26))

for _d, _g, _w in ((50, 32, 4), (101, 32, 4), (101, 32, 8), (101, 64, 4)):
  register_model(f'resnext{_d}_{_g}x{_w}d')(
      lambda _d=_d, _g=_g, _w=_w: imagenet_resnet(
          _d, block_kwargs=dict(groups=_g, base_width=_w)))

for _d in (50, 101):
  register_model(f'wide_resnet{_d}_2')(
      lambda _d=_d: imagenet_resnet(_d, block_kwargs=dict(base_width=128)))

for _d in (50, 101):
  register_model(f'res2net{_d}_26w_4s')(
      lambda base_width=26, scale=4, _d=_d: res2net(_d, base_width, scale))
for _w, _s in ((26, 6), (26, 8), (48, 2), (14, 8)):
  register_model(f'res2net50_{_w}w_{_s}s')(
      lambda base_width=_w, scale=_s: res2net(50, base_width, scale))
for _d in (18, 34):
  register_model(f'res2net{_d}')(lambda scale=4, _d=_d: res2net(_d, scale=scale))

# CIFAR ResNets (He 2016): resnet26 is timm's ImageNet model, so every CIFAR
# depth is also registered as cifar_resnetN and 26 only under that name.
_CIFAR_BASIC = (8, 14, 20, 26, 32, 44, 56, 110, 1202)
for _d in _CIFAR_BASIC:
  _fn = (lambda width=16, shortcut='A', _d=_d:
         cifar_resnet(_d, width=width, shortcut=shortcut))
  register_model(f'cifar_resnet{_d}')(_fn)
  if f'resnet{_d}' not in MODELS:
    register_model(f'resnet{_d}')(_fn)
for _name in ('resnet164', 'cifar_resnet164'):
  register_model(_name)(lambda width=16, shortcut='B': cifar_resnet(
      164, width=width, block='bottleneck', shortcut=shortcut))


@register_model('wrn28_10')
def wrn28_10(widen_factor: float = 10.0):
  """WRN-28-10 (Zagoruyko & Komodakis 2016) layout: 3 stages of 4 basic
  blocks, widths 16k/32k/64k, projection shortcuts. Post-activation blocks
  (this library's BasicBlock), so attention sits where it does in every
  other backbone; the original WRN is pre-activation with dropout."""
  # WRN depth counts 6n + 4 layers (n = 4 for 28), not the 6n + 2 of He 2016.
  kw = cifar_resnet(26, width=16, shortcut='B')
  kw['widen_factor'] = widen_factor
  return kw

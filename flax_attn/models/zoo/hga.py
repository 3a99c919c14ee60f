"""HGA networks (Cao et al. 2020): HGA(c, 32, c) in every block.

ImageNet models follow Table 1 / Table 2 (ResNet-50/101/152, ResNeXt-50/101
32x4d); CIFAR models follow Table 4 (He et al.'s ResNet-110 with basic blocks
and ResNet-164 with bottlenecks). The attention is `attn='hga'`; its Table 5/6
switches are `attn_kwargs`, e.g.
`create_model('hga_resnet101', attn_kwargs=dict(kernel_sizes=(7,)))`.
Fig. 2d's Inception placement: `hga_inception_tiny` (and `inception_tiny`
without HGA), a small CIFAR-sized example.
"""
from flax_attn.models.builders import cifar_resnet, imagenet_resnet
from flax_attn.registry import register_model

for _depth in (50, 101, 152):
  register_model(f'hga_resnet{_depth}')(
      lambda _depth=_depth: imagenet_resnet(_depth, attn='hga'))

for _depth in (50, 101):
  register_model(f'hga_resnext{_depth}_32x4d')(
      lambda _depth=_depth: imagenet_resnet(
          _depth, attn='hga', block_kwargs=dict(groups=32, base_width=4)))


@register_model('hga_resnet110')
def hga_resnet110(width: int = 16, shortcut: str = 'A'):
  """CIFAR ResNet-110 (18 basic blocks per stage) with HGA (Table 4)."""
  return cifar_resnet(110, width=width, shortcut=shortcut, attn='hga')


@register_model('hga_resnet164')
def hga_resnet164(width: int = 16, shortcut: str = 'B'):
  """CIFAR ResNet-164 (18 bottlenecks per stage) with HGA (Table 4)."""
  return cifar_resnet(164, width=width, block='bottleneck',
                      shortcut=shortcut, attn='hga')


# Fig. 2c / 2d: the Inception-style placement, a small example network
# (flax_attn/models/inception.py): HGA after each block's concatenation.
from flax_attn.models.inception import inception_tiny_kwargs  # noqa: E402

register_model('inception_tiny')(lambda: inception_tiny_kwargs())
register_model('hga_inception_tiny')(
    lambda: inception_tiny_kwargs(attn='hga'))

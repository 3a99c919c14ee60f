"""SE, CBAM and ECA on the ImageNet ResNets: timm's names where timm has them."""
from flax_attn.models.builders import imagenet_resnet
from flax_attn.registry import register_model

_ATTN_BACKBONES = {
    'se': 'seresnet',
    'cbam': 'cbam_resnet',
    'eca': 'eca_resnet',
}
for _attn, _prefix in _ATTN_BACKBONES.items():
  for _depth in (18, 34, 50, 101, 152):
    register_model(f'{_prefix}{_depth}')(
        lambda _depth=_depth, _attn=_attn: imagenet_resnet(_depth, attn=_attn))

register_model('seresnext50_32x4d')(lambda: imagenet_resnet(
    50, attn='se', block_kwargs=dict(groups=32, base_width=4)))

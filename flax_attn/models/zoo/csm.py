"""CSM networks (Yang, Zhang, Yang): CSM in every residual block.

Tables II and III: ResNet-18/34/50 and WideResNet-18 (widen 1.5: the
ResNet-18 layout with stage widths 96/192/384/768, stem 64). Where position
attention runs is an attention option, e.g.
`create_model('csm_resnet50', attn_kwargs=dict(position_stages=(3, 4)))`;
by default every block gets it. CAM / SAM / spatial-first (Table I,
Sec. III-B) are `attn_kwargs=dict(mode=...)`. For 32 x 32 images pass
`stem='small'`.
"""
from flax_attn.models.builders import imagenet_resnet
from flax_attn.registry import register_model

for _depth in (18, 34, 50):
  register_model(f'csm_resnet{_depth}')(
      lambda _depth=_depth: imagenet_resnet(_depth, attn='csm'))


@register_model('csm_wrn18')
def csm_wrn18(widen_factor: float = 1.5):
  """WideResNet-18 (widen 1.5) with CSM; the baseline is
  `create_model('resnet18', widen_factor=1.5)`."""
  return imagenet_resnet(18, attn='csm', widen_factor=widen_factor)

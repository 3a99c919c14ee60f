"""CSM ablations on ResNet-50, ImageNet (Yang, Zhang, Yang, Table I and
Sec. III-B).

  python train.py --config configs/csm_resnet50_ablation.py:cam --workdir DIR

Variants (`VARIANTS`): cam (channel attention only), sam (position attention
only), csm (channel first, = configs/csm_resnet50_imagenet.py), spatial_first
(the order ablation). Baseline: `--config.attn=none`. Recipe and position
stages as configs/csm_resnet50_imagenet.py.
"""
from configs import csm_resnet50_imagenet

VARIANTS = {
    'cam': 'channel_only',
    'sam': 'spatial_only',
    'csm': 'channel_first',
    'spatial_first': 'spatial_first',
}


def get_config(variant: str = 'cam'):
  if variant not in VARIANTS:
    raise ValueError(f'unknown CSM ablation {variant!r}; valid: '
                     f'{", ".join(VARIANTS)}')
  config = csm_resnet50_imagenet.get_config()
  config.attn_kwargs.mode = VARIANTS[variant]
  return config

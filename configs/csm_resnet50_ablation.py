"""CSM ablations on ResNet-50, ImageNet (Yang, Zhang, Yang, Table I and
Sec. III-B).

  python train.py --config configs/csm_resnet50_ablation.py:cam --workdir DIR

Variants (`VARIANTS`): cam (channel attention only), sam (position attention
only), csm (channel first, = configs/csm_resnet50_imagenet.py), spatial_first
(the order ablation). Baseline: `--config.attn=none`. Recipe and position
stages as configs/csm_resnet50_imagenet.py.

Published figures (generated from flax_attn/tables/papers.py:
`python -m flax_attn.tables docstrings --write`; row: top-1 % or err %, M, G):
  csm_table1 (Table I):
    resnet50 err 24.55%; sam err 23.47%; cam err 23.21%; csm err 22.78%
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

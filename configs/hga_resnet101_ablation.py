"""HGA ablations on ResNet-101, ImageNet (Cao et al. 2020, Tables 5 and 6).

One variant per run, named after the colon:

  python train.py --config configs/hga_resnet101_ablation.py:no_mfe --workdir DIR

Variants (`VARIANTS`; the full model is configs/hga_resnet50.py with
`--config.model=hga_resnet101`):
  Table 5: no_mfe, no_hap, no_ee, mfe_only, hap_only, ee_only
           (all three off is the vanilla row: `--config.attn=none`).
  Table 6: kernels_1, kernels_3, kernels_5, kernels_7 (one MFE branch).
ResNeXt-101 columns: add `--config.model=hga_resnext101_32x4d`.
Recipe as configs/hga_resnet50.py.

Published figures (generated from flax_attn/tables/papers.py:
`python -m flax_attn.tables docstrings --write`; row: top-1 % or err %, M, G):
  hga_table5 (Table 5):
    no_mfe_resnet101 err 21.91% top-5 err 5.73%
    no_hap_resnet101 err 21.58% top-5 err 5.63%
    no_ee_resnet101 err 21.63% top-5 err 5.69%
    mfe_only_resnet101 err 21.85% top-5 err 5.69%
    hap_only_resnet101 err 22.4% top-5 err 6.2%
    ee_only_resnet101 err 22% top-5 err 5.75%
    no_mfe_resnext101_32x4d err 20.22% top-5 err 4.81%
    no_hap_resnext101_32x4d err 19.92% top-5 err 4.62%
    no_ee_resnext101_32x4d err 20.01% top-5 err 4.69%
    mfe_only_resnext101_32x4d err 20.03% top-5 err 4.63%
    hap_only_resnext101_32x4d err 20.48% top-5 err 5.09%
    ee_only_resnext101_32x4d err 20.34% top-5 err 4.88%
  hga_table6 (Table 6):
    kernels_1_resnet101 err 21.88% top-5 err 5.72%
    kernels_3_resnet101 err 21.76% top-5 err 5.69%
    kernels_5_resnet101 err 21.7% top-5 err 5.67%
    kernels_7_resnet101 err 21.67% top-5 err 5.66%
    kernels_1_resnext101_32x4d err 20.19% top-5 err 4.79%
    kernels_3_resnext101_32x4d err 20.11% top-5 err 4.71%
    kernels_5_resnext101_32x4d err 20.08% top-5 err 4.69%
    kernels_7_resnext101_32x4d err 20.01% top-5 err 4.66%
"""
from configs import hga_resnet50

VARIANTS = {
    'no_mfe': dict(use_mfe=False),
    'no_hap': dict(use_hap=False),
    'no_ee': dict(use_ee=False),
    'mfe_only': dict(use_hap=False, use_ee=False),
    'hap_only': dict(use_mfe=False, use_ee=False),
    'ee_only': dict(use_mfe=False, use_hap=False),
    'kernels_1': dict(kernel_sizes=(1,)),
    'kernels_3': dict(kernel_sizes=(3,)),
    'kernels_5': dict(kernel_sizes=(5,)),
    'kernels_7': dict(kernel_sizes=(7,)),
}


def get_config(variant: str = 'no_mfe'):
  if variant not in VARIANTS:
    raise ValueError(f'unknown HGA ablation {variant!r}; valid: '
                     f'{", ".join(VARIANTS)}')
  config = hga_resnet50.get_config()
  config.model = 'hga_resnet101'
  config.attn_kwargs = VARIANTS[variant]  # options of attention 'hga'
  return config

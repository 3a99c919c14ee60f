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

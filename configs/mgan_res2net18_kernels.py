"""MGAN kernel-set ablation, Res2Net18 (Wu & Tanprasert 2023, Table 4).

  python train.py --config configs/mgan_res2net18_kernels.py:s_para1 --workdir DIR

Variants (`VARIANTS`): s_para1 K=(3,3,3), s_para2 (5,5,5), s_para3 (7,7,7),
s_para4 (3,5,7) (the default): K1, K2, K3 of every MA module. With the
suffix `_per_stage` (e.g. `s_para1_per_stage`), Table 1's other reading:
K1, K2, K3 are the one kernel of the modules after conv2_x, conv3_x,
conv4_x (reading 'branch_per_stage'). CIFAR-10 by default; CIFAR-100 with
`--config.dataset=cifar100`; Mini-ImageNet with `--config.dataset=mini_imagenet
--config.image_size=84 --config.model_kwargs.stem=imagenet
--config.augment.crop_padding=8`. Recipe as configs/mgan_resnet18_cifar10.py.

Published figures (generated from flax_attn/tables/papers.py:
`python -m flax_attn.tables docstrings --write`; row: top-1 % or err %, M, G):
  mgan_table4 (Table 4):
    s_para1_c10 96.9%; s_para2_c10 96.5%; s_para3_c10 96.2%; s_para4_c10 97.5%
    s_para1_c100 81.5%; s_para2_c100 79.5%; s_para3_c100 78.5%
    s_para4_c100 82.5%; s_para1_mini 75.5%; s_para2_mini 78.2%
    s_para3_mini 79%; s_para4_mini 79.2%
  mgan_table5 (Table 5):
    mgan_res2net18_c10 97.5% 28.2M; mgan_res2net18_c100 82.5% 28.2M
    mgan_res2net18_mini 79.2% 28.2M
"""
from configs import mgan_resnet18_cifar10

VARIANTS = {
    's_para1': (3, 3, 3),
    's_para2': (5, 5, 5),
    's_para3': (7, 7, 7),
    's_para4': (3, 5, 7),
}


PER_STAGE = '_per_stage'


def get_config(variant: str = 's_para4'):
  kernel_set = variant[:-len(PER_STAGE)] if variant.endswith(
      PER_STAGE) else variant
  if kernel_set not in VARIANTS:
    raise ValueError(f'unknown MGAN kernel set {variant!r}; valid: '
                     f'{", ".join(VARIANTS)}, each optionally + {PER_STAGE}')
  config = mgan_resnet18_cifar10.get_config()
  config.model = 'mgan_res2net18'
  kernels = VARIANTS[kernel_set]
  if kernel_set == variant:
    config.model_kwargs.stage_attn_kwargs = dict(kernel_sizes=kernels)
  else:
    config.model_kwargs.reading = 'branch_per_stage'
    config.model_kwargs.stage_attn_per_stage = tuple(
        {'kernel_sizes': (k,)} for k in kernels)
  return config

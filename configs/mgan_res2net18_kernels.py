"""MGAN kernel-set ablation, Res2Net18 (Wu & Tanprasert 2023, Table 4).

  python train.py --config configs/mgan_res2net18_kernels.py:s_para1 --workdir DIR

Variants (`VARIANTS`): s_para1 K=(3,3,3), s_para2 (5,5,5), s_para3 (7,7,7),
s_para4 (3,5,7) (the default). CIFAR-10 by default; CIFAR-100 with
`--config.dataset=cifar100`; Mini-ImageNet with `--config.dataset=mini_imagenet
--config.image_size=84 --config.model_kwargs.stem=imagenet
--config.augment.crop_padding=8`. Recipe as configs/mgan_resnet18_cifar10.py.
"""
from configs import mgan_resnet18_cifar10

VARIANTS = {
    's_para1': (3, 3, 3),
    's_para2': (5, 5, 5),
    's_para3': (7, 7, 7),
    's_para4': (3, 5, 7),
}


def get_config(variant: str = 's_para4'):
  if variant not in VARIANTS:
    raise ValueError(f'unknown MGAN kernel set {variant!r}; valid: '
                     f'{", ".join(VARIANTS)}')
  config = mgan_resnet18_cifar10.get_config()
  config.model = 'mgan_res2net18'
  config.model_kwargs.stage_attn_kwargs = dict(kernel_sizes=VARIANTS[variant])
  return config

"""MGAN-Res2Net50 on Mini-ImageNet (Wu & Tanprasert 2023, Table 3).

  python train.py --config configs/mgan_res2net50_mini_imagenet.py --workdir DIR

Mini-ImageNet: 100 classes x 600 images, 84 x 84 (needs the project's
builder from manually downloaded files). Recipe of Sec. 4.1 as
configs/mgan_resnet18_cifar10.py; the 7 x 7 stem (images larger than
32 x 32). Flip and pad-8 crop (about a tenth of the side, like CIFAR's 4 of
32) are this config's choices; the paper states no augmentation.

Published figures (generated from flax_attn/tables/papers.py:
`python -m flax_attn.tables docstrings --write`; row: top-1 % or err %, M, G):
  mgan_table3 (Table 3):
    res2net50 77.99% top-5 92.87% 25.56M
    eca_resnet50 77.48% top-5 93.68% 25.56M
    mgan_res2net50 82.4% top-5 94.85% 28.6M
"""
from configs import mgan_resnet18_cifar10


def get_config():
  config = mgan_resnet18_cifar10.get_config()
  config.model = 'mgan_res2net50'  # res2net50_26w_4s + MA after stages 1-3
  config.model_kwargs.stem = 'imagenet'  # 7x7/2 conv + max-pool (Sec. 4.1)
  config.dataset = 'mini_imagenet'
  config.image_size = 84
  config.augment.crop_padding = 8
  return config

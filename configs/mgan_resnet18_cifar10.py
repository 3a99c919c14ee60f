"""MGAN-ResNet18 on CIFAR-10 (Wu & Tanprasert 2023, Table 2).

  python train.py --config configs/mgan_resnet18_cifar10.py --workdir DIR

Recipe (Sec. 4.1): SGD, batch 64, lr 0.01 divided by 10 every 50 epochs,
weight decay 1e-4, 100 epochs; MSA kernels K = (3, 5, 7); the 3 x 3 stem for
32 x 32 images. Momentum (not stated) 0.9; pad-4 crop and flip (not stated).
CIFAR-100: `--config.dataset=cifar100`. The paper's classifier head
(Alg. 3 steps 9-12): `--config.head=mgan`. Other readings of Alg. 2/3 and
Table 1 (models/zoo/mgan.py `MGAN_READINGS`):
`--config.model_kwargs.reading=branch_per_stage` (one kernel per stage,
closest to Tables 2, 3, 5's parameters) or `input` (Alg. 3 step 4 literally).

Published figures (generated from flax_attn/tables/papers.py:
`python -m flax_attn.tables docstrings --write`; row: top-1 % or err %, M, G):
  mgan_table2 (Table 2):
    resnet18_c10 91.5% top-5 93.5% 11.69M
    seresnet18_c10 92.42% top-5 95.2% 11.78M
    cbam_resnet18_c10 92.19% top-5 94.9% 11.78M
    simam_resnet18_c10 92.73% top-5 95.5% 11.69M
    mgan_resnet18_c10 96.5% top-5 99.9% 11.7M
    resnet18_c100 66% top-5 70.05% 11.69M
    seresnet18_c100 68.7% top-5 71.2% 11.78M
    cbam_resnet18_c100 68.76% top-5 72.16% 11.78M
    simam_resnet18_c100 69.57% top-5 74.25% 11.69M
    mgan_resnet18_c100 76.55% top-5 80.1% 11.7M
    resnet18_mini 62.4% top-5 65.82% 11.69M
    seresnet18_mini 63.59% top-5 68.32% 11.78M
    cbam_resnet18_mini 64.83% top-5 67.45% 11.78M
    simam_resnet18_mini 66.31% top-5 71.25% 11.69M
    mgan_resnet18_mini 72.26% top-5 78.3% 11.7M
  mgan_table5 (Table 5):
    vgg16_c10 93.5% 138M; res2net18_c10 95.5% 23.2M; wrn28_10_c10 96.11% 36.5M
    vgg16_c100 72.95% 138M; res2net18_c100 75.6% 23.2M
    wrn28_10_c100 79.5% 36.5M; vgg16_mini 72.4% 138M
    res2net18_mini 74.54% 23.2M; wrn28_10_mini 75.5% 36.5M
"""
from configs import default


def get_config():
  config = default.get_config()
  config.model = 'mgan_resnet18'   # MA after conv2_x, conv3_x, conv4_x
  config.model_kwargs.stem = 'small'  # 3x3 stem for 32x32 images (Sec. 4.1)
  config.model_kwargs.reading = 'branch'  # MGAN_READINGS; SPEC's round 1
  config.dataset = 'cifar10'
  config.image_size = 32
  config.augment.crop_padding = 4
  config.augment.flip = True
  config.batch_size = 64
  config.num_epochs = 100
  config.learning_rate = 0.01
  config.momentum = 0.9
  config.weight_decay = 1e-4
  config.lr_schedule = 'multistep'
  config.lr_boundaries_epochs = (50,)  # /10 every 50 epochs of 100
  config.lr_decay_factor = 0.1
  return config

"""MGAN-ResNet18 on CIFAR-10 (Wu & Tanprasert 2023, seed 000, Table 2).

  python train.py --config configs/mgan_resnet18_cifar10.py --workdir DIR

Recipe (Sec. 4.1): SGD, batch 64, lr 0.01 divided by 10 every 50 epochs,
weight decay 1e-4, 100 epochs; MSA kernels K = (3, 5, 7); the 3 x 3 stem for
32 x 32 images. Momentum (not stated) 0.9; pad-4 crop and flip (not stated).
CIFAR-100: `--config.dataset=cifar100`. The paper's classifier head
(Alg. 3 steps 9-12): `--config.head=mgan`. Other readings of Alg. 2/3 and
Table 1 (models/zoo/mgan.py `MGAN_READINGS`):
`--config.model_kwargs.reading=branch_per_stage` (one kernel per stage,
closest to Tables 2, 3, 5's parameters) or `input` (Alg. 3 step 4 literally).
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

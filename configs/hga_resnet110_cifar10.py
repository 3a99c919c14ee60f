"""HGA-ResNet-110 on CIFAR-10 (Cao et al. 2020, Table 4).

  python train.py --config configs/hga_resnet110_cifar10.py --workdir DIR

The paper gives no CIFAR recipe; this is He et al. 2016's (Sec. 4.2) for
ResNet-110: batch 128, SGD lr 0.1 (momentum 0.9, weight decay 1e-4), /10 at
32k and 48k iterations, 64k iterations (~82/123/164 epochs), pad-4 crop and
flip; He et al. warm up ResNet-110 at lr 0.01 for the first ~400 iterations,
here a 1-epoch linear warm-up. CIFAR-100: `--config.dataset=cifar100`;
ResNet-164: `--config.model=hga_resnet164`.

Published figures (generated from flax_attn/tables/papers.py:
`python -m flax_attn.tables docstrings --write`; row: top-1 % or err %, M, G):
  hga_table4 (Table 4):
    resnet110_c10 err 6.37%; resnet164_c10 err 5.46%
    se_resnet110_c10 err 5.21%; se_resnet164_c10 err 4.39%
    hga_resnet110_c10 err 4.52%; hga_resnet164_c10 err 3.98%
    resnet110_c100 err 26.88%; resnet164_c100 err 24.33%
    se_resnet110_c100 err 23.85%; se_resnet164_c100 err 21.31%
    hga_resnet110_c100 err 22.02%; hga_resnet164_c100 err 20.82%
"""
from configs import default


def get_config():
  config = default.get_config()
  config.model = 'hga_resnet110'   # HGA after every basic block
  config.dataset = 'cifar10'
  config.image_size = 32
  config.augment.crop_padding = 4
  config.augment.flip = True
  config.batch_size = 128
  config.num_epochs = 164
  config.learning_rate = 0.1
  config.momentum = 0.9
  config.weight_decay = 1e-4
  config.lr_schedule = 'multistep'
  config.lr_boundaries_epochs = (82, 123)
  config.lr_decay_factor = 0.1
  config.warmup_epochs = 1.0
  return config

"""CSM-ResNet-18 on CIFAR-100 (Yang, Zhang, Yang, Table III).

  python train.py --config configs/csm_resnet18_cifar100.py --workdir DIR

The paper gives no recipe; this is default.py's CIFAR one (batch 128, SGD
lr 0.1, weight decay 5e-4, 200 epochs, /10 at 50/100/150, pad-4 crop,
flip), with the 3 x 3 stem for 32 x 32 images. Position attention runs in
every stage (at most 32 x 32 = 1024 positions). Other Table III rows:
`--config.model=csm_resnet34` (csm_resnet50, csm_wrn18); baseline
`--config.attn=none`.

Published figures (generated from flax_attn/tables/papers.py:
`python -m flax_attn.tables docstrings --write`; row: top-1 % or err %, M, G):
  csm_table3 (Table III):
    resnet18 91.7%; csm_resnet18 93.1%; resnet34 92.4%; csm_resnet34 93.8%
    resnet50 92.9%; csm_resnet50 94.3%; wrn18 92.8%; csm_wrn18 94.2%
"""
from configs import default


def get_config():
  config = default.get_config()
  config.model = 'csm_resnet18'
  config.model_kwargs.stem = 'small'  # 3x3 stride-1 stem, no max-pool
  config.attn_kwargs.mode = 'channel_first'
  config.dataset = 'cifar100'
  config.image_size = 32
  config.augment.crop_padding = 4
  config.augment.flip = True
  config.batch_size = 128
  config.num_epochs = 200
  config.learning_rate = 0.1
  config.weight_decay = 5e-4
  config.lr_schedule = 'multistep'
  config.lr_boundaries_epochs = (50, 100, 150)
  config.lr_decay_factor = 0.1
  return config

"""CSM-ResNet-50 on ImageNet-1K (Yang, Zhang, Yang, Table II).

  python train.py --config configs/csm_resnet50_imagenet.py --workdir DIR

The paper gives no recipe; this is the standard ResNet one (He et al. 2016,
Goyal et al. 2017): batch 256, SGD lr 0.1, momentum 0.9, weight decay 1e-4,
90 epochs, /10 at 30, 60 and 80. Position attention runs in stages 3 and 4
only (14 x 14 and 7 x 7 maps): at 56 x 56 it costs 3136^2 scores per image
and block. Every stage:
`--config.attn_kwargs.position_stages='(1, 2, 3, 4)'`.
ResNet-18/34, WRN-18: `--config.model=csm_resnet18` (csm_resnet34, csm_wrn18).

Published figures (generated from flax_attn/tables/papers.py:
`python -m flax_attn.tables docstrings --write`; row: top-1 % or err %, M, G):
  csm_table2 (Table II):
    resnet18 err 29.62% top-5 err 10.56%
    se_resnet18 err 29.43% top-5 err 10.24%
    csm_resnet18 err 29.29% top-5 err 10.12%
    resnet34 err 26.71% top-5 err 8.62%
    se_resnet34 err 26.16% top-5 err 8.37%
    csm_resnet34 err 26.03% top-5 err 8.28%
    resnet50 err 24.55% top-5 err 7.52%
    se_resnet50 err 23.21% top-5 err 6.74%
    csm_resnet50 err 22.78% top-5 err 6.57%; wrn18 err 26.86% top-5 err 8.91%
    se_wrn18 err 26.23% top-5 err 8.51%; csm_wrn18 err 26.14% top-5 err 8.49%
"""
from configs import default


def get_config():
  config = default.get_config()
  config.model = 'csm_resnet50'      # CSM after every bottleneck
  config.attn_kwargs.mode = 'channel_first'
  config.attn_kwargs.position_stages = (3, 4)
  config.dataset = 'imagenet2012'
  config.image_size = 224
  config.augment.crop_padding = 0    # random crops come from the ImageNet pipeline
  config.augment.flip = True
  config.batch_size = 256
  config.num_epochs = 90
  config.learning_rate = 0.1
  config.momentum = 0.9
  config.weight_decay = 1e-4
  config.lr_schedule = 'multistep'
  config.lr_boundaries_epochs = (30, 60, 80)
  config.lr_decay_factor = 0.1
  config.log_every_steps = 100
  config.checkpoint_every_steps = 5000
  return config

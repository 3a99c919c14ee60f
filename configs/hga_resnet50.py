"""HGA-ResNet-50 on ImageNet (Cao et al. 2020, seed 001, Table 2).

  python train.py --config configs/hga_resnet50.py --workdir DIR

Recipe (Sec. 5.1): SGD, lr 0.6 divided by 10 every 30 epochs, 100 epochs,
224 x 224 crops with random crop, flip and rotation. The paper states no
batch size, weight decay or rotation angle: batch 256, weight decay 1e-4
(He et al. 2016's ImageNet value) and 10 degrees are this config's choices.
lr 0.6 is six times the linear-scaling-rule value for batch 256 (Goyal et al.
2017); if the first epochs diverge, add `--config.warmup_epochs=5`.
Other Table 2 backbones: `--config.model=hga_resnet101` (152,
hga_resnext50_32x4d, hga_resnext101_32x4d).
"""
from configs import default


def get_config():
  config = default.get_config()
  config.model = 'hga_resnet50'    # HGA(c, 32, c) in every bottleneck
  config.dataset = 'imagenet2012'
  config.image_size = 224
  config.augment.crop_padding = 0  # random crops come from the ImageNet pipeline
  config.augment.flip = True
  config.augment.rotation = 10.0   # "rotation" (Sec. 5.1); angle not given
  config.batch_size = 256          # not given in the paper
  config.num_epochs = 100
  config.optimizer = 'sgd'
  config.learning_rate = 0.6       # Sec. 5.1
  config.momentum = 0.9
  config.weight_decay = 1e-4       # not given in the paper
  config.lr_schedule = 'multistep'
  config.lr_boundaries_epochs = (30, 60, 90)  # /10 every 30 epochs
  config.lr_decay_factor = 0.1
  config.warmup_epochs = 0.0
  config.log_every_steps = 100
  config.checkpoint_every_steps = 5000
  return config

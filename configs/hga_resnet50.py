"""HGA-ResNet-50 on ImageNet (Cao et al. 2020, Table 2).

  python train.py --config configs/hga_resnet50.py --workdir DIR

Recipe (Sec. 5.1): SGD, lr 0.6 divided by 10 every 30 epochs, 100 epochs,
224 x 224 crops with random crop, flip and rotation. The paper states no
batch size, weight decay or rotation angle: batch 256, weight decay 1e-4
(He et al. 2016's ImageNet value) and 10 degrees are this config's choices.
lr 0.6 is six times the linear-scaling-rule value for batch 256 (Goyal et al.
2017); if the first epochs diverge, add `--config.warmup_epochs=5`.
Other Table 2 backbones: `--config.model=hga_resnet101` (152,
hga_resnext50_32x4d, hga_resnext101_32x4d).

Published figures (generated from flax_attn/tables/papers.py:
`python -m flax_attn.tables docstrings --write`; row: top-1 % or err %, M, G):
  hga_table2 (Table 2):
    resnet50 err 24.8% top-5 err 7.48% 25.55M 4.11G
    hga_resnet50 err 22.48% top-5 err 6.22% 26.73M 4.38G
    resnet101 err 23.17% top-5 err 6.52% 44.54M 7.83G
    hga_resnet101 err 21.5% top-5 err 5.6% 47.07M 8.23G
    resnet152 err 22.42% top-5 err 6.34% 60.19M 11.55G
    hga_resnet152 err 20.63% top-5 err 5.23% 63.92M 12.13G
    resnext50_32x4d err 22.11% top-5 err 5.9% 25.02M 4.25G
    hga_resnext50_32x4d err 20.22% top-5 err 4.88% 26.21M 4.53G
    resnext101_32x4d err 21.18% top-5 err 5.57% 44.17M 8.01G
    hga_resnext101_32x4d err 19.82% top-5 err 4.59% 46.7M 8.71G
  hga_table3 (Table 3):
    seresnet50 err 23.29% 4.11G; seresnet101 err 22.38% 7.83G
    seresnet152 err 21.57% 11.56G; seresnext50_32x4d err 21.1% 4.26G
    skresnext50_32x4d err 20.79% 4.47G
  hga_table5 (Table 5):
    hga_resnet101 err 21.5% top-5 err 5.6%
    vanilla_resnet101 err 23.17% top-5 err 6.52%
    hga_resnext101_32x4d err 19.82% top-5 err 4.59%
    vanilla_resnext101_32x4d err 21.18% top-5 err 5.57%
  hga_table6 (Table 6):
    hga_resnet101 err 21.5% top-5 err 5.6%
    hga_resnext101_32x4d err 19.82% top-5 err 4.59%
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

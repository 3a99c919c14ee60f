"""CSCA-ResNet50 on CUB-200-2011 (Du & Ma, Table 1).

  python train.py --config configs/csca_resnet50_cub.py --workdir DIR

Table 1's other columns, named after the colon (`MODELS`):

  python train.py --config configs/csca_resnet50_cub.py:resnet50 --workdir DIR

with resnet50, fcn_resnet50, ca_resnet50, sa_resnet50 or csca_resnet50.
Stanford Dogs / Cars: configs/csca_resnet50_dogs.py, csca_resnet50_cars.py.

Recipe. From the paper (Sec. 2.1-2.2): ResNet-50 started from torchvision's
ImageNet weights; ColorJitter of brightness, contrast, saturation and hue,
random horizontal flip, random rotation. The paper gives no strengths, schedule or input size; ours, a
common fine-tuning recipe: 224 x 224 inputs (the dataset's default crop),
jitter strength 0.4 (hue 0.1), rotation up to 15 degrees, SGD momentum 0.9, batch 32,
lr 0.01 with a cosine decay over 100 epochs, weight decay 1e-4.

Pretrained weights: the one command that turns a downloaded torchvision /
timm checkpoint into `pretrained_path` (torchvision's ImageNet ResNet-50,
https://download.pytorch.org/models/resnet50-0676ba61.pth):

  python -m flax_attn.convert --model csca_resnet50 resnet50-0676ba61.pth \
      pretrained/csca_resnet50
  python train.py --config configs/csca_resnet50_cub.py --workdir DIR \
      --config.pretrained_path=pretrained/csca_resnet50

(`--model` is the config's model, e.g. resnet50 for `:resnet50`; the
backbone and stem are loaded, attention modules and the 200-class head start
fresh.) A timm checkpoint (.safetensors) of one of the models listed in
README's weights section converts the same way with its own name. Without
`pretrained_path` train.py warns in one line that the run starts from scratch.

Published figures (generated from flax_attn/tables/papers.py:
`python -m flax_attn.tables docstrings --write`; row: top-1 % or err %, M, G):
  csca_table1 (Table 1):
    resnet50_cub 76.4%; fcn_resnet50_cub 76.5%; ca_resnet50_cub 79.1%
    sa_resnet50_cub 78.4%; csca_resnet50_cub 84.7%
"""
from configs import default

MODELS = ('resnet50', 'fcn_resnet50', 'ca_resnet50', 'sa_resnet50',
          'csca_resnet50')


def get_config(model: str = 'csca_resnet50'):
  if model not in MODELS:
    raise ValueError(f'unknown model {model!r} for Du & Ma\'s Table 1; '
                     f'valid: {", ".join(MODELS)}')
  config = default.get_config()
  config.model = model       # attention models carry the FCN head (CAM)
  # The paper fine-tunes torchvision's ImageNet ResNet-50. Point this at an
  # orbax checkpoint of those weights, made by the command in the docstring
  # (matching params / batch_stats paths are loaded, attention modules and
  # the new head start fresh); '' trains from scratch, which will not reach
  # Table 1's accuracies (train.py warns).
  config.pretrained_path = ''
  config.dataset = 'caltech_birds2011'
  config.image_size = 224
  config.augment.crop_padding = 0
  config.augment.flip = True          # RandomHorizontalFlip
  config.augment.rotation = 15.0      # RandomRotation, degrees (our choice)
  config.augment.color_jitter = 0.4   # ColorJitter strength (our choice)
  config.augment.hue = 0.1            # ColorJitter hue (our choice)
  config.batch_size = 32
  config.num_epochs = 100
  config.optimizer = 'sgd'
  config.learning_rate = 0.01
  config.momentum = 0.9
  config.weight_decay = 1e-4
  config.lr_schedule = 'cosine'
  return config

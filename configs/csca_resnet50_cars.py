"""CSCA-ResNet50 on Stanford Cars (Du & Ma, Table 1).

  python train.py --config configs/csca_resnet50_cars.py --workdir DIR

Table 1's other columns: `configs/csca_resnet50_cars.py:ca_resnet50`
(resnet50, fcn_resnet50, ca_resnet50, sa_resnet50, csca_resnet50). Recipe,
augmentation and `pretrained_path` as configs/csca_resnet50_cub.py.

The tfds download link of cars196 is dead upstream: place the archives in
<data_dir>/downloads/manual first (`python -m flax_attn.data list`).

Published figures (generated from flax_attn/tables/papers.py:
`python -m flax_attn.tables docstrings --write`; row: top-1 % or err %, M, G):
  csca_table1 (Table 1):
    resnet50_cars 87.6%; fcn_resnet50_cars 87.1%; ca_resnet50_cars 89.7%
    sa_resnet50_cars 90.2%; csca_resnet50_cars 92%
"""
from configs import csca_resnet50_cub


def get_config(model: str = 'csca_resnet50'):
  config = csca_resnet50_cub.get_config(model)
  # torchvision's ImageNet ResNet-50 as an orbax checkpoint (see
  # configs/csca_resnet50_cub.py); '' trains from scratch.
  config.pretrained_path = ''
  config.dataset = 'cars196'
  return config

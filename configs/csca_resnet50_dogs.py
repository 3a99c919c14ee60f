"""CSCA-ResNet50 on Stanford Dogs (Du & Ma, Table 1).

  python train.py --config configs/csca_resnet50_dogs.py --workdir DIR

Table 1's other columns: `configs/csca_resnet50_dogs.py:ca_resnet50`
(resnet50, fcn_resnet50, ca_resnet50, sa_resnet50, csca_resnet50). Recipe,
augmentation and `pretrained_path` as configs/csca_resnet50_cub.py.

Published figures (generated from flax_attn/tables/papers.py:
`python -m flax_attn.tables docstrings --write`; row: top-1 % or err %, M, G):
  csca_table1 (Table 1):
    resnet50_dogs 73.9%; fcn_resnet50_dogs 73.8%; ca_resnet50_dogs 77.3%
    sa_resnet50_dogs 77.1%; csca_resnet50_dogs 83.5%
"""
from configs import csca_resnet50_cub


def get_config(model: str = 'csca_resnet50'):
  config = csca_resnet50_cub.get_config(model)
  # torchvision's ImageNet ResNet-50 as an orbax checkpoint (see
  # configs/csca_resnet50_cub.py); '' trains from scratch.
  config.pretrained_path = ''
  config.dataset = 'stanford_dogs'
  return config

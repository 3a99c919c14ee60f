"""MLAN-ResNet20 on CIFAR-100 (Wang, Qin et al. 2022, seed 002, Tables 8-13).

  python train.py --config configs/mlan_resnet20_cifar100.py --workdir DIR

Widths 16/32/64 (Table 8), otherwise the CIFAR-10 recipe
(configs/mlan_resnet20_cifar10.py). Other depths: `--config.model=
mlan_resnet14` (26, 32); ablations: configs/mlan_resnet20_ablation.py with
`--config.dataset=cifar100 --config.model_kwargs.width=16`.
0.360M parameters (Table 9 / 12: 0.36M).
"""
from configs import mlan_resnet20_cifar10


def get_config():
  config = mlan_resnet20_cifar10.get_config()
  config.dataset = 'cifar100'
  config.model_kwargs.width = 16       # Table 8: groups of 16/32/64 channels
  return config

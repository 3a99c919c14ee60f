"""MLAN-ResNet20 on CIFAR-100 (Wang, Qin et al. 2022, Tables 8-13).

  python train.py --config configs/mlan_resnet20_cifar100.py --workdir DIR

Widths 16/32/64 (Table 8), otherwise the CIFAR-10 recipe
(configs/mlan_resnet20_cifar10.py). Other depths: `--config.model=
mlan_resnet14` (26, 32); ablations: configs/mlan_resnet20_ablation.py with
`--config.dataset=cifar100 --config.model_kwargs.width=16`.
0.360M parameters (Tables 9 and 12: listed below).

Published figures (generated from flax_attn/tables/papers.py:
`python -m flax_attn.tables docstrings --write`; row: top-1 % or err %, M, G):
  mlan_table9 (Table 9):
    sma_r14 68.91% 0.22M; sma_r20 70.51% 0.36M; sma_r26 70.64% 0.5M
    sma_r32 71.78% 0.63M
  mlan_table10 (Table 10):
    mlan_r14 68.91%; mlan_r20 70.51%; mlan_r26 70.64%; mlan_r32 71.78%
  mlan_table11 (Table 11):
    mlan_r14 68.91%; mlan_r20 70.51%; mlan_r26 70.64%; mlan_r32 71.78%
  mlan_table12 (Table 12):
    sma_r14 68.91% 0.22M; sma_r20 70.51% 0.36M; sma_r26 70.64% 0.5M
    sma_r32 71.78% 0.63M
  mlan_table13 (Table 13):
    fusion_plus_r20 70.51% 0.36M
  mlan_table14 (Table 14):
    mlan_r14 68.91%; mlan_r20 70.51%; mlan_r26 70.64%; mlan_r32 71.78%
"""
from configs import mlan_resnet20_cifar10


def get_config():
  config = mlan_resnet20_cifar10.get_config()
  config.dataset = 'cifar100'
  config.model_kwargs.width = 16       # Table 8: groups of 16/32/64 channels
  return config

"""MLAN-ResNet20 on CIFAR-10 (Wang, Qin et al. 2022, Tables 2-6).

  python train.py --config configs/mlan_resnet20_cifar10.py --workdir DIR

Other depths of Tables 2-4, 6: `--config.model=mlan_resnet14` (or 26, 32).
Fusion, level, mask and comparator ablations:
configs/mlan_resnet20_ablation.py. CIFAR-100: configs/mlan_resnet20_cifar100.py.

Recipe (Sec. IV): pad 4 + random 32x32 crop + horizontal flip; batch 128;
SGD lr 0.1, weight decay 5e-4, x0.1 at epochs 50, 100, 150; 200 epochs;
N = 3 shared masks; plus fusion; widths 8/16/32 (Table 1). Momentum (not
stated) 0.9, as PyTorch CIFAR recipes use. 0.098M parameters (Table 4's
figure is listed below).

Published figures (generated from flax_attn/tables/papers.py:
`python -m flax_attn.tables docstrings --write`; row: top-1 % or err %, M, G):
  mlan_table2 (Table 2):
    mlan_r14 88.37%; mlan_r20 90.23%; mlan_r26 90.94%; mlan_r32 90.84%
  mlan_table3 (Table 3):
    mlan_r14 88.37%; mlan_r20 90.23%; mlan_r26 90.94%; mlan_r32 90.84%
  mlan_table4 (Table 4):
    sma_r14 88.37% 0.06M; sma_r20 90.23% 0.1M; sma_r26 90.94% 0.14M
    sma_r32 90.84% 0.18M
  mlan_table5 (Table 5):
    fusion_plus_r20 90.23% 0.1M
  mlan_table6 (Table 6):
    sma_r14 88.37% 0.06M; sma_r20 90.23% 0.1M; sma_r26 90.94% 0.14M
    sma_r32 90.84% 0.18M
  mlan_table7 (Table 7):
    mlan_r14 88.37%; mlan_r20 90.23%; mlan_r26 90.94%; mlan_r32 90.84%
"""
from configs import default


def get_config():
  config = default.get_config()
  config.model = 'mlan_resnet20'       # SMA at every level, multi-level
  config.model_kwargs.width = 8        # Table 1: groups of 8/16/32 channels
  config.model_kwargs.fusion = 'plus'  # Eq. 8, the paper's standard fusion
  config.attn_kwargs.num_masks = 3     # N of Eq. 2
  config.dataset = 'cifar10'
  config.image_size = 32
  config.augment.crop_padding = 4      # pad to 36, random crop 32
  config.augment.flip = True
  config.batch_size = 128
  config.num_epochs = 200
  config.optimizer = 'sgd'
  config.learning_rate = 0.1
  config.momentum = 0.9
  config.weight_decay = 5e-4
  config.weight_decay_mode = 'l2'      # PyTorch SGD's weight_decay
  config.lr_schedule = 'multistep'
  config.lr_boundaries_epochs = (50, 100, 150)
  config.lr_decay_factor = 0.1
  return config

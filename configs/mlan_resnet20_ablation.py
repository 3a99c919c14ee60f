"""MLAN ablations on ResNet20, CIFAR-10 (Wang, Qin et al. 2022).

One variant per run, named after the colon:

  python train.py --config configs/mlan_resnet20_ablation.py:fusion_concat --workdir DIR

Variants (`VARIANTS`), each the recipe of configs/mlan_resnet20_cifar10.py
with one change:
  Table 5 / 13, fusion (Eq. 9-11): fusion_concat, fusion_conv1x1,
    fusion_weighted_plus (plus is the base config).
  Table 3 / 11, levels: single_level (layer attention + block residual only).
  Table 4 / 12, masks: fma (full C x H x W masks); Table 6 / 9: sma_v2.
  Table 6 / 9, other attention in the same multi-level structure: cbam, se,
    triplet, gc.
  SPEC.md's parameter-free aggregation reading: aggregation_mean.
  Table 2 / 10 backbone and Table 7 / 14 comparators (plain ResNet20 with
    block attention, no MLAN): backbone, resnet_cbam, resnet_se,
    resnet_triplet, resnet_gc.
CIFAR-100 (Tables 9-14): add `--config.dataset=cifar100
--config.model_kwargs.width=16`. Other depths: `--config.model=
mlan_resnet14` (26, 32), or `cifar_resnet14` etc. for the plain variants.

Published figures (generated from flax_attn/tables/papers.py:
`python -m flax_attn.tables docstrings --write`; row: top-1 % or err %, M, G):
  mlan_table2 (Table 2):
    backbone_r14 87.58%; backbone_r20 89%; backbone_r26 90.02%
    backbone_r32 90.34%
  mlan_table3 (Table 3):
    single_level_r14 87.74%; single_level_r20 88.84%; single_level_r26 89.33%
    single_level_r32 89.94%
  mlan_table4 (Table 4):
    fma_r14 89.18% 0.39M; fma_r20 90.21% 1.04M; fma_r26 90.86% 1.98M
    fma_r32 90.83% 3.21M
  mlan_table5 (Table 5):
    fusion_concat_r20 91% 0.21M; fusion_conv1x1_r20 90.72% 0.11M
    fusion_weighted_plus_r20 90.11% 0.1M
  mlan_table6 (Table 6):
    sma_v2_r14 88.61% 0.05M; sma_v2_r20 89.67% 0.08M; sma_v2_r26 90.36% 0.11M
    sma_v2_r32 90.84% 0.14M; cbam_r14 88.37% 0.07M; cbam_r20 87.88% 0.14M
    cbam_r26 89.5% 0.22M; cbam_r32 89.04% 0.32M; triplet_r14 88.41% 0.06M
    triplet_r20 89.31% 0.1M; triplet_r26 90.24% 0.13M
    triplet_r32 89.96% 0.16M; se_r14 88.09% 0.07M; se_r20 89.2% 0.13M
    se_r26 89.49% 0.21M; se_r32 89.91% 0.31M; gc_r14 87.55% 0.07M
    gc_r20 89.15% 0.14M; gc_r26 89.79% 0.22M; gc_r32 90.51% 0.32M
  mlan_table7 (Table 7):
    resnet_cbam_r14 87.1%; resnet_cbam_r20 88.47%; resnet_cbam_r26 89.01%
    resnet_cbam_r32 89.46%; resnet_se_r14 87.36%; resnet_se_r20 87.94%
    resnet_se_r26 88.92%; resnet_se_r32 88.33%; resnet_triplet_r14 87.74%
    resnet_triplet_r20 89.27%; resnet_triplet_r26 90.06%
    resnet_triplet_r32 89.85%; resnet_gc_r14 87.18%; resnet_gc_r20 89.21%
    resnet_gc_r26 89.39%; resnet_gc_r32 88.87%
  mlan_table9 (Table 9):
    sma_v2_r14 68.12% 0.2M; sma_v2_r20 71.02% 0.32M; sma_v2_r26 71.44% 0.44M
    sma_v2_r32 71.96% 0.56M; cbam_r14 67.72% 0.28M; cbam_r20 67.77% 0.54M
    cbam_r26 68.13% 0.87M; cbam_r32 69.79% 1.26M; triplet_r14 67.67% 0.21M
    triplet_r20 69.39% 0.34M; triplet_r26 70.13% 0.46M
    triplet_r32 70.25% 0.58M; se_r14 68.69% 0.28M; se_r20 69.24% 0.53M
    se_r26 70.11% 0.86M; se_r32 70.66% 1.24M; gc_r14 68.42% 0.28M
    gc_r20 69.05% 0.54M; gc_r26 69.63% 0.87M; gc_r32 70.18% 1.26M
  mlan_table10 (Table 10):
    backbone_r14 67.08%; backbone_r20 68.78%; backbone_r26 70.17%
    backbone_r32 71.01%
  mlan_table11 (Table 11):
    single_level_r14 67.06%; single_level_r20 69.39%; single_level_r26 70.1%
    single_level_r32 70.67%
  mlan_table12 (Table 12):
    fma_r14 70% 1.58M; fma_r20 70.39% 4.17M; fma_r26 71.24% 7.93M
    fma_r32 72.11% 12.84M
  mlan_table13 (Table 13):
    fusion_concat_r20 72.31% 0.81M; fusion_conv1x1_r20 71.31% 0.41M
    fusion_weighted_plus_r20 70.74% 0.36M
  mlan_table14 (Table 14):
    resnet_cbam_r14 67.37%; resnet_cbam_r20 68.76%; resnet_cbam_r26 69.89%
    resnet_cbam_r32 69.45%; resnet_se_r14 67.69%; resnet_se_r20 67.57%
    resnet_se_r26 68.93%; resnet_se_r32 68.38%; resnet_triplet_r14 66.85%
    resnet_triplet_r20 68.7%; resnet_triplet_r26 69.45%
    resnet_triplet_r32 69.34%; resnet_gc_r14 67.01%; resnet_gc_r20 68.28%
    resnet_gc_r26 68.71%; resnet_gc_r32 67.87%
"""
from configs import mlan_resnet20_cifar10

_PLAIN = dict(model='cifar_resnet20', model_kwargs=dict(width=8,
                                                        shortcut='B'))
VARIANTS = {
    'fusion_concat': dict(model_kwargs=dict(fusion='concat')),
    'fusion_conv1x1': dict(model_kwargs=dict(fusion='conv1x1')),
    'fusion_weighted_plus': dict(model_kwargs=dict(fusion='weighted_plus')),
    'single_level': dict(model_kwargs=dict(multi_level=False)),
    'aggregation_mean': dict(model_kwargs=dict(aggregation='mean')),
    'fma': dict(attn='fma'),
    'sma_v2': dict(attn='sma_v2'),
    'cbam': dict(attn='cbam', attn_kwargs={}),
    'se': dict(attn='se', attn_kwargs={}),
    'triplet': dict(attn='triplet', attn_kwargs={}),
    'gc': dict(attn='gc', attn_kwargs={}),
    'backbone': dict(_PLAIN, attn='none', attn_kwargs={}),
    'resnet_cbam': dict(_PLAIN, attn='cbam', attn_kwargs={}),
    'resnet_se': dict(_PLAIN, attn='se', attn_kwargs={}),
    'resnet_triplet': dict(_PLAIN, attn='triplet', attn_kwargs={}),
    'resnet_gc': dict(_PLAIN, attn='gc', attn_kwargs={}),
}


def get_config(variant: str = 'fusion_concat'):
  if variant not in VARIANTS:
    raise ValueError(f'unknown MLAN ablation {variant!r}; valid: '
                     f'{", ".join(VARIANTS)}')
  config = mlan_resnet20_cifar10.get_config()
  change = VARIANTS[variant]
  if 'model' in change:
    config.model = change['model']
    config.model_kwargs = dict(change['model_kwargs'])
  else:
    config.model_kwargs.update(change.get('model_kwargs', {}))
  if 'attn' in change:
    config.attn = change['attn']
  if 'attn_kwargs' in change:  # N = 3 is an option of SMA-like masks only
    config.attn_kwargs = dict(change['attn_kwargs'])
  return config

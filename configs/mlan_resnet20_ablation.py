"""MLAN ablations on ResNet20, CIFAR-10 (Wang, Qin et al. 2022, seed 002).

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

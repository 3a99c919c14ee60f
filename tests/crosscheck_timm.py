"""Checks tests/torch_resnets.py's rewrites of timm's models against timm.

Not a pytest file: timm needs torchvision, which has no build for the torch
of this project's machines, so the test suite compares against the rewrites
and this script (run where timm imports) checks the rewrites themselves:

  python tests/crosscheck_timm.py [NAME ...]

For each model: timm.create_model(name) with random weights and BN
statistics (torch_resnets.randomize), its state dict loaded strictly into
the rewrite (identical keys and shapes), the same logits, and timm's
parameter count as tests/test_models.py asserts it. Run on timm 1.0.31:
all equal, logits bit for bit.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_resnets  # noqa: E402  pylint: disable=g-import-not-at-top
import timm  # noqa: E402  pylint: disable=g-import-not-at-top

NAMES = ('resnet26d', 'resnet50d', 'resnet101d', 'seresnext26d_32x4d',
         'seresnext50_32x4d', 'ecaresnet26t', 'ecaresnet50d', 'ecaresnet50t',
         'ecaresnet101d', 'skresnet18', 'skresnet34', 'skresnext50_32x4d',
         'gcresnet50t')


def main(names):
  for name in names:
    reference = torch_resnets.randomize(timm.create_model(name), seed=1,
                                        batch=8, size=40)
    count = sum(p.numel() for p in reference.parameters())
    with torch.device('meta'):
      rewrite = torch_resnets.MODELS[name]()
    rewrite = rewrite.to_empty(device='cpu')
    rewrite.load_state_dict(reference.state_dict(), strict=True)
    rewrite.eval()
    images = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
      diff = float((reference(images) - rewrite(images)).abs().max())
    print(f'{name}: {count} parameters, logits differ by {diff:.3g}')
    assert diff <= 1e-5, name


if __name__ == '__main__':
  main(sys.argv[1:] or NAMES)

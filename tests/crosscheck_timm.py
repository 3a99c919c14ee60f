"""Checks tests/torch_resnets.py's rewrites of timm's models against timm.

Not a pytest file: timm needs torchvision, which has no build for the torch
of this project's machines, so the test suite compares against the rewrites
and this script (run where timm imports) checks the rewrites themselves:

  python tests/crosscheck_timm.py [NAME ...]

For each model: timm.create_model(name) with random weights and BN
statistics (torch_resnets.randomize), its state dict loaded strictly into
the rewrite (identical keys and shapes), the same logits, and timm's
parameter count equal to the rewrite's and to the count tests/test_models.py
asserts for flax_attn's model (REFERENCE_PARAMS, read from that file, so
this script needs no JAX). Run on timm 1.0.31: all equal, logits bit for
bit. Exits non-zero at the first difference.
"""
import ast
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


def reference_params():
  """tests/test_models.py's REFERENCE_PARAMS (parsed, not imported)."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      'test_models.py')
  for node in ast.parse(open(path).read()).body:
    if (isinstance(node, ast.Assign)
        and getattr(node.targets[0], 'id', '') == 'REFERENCE_PARAMS'):
      return ast.literal_eval(node.value)
  raise LookupError(f'no REFERENCE_PARAMS in {path}')


def main(names):
  expected = reference_params()
  for name in names:
    reference = torch_resnets.randomize(timm.create_model(name), seed=1,
                                        batch=8, size=40)
    count = sum(p.numel() for p in reference.parameters())
    with torch.device('meta'):
      rewrite = torch_resnets.MODELS[name]()
    rewrite = rewrite.to_empty(device='cpu')
    rewrite_count = sum(p.numel() for p in rewrite.parameters())
    assert count == rewrite_count, (name, count, rewrite_count)
    # skresnet18 / 34 have no flax_attn count in tests/test_models.py.
    assert count == expected.get(name, count), (name, count, expected[name])
    rewrite.load_state_dict(reference.state_dict(), strict=True)
    rewrite.eval()
    images = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
      diff = float((reference(images) - rewrite(images)).abs().max())
    print(f'{name}: {count} parameters, logits differ by {diff:.3g}')
    assert diff <= 1e-5, name


if __name__ == '__main__':
  main(sys.argv[1:] or NAMES)

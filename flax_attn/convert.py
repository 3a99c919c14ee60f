"""Converts a PyTorch ResNet-family checkpoint to an orbax checkpoint.

torchvision's vgg16 / vgg16_bn files convert too (to `vgg16`, `vgg16_bn` or
the CIFAR variants' convolutions: `--model vgg16_bn_cifar`).

  python -m flax_attn.convert --model resnet50 resnet50.pth out/resnet50
  python -m flax_attn.convert --model ecaresnet50t model.safetensors \
      out/ecaresnet50t      # timm's (flax_attn/models/zoo/timm_resnets.py)
  python -m flax_attn.convert --model csca_resnet50 resnet50.safetensors \
      out/csca_resnet50 --num-classes 200

The output directory is what `config.pretrained_path` names: train.py starts
from it (flax_attn.training.load_pretrained takes every array whose path and
shape fit and initialises the rest from the run's seed):

  python train.py --config configs/csca_resnet50_cub.py --workdir runs/cub \
      --config.pretrained_path=out/csca_resnet50

By default only the arrays taken from the file are written (the backbone, and
the head when its class count is kept), so attention modules and a new head
are initialised by the training run itself; `--include-fresh` writes the
complete variables instead. eval.py evaluates a training workdir, so a
converted checkpoint is evaluated by training from it (above) and running
eval.py on that workdir. Reading is safe: safetensors or
`torch.load(weights_only=True)` (see flax_attn/weights.py).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog='python -m flax_attn.convert',
      description='Import a torchvision / timm ResNet-family checkpoint '
      '(.pth or .safetensors) as an orbax checkpoint for '
      'config.pretrained_path.')
  p.add_argument('--model', required=True,
                 help='registered model name, e.g. resnet50, seresnet50, '
                 'ecaresnet50t, gcresnet50t, hga_resnet50 '
                 '(flax_attn.list_models())')
  p.add_argument('checkpoint', help='input .pth / .pt / .bin / .safetensors')
  p.add_argument('out_dir', help='output orbax checkpoint directory')
  p.add_argument('--num-classes', type=int, default=None,
                 help='classifier outputs (default: the checkpoint\'s); '
                 'another count gives a new head')
  p.add_argument('--include-fresh', action='store_true',
                 help='also write the freshly initialised arrays (attention '
                 'modules, a new head), i.e. the complete variables')
  p.add_argument('--seed', type=int, default=0,
                 help='PRNG seed of fresh modules (with --include-fresh)')
  p.add_argument('--force', action='store_true',
                 help='overwrite out_dir if it exists')
  return p


def convert(model: str, checkpoint: str, out_dir: str,
            num_classes: Optional[int] = None, include_fresh: bool = False,
            seed: int = 0, force: bool = False):
  """Reads `checkpoint`, imports it into `model` and saves `out_dir`.

  Returns the `ImportReport`. Raises `CheckpointError` (bad file, keys or
  shapes; `out_dir` exists without `force`) and `UnknownNameError`.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  from flax_attn import weights  # pylint: disable=g-import-not-at-top
  from flax_attn.errors import CheckpointError  # pylint: disable=g-import-not-at-top
  import flax_attn.models  # pylint: disable=g-import-not-at-top,unused-import  # noqa: F401  (registers the named models)
  from flax_attn.registry import MODELS  # pylint: disable=g-import-not-at-top
  MODELS.get(model)  # an unknown name fails before a large file is read
  out_dir = os.path.abspath(out_dir)
  if os.path.exists(out_dir) and os.listdir(out_dir) and not force:
    raise CheckpointError(f'output {out_dir!r} exists; pass --force to '
                          'overwrite it')
  state_dict = weights.load_state_dict(checkpoint)
  # torchvision's VGG (features.N, classifier.N) or a ResNet-family file.
  importer = (weights.import_torchvision_vgg
              if 'features.0.weight' in state_dict else weights.import_torch)
  variables, report = importer(model, state_dict, num_classes, seed=seed,
                               init_fresh=include_fresh)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(out_dir, {'params': variables['params'],
                              'batch_stats': variables['batch_stats']},
                    force=True)
  checkpointer.wait_until_finished()
  checkpointer.close()
  return report


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = _parser().parse_args(argv)
  from flax_attn.errors import UserError  # pylint: disable=g-import-not-at-top
  try:
    report = convert(args.model, args.checkpoint, args.out_dir,
                     args.num_classes, args.include_fresh, args.seed,
                     args.force)
  except UserError as e:  # a bad name, file or option; bugs keep tracebacks
    print(f'error: {str(e).splitlines()[0]}', file=sys.stderr)
    return 2
  print(report.summary())
  written = len(report.loaded) + (len(report.fresh) if args.include_fresh
                                  else 0)
  print(f'wrote {written} arrays to {os.path.abspath(args.out_dir)}; train '
        f'from it with --config.model={args.model} '
        f'--config.pretrained_path={os.path.abspath(args.out_dir)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())

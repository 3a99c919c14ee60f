"""The datasets from the command line.

  python -m flax_attn.data list [--data_dir DIR]
      every dataset name `config.dataset` accepts, with its status in DIR:
      prepared / needs manual files (which, where) / downloadable / in package
  python -m flax_attn.data prepare NAME [--manual_dir DIR] [--data_dir DIR]
      writes NAME's array_record files (prepare.py says how, per dataset)
  python -m flax_attn.data bench NAME [--config FILE] [--data_dir DIR]
         [--accelerator_images_per_s 3000] [--accelerators 1]
      images/s per CPU core of NAME's training recipe on this host (one
      pinned core), and the cores the accelerators need (throughput.py)

Errors are one line on stderr and exit status 1.
"""
import argparse
import sys

from flax_attn.data import prepare as prepare_lib
from flax_attn.data import throughput
from flax_attn.data.pipeline import DatasetNotFoundError
from flax_attn.data.specs import list_datasets
from flax_attn.registry import UnknownNameError


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m flax_attn.data')
  commands = parser.add_subparsers(dest='command', required=True)
  listing = commands.add_parser('list', help='datasets and their status')
  listing.add_argument('--data_dir', default=None,
                       help='tfds data_dir (default: $TFDS_DATA_DIR or '
                       '~/tensorflow_datasets)')
  prepare = commands.add_parser('prepare', help='write array_record files')
  prepare.add_argument('name', help='one of: ' + ', '.join(list_datasets()))
  prepare.add_argument('--data_dir', default=None,
                       help='tfds data_dir to write into')
  prepare.add_argument('--manual_dir', default=None,
                       help='folder of manually downloaded files (default '
                       '<data_dir>/downloads/manual)')
  bench = commands.add_parser('bench', help='images/s per core of a '
                              "dataset's training recipe on this host")
  bench.add_argument('name', help='one of: ' + ', '.join(list_datasets()))
  bench.add_argument('--config', default=None,
                     help='a config file (as train.py --config) whose recipe '
                     "to run; default: the project configs' recipe")
  bench.add_argument('--data_dir', default='', help='tfds data_dir')
  bench.add_argument('--image_size', type=int, default=0,
                     help='0 = the dataset\'s size')
  bench.add_argument('--batch_size', type=int, default=64)
  bench.add_argument('--batches', type=int, default=8)
  bench.add_argument(
      '--accelerator_images_per_s', type=float,
      default=throughput.DEFAULT_ACCELERATOR_IMAGES_PER_S,
      help='training images/s one accelerator consumes (an assumption; '
      'default %(default)g: ResNet-50 at 224 px on an H100-class GPU or '
      'TPU v5e chip, mixed precision)')
  bench.add_argument('--accelerators', type=int, default=1)
  return parser


def _bench(args) -> None:
  if args.config:
    config = throughput.config_from_file(args.config, args.name)
    config.data_dir = args.data_dir or config.get('data_dir', '')
  else:
    config = throughput.default_recipe(args.name, args.image_size,
                                       args.batch_size, args.data_dir)
  result = throughput.measure(config, batches=args.batches)
  for line in throughput.report_lines(args.name, config, result,
                                      args.accelerators,
                                      args.accelerator_images_per_s):
    print(line)


def main(argv) -> int:
  args = _parser().parse_args(argv)
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.ERROR)  # tfds' notes on absent folders
  try:
    if args.command == 'list':
      for line in prepare_lib.list_lines(args.data_dir):
        print(line)
      return 0
    if args.command == 'bench':
      _bench(args)
      return 0
    path = prepare_lib.prepare(args.name, data_dir=args.data_dir,
                               manual_dir=args.manual_dir)
  except (prepare_lib.PrepareError, UnknownNameError, DatasetNotFoundError,
          FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'{args.name}: array_record files in {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))

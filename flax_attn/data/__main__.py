"""The datasets from the command line.

  python -m flax_attn.data list [--data_dir DIR]
      every dataset name `config.dataset` accepts, with its status in DIR:
      prepared / needs manual files (which, where) / downloadable / in package
  python -m flax_attn.data prepare NAME [--manual_dir DIR] [--data_dir DIR]
      writes NAME's array_record files (prepare.py says how, per dataset)

Errors are one line on stderr and exit status 1.
"""
import argparse
import sys

from flax_attn.data import prepare as prepare_lib
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
  return parser


def main(argv) -> int:
  args = _parser().parse_args(argv)
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.ERROR)  # tfds' notes on absent folders
  try:
    if args.command == 'list':
      for line in prepare_lib.list_lines(args.data_dir):
        print(line)
      return 0
    path = prepare_lib.prepare(args.name, data_dir=args.data_dir,
                               manual_dir=args.manual_dir)
  except (prepare_lib.PrepareError, UnknownNameError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'{args.name}: array_record files in {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))

"""`python -m flax_attn.data list`: the registered datasets, one a line."""
import sys

from flax_attn.data import get_dataset_spec, list_datasets


def main(argv) -> int:
  if len(argv) != 1 or argv[0] != 'list':
    print('usage: python -m flax_attn.data list', file=sys.stderr)
    return 2
  for name in list_datasets():
    spec = get_dataset_spec(name)
    where = spec.tfds_name if spec.source == 'tfds' else 'in package'
    print(f'{name:18s} {spec.num_classes:5d} classes  {spec.image_size:3d}px '
          f' {spec.train_split}/{spec.eval_split}  [{where}]  '
          f'{spec.description}')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))

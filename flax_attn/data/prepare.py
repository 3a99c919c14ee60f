"""Writing the array_record files training reads, and telling what is there.

  python -m flax_attn.data prepare NAME [--manual_dir DIR] [--data_dir DIR]
  python -m flax_attn.data list [--data_dir DIR]

`prepare` runs the dataset's tfds builder once,
`download_and_prepare(file_format='array_record', download_config=
DownloadConfig(manual_dir=DIR))`, into `<data_dir>/<name>/<config>/<version>`
(data_dir: --data_dir, else $TFDS_DATA_DIR, else ~/tensorflow_datasets; the
manual directory: --manual_dir, else <data_dir>/downloads/manual):

  cifar10, cifar100        tfds' builders, downloaded; need TensorFlow
  caltech_birds2011,       tfds' builders, downloaded; need TensorFlow
  stanford_dogs
  imagenet2012             tfds' builder from ILSVRC2012_img_train.tar and
                           ILSVRC2012_img_val.tar in the manual directory;
                           needs TensorFlow
  cars196                  cars196.ManualCars196 from the manual files (the
                           upstream link is dead); no TensorFlow
  mini_imagenet(_shuffled) mini_imagenet.MiniImagenet from the manual files;
                           no TensorFlow

TensorFlow is needed only here, never for training: `pip install
'flax-attn[prepare]'` (TensorFlow, and importlib_resources, which tfds'
own builders import to find their checksum files). Missing manual files
fail before tfds starts, in one line saying which files go where.
"""
from __future__ import annotations

import glob
import os
from typing import List, Optional

from flax_attn.data import cars196, mini_imagenet
from flax_attn.data.specs import DatasetSpec, get_dataset_spec, list_datasets
from flax_attn.errors import UserError

_IMAGENET_TARS = ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar')
_IMAGENET_LAYOUT = ('ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar '
                    '(from image-net.org, as downloaded)')


class PrepareError(UserError):
  """Preparing failed; `str()` is one line saying what to do."""


def tfds_base_name(spec: DatasetSpec) -> str:
  """'mini_imagenet/classification:1.0.0' -> 'mini_imagenet'."""
  return spec.tfds_name.split('/')[0].split(':')[0]


def tfds_can_build(spec: DatasetSpec) -> bool:
  """Whether plain `tfds build NAME` prepares it (tfds' own builder works)."""
  return spec.source == 'tfds' and tfds_base_name(spec) not in (
      'cars196', 'mini_imagenet')


def manual_layout(spec: DatasetSpec) -> str:
  """One line: the files the manual directory needs; '' if none."""
  return {'imagenet2012': _IMAGENET_LAYOUT, 'cars196': cars196.LAYOUT,
          'mini_imagenet': mini_imagenet.LAYOUT}.get(
              tfds_base_name(spec), '') if spec.source == 'tfds' else ''


def missing_manual_files(spec: DatasetSpec, manual_dir: str) -> List[str]:
  base = tfds_base_name(spec)
  if base == 'imagenet2012':
    return [name for name in _IMAGENET_TARS
            if not os.path.isfile(os.path.join(manual_dir, name))]
  if base == 'cars196':
    return cars196.missing_files(manual_dir)
  if base == 'mini_imagenet':
    return mini_imagenet.missing_files(manual_dir)
  return []


def default_data_dir() -> str:
  from tensorflow_datasets.core import constants  # pylint: disable=g-import-not-at-top
  return os.fspath(constants.DATA_DIR)


def default_manual_dir(data_dir: str) -> str:
  return os.path.join(data_dir, 'downloads', 'manual')


def make_builder(spec: DatasetSpec, data_dir: str):
  """The tfds builder that writes `spec`'s files into `data_dir`."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if tfds_base_name(spec) == 'cars196':
    return cars196.ManualCars196(data_dir=data_dir)
  return tfds.builder(spec.tfds_name, data_dir=data_dir)


def array_record_files(builder) -> List[str]:
  return sorted(glob.glob(os.path.join(os.fspath(builder.data_dir),
                                       '*.array_record-*')))


def prepare(name: str, data_dir: Optional[str] = None,
            manual_dir: Optional[str] = None) -> str:
  """Writes dataset `name`'s array_record files; returns their folder."""
  spec = get_dataset_spec(name)
  if spec.source != 'tfds':
    raise PrepareError(f'dataset {name!r} ships with the package: nothing to '
                       'prepare')
  data_dir = os.path.abspath(os.path.expanduser(data_dir or
                                                default_data_dir()))
  hint = '' if manual_dir else ' (or pass --manual_dir DIR)'
  manual_dir = os.path.abspath(os.path.expanduser(
      manual_dir or default_manual_dir(data_dir)))
  layout = manual_layout(spec)
  if layout:
    missing = missing_manual_files(spec, manual_dir)
    if missing:
      raise PrepareError(f'{name}: missing {"; ".join(missing)} in '
                         f'{manual_dir}: it needs {layout}{hint}')
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = make_builder(spec, data_dir)
  if builder.is_prepared() and not array_record_files(builder):
    raise PrepareError(f'{name}: {builder.data_dir} holds files of another '
                       'format; training reads array_record: delete that '
                       'folder and prepare again')
  config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  try:
    builder.download_and_prepare(download_config=config,
                                 file_format='array_record')
  except ModuleNotFoundError as e:  # tensorflow, importlib_resources
    raise PrepareError(
        f'preparing {name} with tfds\' builder needs the package '
        f'{e.name!r}, which training does not: pip install '
        '"flax-attn[prepare]" (TensorFlow and importlib_resources)') from e
  except (FileNotFoundError, ValueError) as e:
    raise PrepareError(' '.join(str(e).split())) from e
  return os.fspath(builder.data_dir)


def status(name: str, data_dir: Optional[str] = None) -> str:
  """'prepared', 'needs manual files ...', 'downloadable' or 'in package'."""
  spec = get_dataset_spec(name)
  if spec.source != 'tfds':
    return 'in package'
  data_dir = data_dir or default_data_dir()
  try:
    builder = make_builder(spec, data_dir)
  except Exception as e:  # pylint: disable=broad-except
    return f'cannot open: {type(e).__name__}: {str(e).splitlines()[0][:120]}'
  if builder.is_prepared():
    if array_record_files(builder):
      return 'prepared'
    return (f'prepared in another format at {builder.data_dir}: training '
            'reads array_record (delete it and prepare again)')
  command = f'python -m flax_attn.data prepare {name}'
  layout = manual_layout(spec)
  if layout:
    manual_dir = default_manual_dir(data_dir)
    if not missing_manual_files(spec, manual_dir):
      return f'manual files present in {manual_dir}: run `{command}`'
    return (f'needs manual files: {layout}, in --manual_dir DIR (default '
            f'{manual_dir}); then `{command}`')
  return f'downloadable: `{command}` (needs TensorFlow)'


def list_lines(data_dir: Optional[str] = None) -> List[str]:
  """One line per dataset name the configs accept."""
  lines = []
  for name in list_datasets():
    spec = get_dataset_spec(name)
    lines.append(f'{name:23s} {spec.num_classes:5d} classes {spec.image_size:4d}'
                 f'px  {status(name, data_dir)}')
  return lines

"""Stanford Cars (Krause et al. 2013) from manually placed files, no TensorFlow.

tfds' `cars196` builder downloads four files from a server that no longer
serves them. `ManualCars196` is that builder (same name, version 2.1.0,
features, keys and labels, so `tfds.data_source('cars196')` reads its
output) with the files taken from the manual directory instead, read with
`tarfile` / `scipy.io` rather than `tf.io.gfile`:

  cars_train.tgz                  8,144 training JPEGs (cars_train/00001.jpg ...)
  cars_test.tgz                   8,041 test JPEGs (cars_test/00001.jpg ...)
  car_devkit.tgz                  devkit/cars_train_annos.mat (train labels, boxes)
  cars_test_annos_withlabels.mat  test labels and boxes

The archives may also be given unpacked: folders `cars_train/` and
`cars_test/` of JPEGs (nested one level, as some mirrors ship them, is
fine) and `devkit/cars_train_annos.mat` (or `cars_train_annos.mat`). A
mirror's renamed copy such as "cars_test_annos_withlabels (1).mat" must be
renamed to cars_test_annos_withlabels.mat.

Each example is tfds' (2.1.0): 'image' (the JPEG as it is), 'label' (class
- 1 of the .mat, 196 names), 'bbox' (bbox_y1 / height, bbox_x1 / width,
bbox_y2 / height, bbox_x2 / width, clipped to [0, 1]), 'id' (file stem).

  python -m flax_attn.data prepare cars196 --manual_dir DIR
"""
from __future__ import annotations

import io
import os
import tarfile
from typing import Any, Dict, Iterator, List, Tuple

from etils import epath
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.image_classification import cars196 as tfds_cars196

LAYOUT = ('cars_train.tgz and cars_test.tgz (or their folders cars_train/ '
          'and cars_test/ of JPEGs), car_devkit.tgz (or '
          'devkit/cars_train_annos.mat) and cars_test_annos_withlabels.mat '
          '(the Stanford Cars files, '
          'https://ai.stanford.edu/~jkrause/cars/car_dataset.html)')

# Where each piece may be, relative to the manual directory, first match
# wins; 'car_devkit.tgz' is read at its member devkit/cars_train_annos.mat.
CANDIDATES = {
    'train_images': ('cars_train.tgz', 'cars_train'),
    'test_images': ('cars_test.tgz', 'cars_test'),
    'train_annotations': ('car_devkit.tgz', 'devkit/cars_train_annos.mat',
                          'cars_train_annos.mat'),
    'test_annotations': ('cars_test_annos_withlabels.mat',),
}
_DEVKIT_MEMBER = 'devkit/cars_train_annos.mat'


def locate_files(manual_dir: str) -> Dict[str, str]:
  """{piece: path} of the four pieces; fails in one line naming the absent
  ones and the layout."""
  found, missing = {}, []
  for piece, names in CANDIDATES.items():
    paths = [os.path.join(manual_dir, n) for n in names]
    present = [p for p in paths if os.path.exists(p)]
    if present:
      found[piece] = present[0]
    else:
      missing.append(' or '.join(names))
  if missing:
    raise FileNotFoundError(f'cars196: missing {"; ".join(missing)} in '
                            f'{manual_dir}; the directory needs {LAYOUT}')
  return found


def missing_files(manual_dir: str) -> List[str]:
  """The pieces absent from `manual_dir`, as names."""
  return [' or '.join(names) for names in CANDIDATES.values()
          if not any(os.path.exists(os.path.join(manual_dir, n))
                     for n in names)]


def _read_mat_bytes(path: str) -> bytes:
  if path.endswith('.tgz') or path.endswith('.tar.gz'):
    with tarfile.open(path, 'r:*') as archive:
      for member in archive:
        if member.name.lstrip('./') == _DEVKIT_MEMBER:
          return archive.extractfile(member).read()
    raise FileNotFoundError(f'cars196: {path} has no member {_DEVKIT_MEMBER}')
  with open(path, 'rb') as f:
    return f.read()


def read_annotations(path: str) -> Dict[str, Tuple[float, float, float,
                                                    float, int]]:
  """{file stem: (x1, y1, x2, y2, class index 0..195)} of an annotation
  .mat (its struct 'annotations' with fields bbox_x1, bbox_y1, bbox_x2,
  bbox_y2, class, fname, as tfds reads them by position)."""
  from scipy import io as scipy_io  # pylint: disable=g-import-not-at-top
  mat = scipy_io.loadmat(io.BytesIO(_read_mat_bytes(path)))
  out = {}
  for example in mat['annotations'][0]:
    stem = os.path.splitext(str(example[-1].item()))[0]
    x1, y1, x2, y2 = (float(example[i].item()) for i in range(4))
    out[stem] = (x1, y1, x2, y2, int(example[4].item()) - 1)
  return out


def iter_images(path: str) -> Iterator[Tuple[str, bytes]]:
  """(file stem, JPEG bytes) of every .jpg in an archive or folder tree."""
  if os.path.isdir(path):
    for root, _, names in sorted(os.walk(path)):
      for name in sorted(names):
        if name.lower().endswith('.jpg'):
          with open(os.path.join(root, name), 'rb') as f:
            yield os.path.splitext(name)[0], f.read()
    return
  with tarfile.open(path, 'r|*') as archive:  # streamed, one pass
    for member in archive:
      if member.isfile() and member.name.lower().endswith('.jpg'):
        name = os.path.basename(member.name)
        yield os.path.splitext(name)[0], archive.extractfile(member).read()


def _clip(value: float) -> float:
  return min(1.0, max(0.0, value))


class ManualCars196(tfds_cars196.Cars196, skip_registration=True):
  """tfds' cars196, its files from the manual directory (module docstring)."""

  name = 'cars196'
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f'Place in the manual directory (--manual_dir, default '
      f'<data_dir>/downloads/manual): {LAYOUT}.')
  # tfds derives this from the package through importlib_resources, which
  # tfds does not install; the file itself is what it wants.
  code_path = epath.Path(__file__)

  def _split_generators(self, dl_manager):
    files = locate_files(os.fspath(dl_manager.manual_dir))
    return {
        'train': self._generate_examples(
            'train', files['train_images'], files['train_annotations']),
        'test': self._generate_examples(
            'test', files['test_images'], files['test_annotations']),
    }

  def _generate_examples(self, split_name: str, images_path: str,
                         annotations_path: str
                         ) -> Iterator[Tuple[str, Dict[str, Any]]]:
    annotations = read_annotations(annotations_path)
    seen = set()
    for stem, data in iter_images(images_path):
      if stem not in annotations:
        continue
      x1, y1, x2, y2, label = annotations[stem]
      with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
      seen.add(stem)
      yield stem, {
          'image': data,
          'label': label,
          'bbox': tfds.features.BBox(_clip(y1 / height), _clip(x1 / width),
                                     _clip(y2 / height), _clip(x2 / width)),
          'id': stem,
      }
    absent = sorted(set(annotations) - seen)
    if absent:
      raise FileNotFoundError(
          f'cars196: {len(absent)} of the {len(annotations)} {split_name} '
          f'images annotated in {os.path.basename(annotations_path)} are '
          f'not in {images_path} (first: {absent[0]}.jpg)')

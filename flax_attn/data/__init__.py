"""Input pipelines: `tfds.data_source` + grain, no TensorFlow at train time.

  from flax_attn import data
  spec = data.get_dataset_spec('cifar10')      # num_classes, splits, mean/std
  data.list_datasets()                         # or: python -m flax_attn.data list
  steps_per_epoch = data.num_examples(config, 'train') // config.batch_size

  train_it = data.create_train_iterator(
      config, seed=config.seed, process_index=jax.process_index(),
      process_count=jax.process_count())
  batch = next(train_it)      # {'image': u8 (B, S, S, C), 'label': i32 (B,)}
  # In the jitted step: pixels (uint8, or float32 0-255) -> normalised f32.
  images = data.prepare_on_device(batch['image'], data.input_spec(config))
  state = train_it.get_state()                 # JSON-serialisable dict
  train_it.set_state(state)                    # continues with the same batches

  for batch in data.create_eval_iterator(      # finite; re-iterable
      config, batch_size=256, process_index=..., process_count=...):
    ...  # + 'mask': f32 (B,), 0.0 on padding; sum(mask) over processes = N

The config fields read: dataset, data_dir ('' = tfds default), image_size
(0 = native / the dataset's crop), batch_size (global), num_workers (grain
processes, 0 = in process), augment.{crop_padding, flip, rotation,
color_jitter, hue}; for variable-size datasets also (all optional)
augment.crop ('random_resized' | 'random' | 'center'; '' = the dataset's
default), augment.crop_scale ((0.08, 1.0)), augment.crop_ratio
((3/4, 4/3)), augment.crop_fraction (0.875: eval crop 224 of 256).

Datasets (`python -m flax_attn.data list` shows which are prepared):
cifar10, cifar100 (32x32); digits (ships with the package, for a quick
start); imagenet2012 (224 random-resized crops); mini_imagenet,
mini_imagenet_shuffled (84x84, the project's tfds builder,
mini_imagenet.py); caltech_birds2011, stanford_dogs, cars196 (fine-grained;
cars196 from manual files, cars196.py). Each is written once as
array_record files by `python -m flax_attn.data prepare NAME` (prepare.py).
Under `tfds.testing.mock_data(num_examples=N)` the tfds datasets read N
random examples per split through the same code path (importing this
package registers the mini_imagenet builder with tfds, so it mocks too).
"""
from flax_attn.data.specs import (DATASETS, DatasetSpec,  # noqa: F401
                                  get_dataset_spec, list_datasets,
                                  register_dataset)
from flax_attn.data import digits  # noqa: F401  (registers 'digits')
from flax_attn.data import mini_imagenet  # noqa: F401  (tfds builder)
from flax_attn.data.pipeline import (ArraySource,  # noqa: F401
                                     PaddedEvalBatches, PaddedEvalExamples,
                                     ShuffledBatches, ShuffledExamples,
                                     DatasetNotFoundError, EvalIterable,
                                     TfdsSource, create_eval_iterator,
                                     create_train_iterator, load_source,
                                     num_examples, per_process_batch_size,
                                     train_dataset)
from flax_attn.data import transforms  # noqa: F401
from flax_attn.data.device import (InputSpec, input_spec,  # noqa: F401
                                   prepare_on_device)

"""The tiny digits config the CLI tests run (see tests/test_train.py)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import default  # noqa: E402


def get_config():
  config = default.get_config()
  config.model = 'cifar_resnet8'
  config.model_kwargs.width = 4
  config.attn = 'se'
  config.dataset = 'digits'
  config.image_size = 8
  config.augment.crop_padding = 1
  config.augment.flip = False
  config.batch_size = 32
  config.num_train_steps = 400
  config.learning_rate = 0.05
  config.lr_schedule = 'cosine'
  config.log_every_steps = 20
  config.eval_every_steps = 200
  config.checkpoint_every_steps = 20
  config.progress_bar = False
  config.compilation_cache_dir = 'none'
  return config

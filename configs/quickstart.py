"""Quick start, offline: an SE-ResNet-20 on the handwritten digits that ship
with this package (1,797 real 8x8 scans, UCI, CC BY 4.0; see
flax_attn/data/digits/).

  python train.py --config configs/quickstart.py --workdir runs/quickstart
  python eval.py --config configs/quickstart.py --workdir runs/quickstart
"""
from configs import default


def get_config():
  config = default.get_config()
  config.model = 'resnet20'
  config.attn = 'se'
  config.dataset = 'digits'
  config.image_size = 8
  config.augment.crop_padding = 1   # small shifts; digits are not flip-invariant
  config.augment.flip = False
  config.batch_size = 64
  config.num_epochs = 30
  config.learning_rate = 0.1
  config.weight_decay = 5e-4
  config.lr_schedule = 'cosine'
  config.warmup_epochs = 1.0
  config.log_every_steps = 20
  config.eval_every_steps = 0       # once per epoch
  config.checkpoint_every_steps = 200
  return config

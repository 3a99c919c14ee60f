"""Default training configuration; every experiment config derives from it.

  python train.py --config configs/default.py --workdir /tmp/run \
      --config.model=seresnet18 --config.dataset=cifar10

Fields are locked: a mistyped `--config.field=value` fails.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  # Model: a name from flax_attn.list_models(), plus create_model overrides.
  config.model = 'resnet20'
  config.model_kwargs = ml_collections.ConfigDict()  # e.g. dict(width=8)
  config.attn = 'default'         # attention name, 'none', or the model's own
  config.attn_kwargs = ml_collections.ConfigDict()
  config.head = ''                # '' = the model's own; 'linear' | 'fcn'
  config.dtype = 'float32'        # compute dtype: float32 | bfloat16
  config.pretrained_path = ''     # orbax checkpoint to start the backbone from

  # Data: a name from `python -m flax_attn.data list`.
  config.dataset = 'cifar10'
  config.data_dir = ''            # tfds data_dir; '' = tfds default
  config.image_size = 32          # training / eval crop size
  config.augment = ml_collections.ConfigDict()
  config.augment.crop_padding = 4  # pad-and-random-crop (CIFAR); 0 = off
  config.augment.flip = True       # random horizontal flip
  config.augment.rotation = 0.0    # max degrees of random rotation; 0 = off
  config.augment.color_jitter = 0.0  # brightness/contrast/saturation strength
  config.augment.hue = 0.0         # max hue shift (fraction of a turn); 0 = off
  config.augment.crop = ''         # '' = dataset default; random_resized |
                                   # random | center (variable-size sets)
  config.num_workers = 0          # grain worker processes (0 = in-process)

  # Schedule and batch.
  config.batch_size = 128         # global, split across all devices
  config.eval_batch_size = 0      # 0 = batch_size
  config.num_epochs = 200
  config.num_train_steps = -1     # > 0 overrides num_epochs
  config.seed = 0
  config.num_devices = 0          # devices to shard the batch over; 0 = all
  # XLA:CPU devices a CPU host is split into (train.py / eval.py): -1 = one
  # per core (at most num_devices), one thread each, where every batch size
  # divides; 0 = XLA's single device on all cores; N = N.
  config.cpu_devices = -1
  # flax_attn/cpu_kernels.py (faster XLA:CPU convolutions and BatchNorm
  # backward; no forward-mode autodiff through them): 'auto' = on when the
  # devices are CPUs, 'on', 'off' (the plain flax / lax layers).
  config.cpu_kernels = 'auto'

  # Optimiser (optax).
  config.optimizer = 'sgd'        # sgd | adamw
  config.learning_rate = 0.1      # peak, for the global batch
  config.momentum = 0.9
  config.nesterov = False
  config.weight_decay = 5e-4
  config.weight_decay_mode = 'l2'  # l2 (added to the loss gradient) | decoupled
  config.lr_schedule = 'multistep'  # multistep | cosine | constant
  config.lr_boundaries_epochs = (50, 100, 150)  # multistep: decay epochs
  config.lr_decay_factor = 0.1
  config.warmup_epochs = 0.0
  config.label_smoothing = 0.0
  config.grad_clip_norm = 0.0     # 0 = off
  config.ema_decay = 0.0          # 0 = off; else evaluate the EMA weights

  # Logging, evaluation, checkpoints.
  config.log_every_steps = 50
  config.eval_every_steps = 0     # 0 = once per epoch
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3     # newest kept (>= 1), plus the last known
                                  # good one (WORKDIR/last_good.json)
  # Divergence guard: stop (nothing saved) at a non-finite loss, or one above
  # divergence_factor x the larger of the running median of the last 32 and
  # ln(num_classes) (chance level); 0 = only non-finite.
  config.divergence_factor = 10.0
  config.progress_bar = True
  config.compilation_cache_dir = ''  # '' = ~/.cache/flax_attn/jax

  return config

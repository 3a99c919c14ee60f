"""flax-attn: attention-augmented CNNs as pure-functional Flax modules.

  import flax_attn
  model = flax_attn.create_model('cbam_resnet50', num_classes=1000)
  variables = model.init(jax.random.key(0), images, train=False)
  logits = model.apply(variables, images, train=False)
"""
from flax_attn.attention import (NotABlockAttentionError, get_attention,  # noqa: F401
                                 list_attention)
# The trainer's CPU initialisation key (flax_attn/init_rng.py), kept importable
# for code written against earlier versions; use jax.random.key.
from flax_attn.init_rng import init_key  # noqa: F401
from flax_attn.models import create_model, extract_features, list_models  # noqa: F401
from flax_attn.registry import (UnknownNameError, register_attention,  # noqa: F401
                                register_model)

__version__ = '0.1.0'

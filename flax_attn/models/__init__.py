"""Backbones, heads and the model registry."""
from flax_attn.models.factory import (create_model, extract_features,  # noqa
                                      model_from_config,
                                      list_models)
from flax_attn.models.heads import HEADS, FCNHead, LinearHead  # noqa: F401
from flax_attn.models.resnet import BLOCKS, ResNet  # noqa: F401
from flax_attn.models import zoo  # noqa: F401,E402  (registers named models)

"""The training API under its original name: `from flax_attn import train`
keeps working. The code lives in flax_attn/training/ (one module per job);
new code imports `flax_attn.training`.

  from configs import quickstart
  from flax_attn import train
  train.train_and_evaluate(quickstart.get_config(), '/tmp/run')
  train.evaluate(quickstart.get_config(), '/tmp/run')
"""
from flax_attn import training
from flax_attn.training import *  # noqa: F401,F403 pylint: disable=W0401

__all__ = training.__all__

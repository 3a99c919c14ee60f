"""The training API under its original name: `from flax_attn import train`
keeps working. The code lives in flax_attn/training/ (one module per job);
new code imports `flax_attn.training`.

  from configs import quickstart
  from flax_attn import train
  train.train_and_evaluate(quickstart.get_config(), '/tmp/run')
  train.evaluate(quickstart.get_config(), '/tmp/run')
"""
from typing import Any, Dict, Optional

from flax_attn import training
from flax_attn.training import *  # noqa: F401,F403 pylint: disable=W0401

__all__ = training.__all__

# Private names that tests/test_faults.py still uses (to go when it moves to
# the public names).
_all_finite = training.all_finite


def _build(config, workdir: Optional[str] = None) -> Dict[str, Any]:
  """build_experiment(config) as the dict the old `_build` returned."""
  del workdir  # never used: the experiment does not depend on it
  exp = training.build_experiment(config)
  return {name: getattr(exp, name) for name in exp.__dataclass_fields__}

"""Training and evaluation, importable: train.py and eval.py only parse flags.

  from configs import quickstart
  from flax_attn import training
  training.train_and_evaluate(quickstart.get_config(), '/tmp/run')
  training.evaluate(quickstart.get_config(), '/tmp/run')

One module per job:

  state        TrainState, optimiser and schedule, mesh, config checks
  steps        the loss, the train step and the eval step
  guard        the divergence guard carried through the train step
  experiment   Experiment (model, mesh, shardings, initial state of a
               config) and the jitted steps built from it
  checkpoints  orbax manager, save / restore, writer with rotation and
               last-good, checksums and fallback restore
  pretrained   loading config.pretrained_path
  workdir      the workdir's lock and files, disk-fault messages
  metrics      metrics.jsonl, TensorBoard, progress bar
  loop         train_and_evaluate, with preemption
  evaluation   run_evaluation, restore_state, evaluate
"""
from flax_attn.training.checkpoints import (CheckpointWriter, all_finite,
                                            check_checkpoint_fits,
                                            checkpoint_config,
                                            create_checkpoint_manager,
                                            decode_iterator_state,
                                            encode_iterator_state,
                                            restore_checkpoint,
                                            restore_intact, restored_guard,
                                            save_checkpoint, state_handler,
                                            state_tree)
from flax_attn.training.evaluation import (evaluate, restore_state,
                                           run_evaluation)
from flax_attn.training.experiment import (Experiment, build_experiment,
                                           global_batch, jit_eval_step,
                                           jit_train_step)
from flax_attn.training.guard import (EMPTY, GUARD_WARMUP, GUARD_WINDOW,
                                      check_guard, guarded_train_step,
                                      init_guard, update_guard)
from flax_attn.training.loop import Preempted, train_and_evaluate
from flax_attn.training.metrics import MetricWriter, progress_bar
from flax_attn.training.pretrained import (FINE_GRAINED_DATASETS,
                                           load_pretrained,
                                           no_pretrained_warning)
from flax_attn.training.state import (DTYPES, OPTIMIZERS, SCHEDULES,
                                      WEIGHT_DECAY_MODES, TrainState,
                                      create_learning_rate_fn, create_mesh,
                                      create_optimizer, create_train_state,
                                      eval_batch_size, validate_config, warn)
from flax_attn.training.steps import (cross_entropy, eval_step, model_input,
                                      train_step)
from flax_attn.training.workdir import (HostFailureError, agree, disk_fault,
                                        locked_workdir, prepare_workdir,
                                        raise_everywhere, write_config)

__all__ = [
    'agree', 'all_finite', 'build_experiment', 'check_checkpoint_fits',
    'check_guard',
    'checkpoint_config', 'CheckpointWriter', 'create_checkpoint_manager',
    'create_learning_rate_fn', 'create_mesh', 'create_optimizer',
    'create_train_state', 'cross_entropy', 'decode_iterator_state',
    'disk_fault', 'DTYPES', 'EMPTY', 'encode_iterator_state',
    'eval_batch_size', 'eval_step', 'evaluate', 'Experiment',
    'FINE_GRAINED_DATASETS', 'global_batch', 'GUARD_WARMUP', 'GUARD_WINDOW',
    'guarded_train_step', 'HostFailureError', 'init_guard', 'jit_eval_step',
    'jit_train_step', 'load_pretrained', 'locked_workdir', 'MetricWriter',
    'model_input',
    'no_pretrained_warning', 'OPTIMIZERS', 'Preempted', 'prepare_workdir',
    'progress_bar', 'raise_everywhere', 'restore_checkpoint', 'restore_intact',
    'restore_state', 'restored_guard', 'run_evaluation', 'save_checkpoint',
    'SCHEDULES', 'state_handler', 'state_tree', 'train_and_evaluate',
    'train_step', 'TrainState', 'update_guard', 'validate_config', 'warn',
    'WEIGHT_DECAY_MODES', 'write_config',
]

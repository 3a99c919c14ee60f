"""Trains a model described by a config file.

  python train.py --config configs/quickstart.py --workdir runs/quickstart
  python train.py --config configs/hga_resnet50.py --workdir runs/hga \
      --config.batch_size=128 --config.learning_rate=0.3

Resumes from the latest checkpoint in --workdir; SIGTERM saves one and exits.

  python train.py --config configs/hga_resnet50.py --compile_for v5e-8

compiles the train step for a TPU slice on this machine (libtpu, no TPU)
and prints its memory per chip and whether it fits (flax_attn/tpu_fit.py).
"""
import sys

if __name__ == '__main__':
  # Before JAX is imported: flax_attn/runtime.py says what and why.
  import launch_env  # noqa: E402
  launch_env.before_imports()

from absl import app  # noqa: E402

from flax_attn import cli  # noqa: E402

cli.define_flags(workdir_required=False)
cli.define_compile_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  config = cli.FLAGS.config

  if cli.FLAGS.compile_for:  # compile-only for a TPU slice: no training
    from flax_attn import tpu_fit  # pylint: disable=g-import-not-at-top
    sys.exit(cli.run_main(lambda: tpu_fit.compile_for_main(
        config, cli.FLAGS.compile_for, cli.FLAGS.max_batch)))

  def body():
    import jax  # pylint: disable=g-import-not-at-top
    cli.start_jax(config, cli.FLAGS.multihost)
    from flax_attn import train  # pylint: disable=g-import-not-at-top
    result = train.train_and_evaluate(config, cli.FLAGS.workdir)
    if result and jax.process_index() == 0:
      print('final: ' + ' '.join(f'{k}={v:.4f}' if isinstance(v, float)
                                 else f'{k}={v}' for k, v in result.items()))
    return 0

  sys.exit(cli.run_main(body))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)

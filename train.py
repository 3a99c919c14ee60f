"""Trains a model described by a config file.

  python train.py --config configs/quickstart.py --workdir runs/quickstart
  python train.py --config configs/hga_resnet50.py --workdir runs/hga \
      --config.batch_size=128 --config.learning_rate=0.3

Resumes from the latest checkpoint in --workdir; SIGTERM saves one and exits.
"""
import sys

if __name__ == '__main__':
  # Before JAX is imported: flax_attn/runtime.py says what and why.
  import launch_env  # noqa: E402
  launch_env.before_imports()

from absl import app  # noqa: E402

from flax_attn import cli  # noqa: E402

cli.define_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  config = cli.FLAGS.config

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

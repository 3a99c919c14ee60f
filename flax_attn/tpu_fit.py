"""Compile a config's train step for a TPU slice without one: memory and fit.

  python train.py --config configs/hga_resnet50.py --compile_for v5e-8
  python train.py --config configs/quickstart.py --compile_for v2-8 --max_batch

  from flax_attn import tpu_fit
  report = tpu_fit.fit_report(config, 'v5e-8', max_batch=True)
  print(tpu_fit.format_report(report))

libtpu (the TPU runtime, `pip install "jax[tpu]"`) carries the TPU compiler
and a compile-only client: `jax.experimental.topologies.get_topology_desc`
returns devices for any TPU generation and slice shape, several hosts
included, and `jax.jit(step).lower(...).compile()` over a mesh of them runs
the real TPU compiler on this CPU. Its `memory_analysis()` is what the
program needs on each device (arguments, temporaries, outputs), its
`cost_analysis()` the FLOPs and bytes it moves. Nothing runs: there is no
time here, and none is claimed.

The step compiled is train.py's: the same model, optimiser, train state,
divergence guard, batch sharding over the 'data' axis, replicated state,
donation and dtype, at the config's global batch (split over the slice's
devices). No data set is read and nothing is written.

A "device" is what JAX sees: one chip on v4 / v5e / v5p / v6e (v4 and v5p as
megacore, as JAX runs them), one TensorCore on v2 / v3 (two per chip).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import math
import os
import re
import sys
import tempfile
import time
import types
from typing import Callable, Dict, Optional, Tuple

from flax_attn.errors import ConfigError, UserError

GIB = 1024 ** 3

# HBM per JAX device in GiB, from Google Cloud's TPU pages ("System
# architecture" of cloud.google.com/tpu/docs/v2, v3, v4, v5e, v5p, v6e):
# v2 16 GiB per chip and v3 32 GiB per chip, each split over its two
# TensorCores (one JAX device each); v4 32 GiB, v5e 16 GiB, v5p 95 GiB and
# v6e 32 GiB per chip (one JAX device each). The compiler's own limit is a
# little lower (it keeps some for itself); its out-of-memory message is
# reported as it gives it.
HBM_GIB_PER_DEVICE = {'v2': 8, 'v3': 16, 'v4': 32, 'v5e': 16, 'v5p': 95,
                      'v6e': 32}

# Cloud accelerator types: the number after the dash counts TensorCores on
# v2 / v3 / v4 / v5p (two per chip) and chips on v5e / v6e.
_CORES_IN_NAME = ('v2', 'v3', 'v4', 'v5p')
_SHAPES_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8),
              64: (8, 8), 128: (8, 16), 256: (16, 16)}
_SHAPES_3D = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4),
              64: (4, 4, 4), 128: (4, 4, 8), 256: (4, 8, 8), 512: (8, 8, 8)}
_CLOUD_SIZES = {
    'v2': (8, 32, 128, 256, 512),
    'v3': (8, 32, 64, 128, 256, 512),
    'v4': (8, 16, 32, 64, 128, 256, 512, 1024),
    'v5p': (8, 16, 32, 64, 128, 256, 512, 1024),
    'v5e': (1, 4, 8, 16, 32, 64, 128, 256),
    'v6e': (1, 4, 8, 16, 32, 64, 128, 256),
}
# v5e / v6e hosts of up to 8 chips hold the whole slice (ct5lp-hightpu-1t /
# -4t / -8t); larger slices, and every v2 / v3 / v4 / v5p slice, have 4
# chips per host (2x2x1), which is the compile-only topology's default.
_SINGLE_HOST_BOUNDS = {1: (1, 1, 1), 4: (2, 2, 1), 8: (2, 4, 1)}


@dataclasses.dataclass(frozen=True)
class Topology:
  """A TPU slice as `get_topology_desc` takes it."""
  name: str             # as the user wrote it
  generation: str       # key of HBM_GIB_PER_DEVICE
  jax_name: str         # e.g. 'v5e:2x4'
  chips: int
  chips_per_host_bounds: Optional[Tuple[int, int, int]]

  @property
  def platform(self) -> str:
    return 'cuda' if self.generation in GPU_TARGETS else 'tpu'

  @property
  def megacore(self) -> bool:
    return self.generation in ('v4', 'v5p')

  @property
  def devices_per_chip(self) -> int:
    return 2 if self.generation in ('v2', 'v3') else 1

  @property
  def hbm_bytes_per_device(self) -> int:
    if self.platform == 'cuda':
      return int(re.search(r'device_memory_size: (\d+)',
                           GPU_TARGETS[self.generation]).group(1))
    return HBM_GIB_PER_DEVICE[self.generation] * GIB


# GPUs, compile-only: XLA's target description of the GPU (the
# TargetConfig text of XLA's xla/tools/hlo_opt/gpu_specs, here an H100 SXM
# 80 GB: 132 SMs, compute capability 9.0, 79.1 GiB usable memory) stands in
# for the device; needs jax's CUDA plugin (pip install "jax[cuda12]"), no
# GPU and no driver. 'h100-N' = N GPUs on one host.
GPU_TARGETS = {'h100': """
gpu_device_info {
  threads_per_block_limit: 1024 threads_per_warp: 32
  shared_memory_per_block: 49152 shared_memory_per_core: 233472
  threads_per_core_limit: 2048 core_count: 132 fpus_per_core: 128
  block_dim_limit_x: 2147483647 block_dim_limit_y: 65535
  block_dim_limit_z: 65535 memory_bandwidth: 3352320000000
  l2_cache_size: 52428800 clock_rate_ghz: 1.98
  device_memory_size: 84929347584 shared_memory_per_block_optin: 232448
  cuda_compute_capability { major: 9 }
  registers_per_core_limit: 65536 registers_per_block_limit: 65536
}
platform_name: "CUDA"
dnn_version_info { major: 9 minor: 7 }
runtime_version { major: 12 minor: 8 }
device_description_str: "NVIDIA H100 80GB HBM3"
"""}
_GPU_COUNTS = (1, 2, 4, 8)


def valid_topologies() -> str:
  """The names `parse_topology` accepts, for error messages."""
  cloud = ', '.join(f'{g}-{"/".join(map(str, sizes))}'
                    for g, sizes in _CLOUD_SIZES.items())
  gpus = ', '.join(f'{g}-{"/".join(map(str, _GPU_COUNTS))}'
                  for g in GPU_TARGETS)
  return (f'Cloud names {cloud}, or JAX names GEN:SHAPE such as v5e:2x4, '
          'v4:2x2x4 (GEN one of ' + ', '.join(HBM_GIB_PER_DEVICE) + '); '
          f'GPUs (one host): {gpus}')


def parse_topology(name: str) -> Topology:
  """'v5e-8', 'v4-32', 'v5litepod-16' or 'v5e:2x4' -> Topology; anything
  else raises ConfigError listing what is valid."""
  text = str(name).strip().lower().replace('v5litepod', 'v5e')
  cloud = re.fullmatch(r'(v\d+[a-z]?)-(\d+)', text)
  jax_style = re.fullmatch(r'(v\d+[a-z]?):(\d+(?:x\d+){1,2})', text)
  gpu = re.fullmatch(r'([a-z]\d+)-(\d+)', text)
  if gpu and gpu.group(1) in GPU_TARGETS and int(gpu.group(2)) in _GPU_COUNTS:
    count = int(gpu.group(2))
    return Topology(name, gpu.group(1), f'1x1x{count}', count, None)
  if cloud and int(cloud.group(2)) in _CLOUD_SIZES.get(cloud.group(1), ()):
    generation, count = cloud.group(1), int(cloud.group(2))
    chips = count // 2 if generation in _CORES_IN_NAME else count
    three_d = generation in ('v4', 'v5p')
    shape = (_SHAPES_3D if three_d else _SHAPES_2D)[chips]
    bounds = (_SINGLE_HOST_BOUNDS.get(chips)
              if generation in ('v5e', 'v6e') else None)
    return Topology(name, generation,
                    f'{generation}:{"x".join(map(str, shape))}', chips,
                    bounds)
  if jax_style and jax_style.group(1) in HBM_GIB_PER_DEVICE:
    generation, shape = jax_style.group(1), jax_style.group(2)
    dims = tuple(int(d) for d in shape.split('x'))
    if (len(dims) == 3) == (generation in ('v4', 'v5p')) and all(dims):
      chips = math.prod(dims)
      # A single chip is its own host; get_topology_desc's default host
      # (2x2x1) does not fit inside it.
      bounds = (1, 1, 1) if chips == 1 else None
      return Topology(name, generation, f'{generation}:{shape}', chips,
                      bounds)
  raise ConfigError(f'unknown TPU topology {name!r}; valid: '
                    f'{valid_topologies()}')


def _libtpu_missing() -> bool:
  return importlib.util.find_spec('libtpu') is None


def topology_devices(topology: Topology):
  """Compile-only devices of the slice (libtpu's TPU client, no TPU)."""
  if topology.platform == 'cuda':
    return _gpu_devices(topology)
  if _libtpu_missing():
    raise UserError('compiling for a TPU needs libtpu, the TPU compiler: '
                    'pip install "jax[tpu]" (it runs on a CPU machine)')
  if not _tpu_chips_attached():
    # libtpu takes /tmp/libtpu_lockfile, one process per machine, to guard
    # the chips; compile-only touches none, and without this a second
    # compile (a test worker, another shell) fails to load libtpu.
    os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  kwargs = {}
  if topology.chips_per_host_bounds:
    kwargs['chips_per_host_bounds'] = topology.chips_per_host_bounds
  if topology.megacore:
    kwargs['chip_config_name'] = 'megacore'
  with _quiet_stderr():
    return topologies.get_topology_desc(topology.jax_name, 'tpu',
                                        **kwargs).devices


def _gpu_devices(topology: Topology):
  """Compile-only CUDA devices from GPU_TARGETS' description (no GPU)."""
  if importlib.util.find_spec('jax_plugins.xla_cuda12') is None:
    raise UserError(f'compiling for {topology.name} needs jax\'s CUDA '
                    'plugin: pip install "jax[cuda12]" (no GPU needed)')
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  return topologies.get_topology_desc(
      '', 'cuda', topology=topology.jax_name,
      target_config=GPU_TARGETS[topology.generation]).devices


@contextlib.contextmanager
def _quiet_stderr():
  """Holds back what C++ writes to stderr (file descriptor 2) meanwhile,
  and writes it out only if the block raises: libtpu, loaded on a machine
  with no TPU, prints five lines of warnings about the TPU VM it is not on
  (accelerator type, worker hostnames)."""
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, ValueError):  # no real stderr (e.g. a notebook kernel)
    yield
    return
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    try:
      yield
    except BaseException:
      os.dup2(saved, 2)
      held.seek(0)
      os.write(2, held.read())
      raise
    finally:
      os.dup2(saved, 2)
      os.close(saved)


# ---------------------------------------------------------------------------
# The train step, as train.py builds it
# ---------------------------------------------------------------------------
# The very step train.py runs: flax_attn.training builds it (build_experiment
# with abstract state on the compile-only devices, jit_train_step with its
# shardings and donation).

# Nominal schedule length: data_lib.num_examples would read the prepared
# data; the schedule's constants do not change the compiled program's shape
# or memory.
_NOMINAL_STEPS_PER_EPOCH = 1000


def _experiment_for(config, devices, model=None):
  from flax_attn import training  # pylint: disable=g-import-not-at-top
  return training.build_experiment(
      config, devices=devices, abstract=True, model=model,
      train_examples=config.batch_size * _NOMINAL_STEPS_PER_EPOCH)


def _jitted_step(exp, config):
  from flax_attn import training  # pylint: disable=g-import-not-at-top
  return training.jit_train_step(exp, config)


def _abstract_batch(exp, config, global_batch: int):
  """The batch the train step is given: one place for its dtypes. The input
  pipeline hands over uint8 pixels (normalised inside the step) for every
  recipe except fixed-size ones with rotation or colour jitter (float32 on
  the 0-255 scale: 4x the image bytes, a negligible share of a step's
  memory); int32 labels."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  image_shape = (config.image_size, config.image_size, exp.spec.channels)
  return {
      'image': jax.ShapeDtypeStruct((global_batch,) + image_shape,
                                    jnp.uint8, sharding=exp.batch_sharding),
      'label': jax.ShapeDtypeStruct((global_batch,), jnp.int32,
                                    sharding=exp.batch_sharding),
  }


def _abstract_guard(exp):
  import jax  # pylint: disable=g-import-not-at-top
  from flax_attn import train  # pylint: disable=g-import-not-at-top
  return jax.tree_util.tree_map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                     sharding=exp.replicated),
      jax.eval_shape(train.init_guard))


# ---------------------------------------------------------------------------
# Compiling and the report
# ---------------------------------------------------------------------------


class DoesNotFitError(UserError):
  """The step needs more memory per device than the slice has."""


@dataclasses.dataclass
class FitReport:
  """The compiler's figures for one config on one slice, per device."""
  config_name: str
  topology: str
  jax_topology: str
  chips: int
  devices: int
  hosts: int
  global_batch: int
  per_device_batch: int
  argument_bytes: int
  temporary_bytes: int
  output_bytes: int
  alias_bytes: int
  code_bytes: int
  total_bytes: int      # arguments + outputs - aliased + temporaries + code
  hbm_bytes: int
  fits: bool
  # The whole train step (forward, backward, update); None where the
  # compiler gives no cost analysis (XLA:GPU without a device).
  flops_per_image: Optional[float]
  bytes_accessed_per_device: Optional[float]
  compile_seconds: float
  compiler_message: str = ''  # the compiler's out-of-memory line, if any
  max_per_device_batch: Optional[int] = None
  max_batch_note: str = ''

  def as_dict(self) -> Dict[str, object]:
    return dataclasses.asdict(self)


@dataclasses.dataclass
class _Compiled:
  memory: object
  flops: Optional[float]
  bytes_accessed: Optional[float]
  seconds: float
  oom_message: str = ''


_OOM = re.compile(r'(RESOURCE_EXHAUSTED|[Rr]an out of memory|Exceeded hbm)')


def _oom_line(message: str) -> str:
  """The compiler's out-of-memory message, as one line (its figures are
  what the program needs and what the compiler can give it, per device)."""
  lines = [l for l in message.splitlines() if 'memory' in l.lower()
           or 'hbm' in l.lower()] or [message]
  line = ' '.join(lines[0].split())
  return re.sub(r'^(\w+: )?RESOURCE_EXHAUSTED: ', '', line).rstrip('.')[:400]


def _compile(exp, config, global_batch: int) -> _Compiled:
  import jax  # pylint: disable=g-import-not-at-top
  step = _jitted_step(exp, config)
  with jax.set_mesh(exp.mesh):
    lowered = step.lower(exp.state, _abstract_guard(exp),
                         _abstract_batch(exp, config, global_batch))
  start = time.perf_counter()
  try:
    compiled = lowered.compile()
  except Exception as e:  # pylint: disable=broad-except
    if _OOM.search(str(e)):
      return _Compiled(None, 0.0, 0.0, time.perf_counter() - start,
                       _oom_line(str(e)))
    raise
  seconds = time.perf_counter() - start
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per program
    cost = cost[0] if cost else {}
  # None: XLA:GPU compiling without a device gives no cost analysis.
  flops = cost.get('flops') if cost else None
  moved = cost.get('bytes accessed') if cost else None
  return _Compiled(compiled.memory_analysis(),
                   None if flops is None else float(flops),
                   None if moved is None else float(moved), seconds)


def _total(memory) -> int:
  return (memory.argument_size_in_bytes + memory.output_size_in_bytes
          - memory.alias_size_in_bytes + memory.temp_size_in_bytes
          + memory.generated_code_size_in_bytes)


def _config_name(config) -> str:
  return str(config.get('name', '') or config.get('model', ''))


def _check_batch(config, topology: Topology, devices: int) -> None:
  batch = config.batch_size
  if not isinstance(batch, int) or batch <= 0:
    raise ConfigError(f'config.batch_size={batch!r} must be a positive '
                      'integer')
  if batch % devices:
    hint = devices * max(1, round(batch / devices))
    raise ConfigError(f'config.batch_size={batch} does not divide over the '
                      f'{devices} devices of {topology.name} '
                      f'({topology.jax_name}); try {hint}')


def fit_report(config, topology: str, *, max_batch: bool = False,
               log: Optional[Callable[[str], None]] = None,
               model=None) -> FitReport:
  """Compiles train.py's step for `config` on `topology` (compile-only).

  Args:
    config: a training config (configs/*.py); its batch_size is global.
    topology: 'v5e-8', 'v4-32', 'v5e:2x4', ... (see parse_topology).
    max_batch: also find the largest per-device batch that fits (each probe
      is one compile: a few minutes for a ResNet-50 on 2 cores).
    log: called with one line per probe compile (progress), if given.
    model: a flax module to train instead of the config's model (the
      benchmarks compare a plain flax.linen ResNet-50 this way).

  Returns a FitReport; `fits` is False (and `compiler_message` says why)
  when the compiler ran out of memory or the program's total exceeds the
  device's HBM. Raises ConfigError for an unknown topology or a batch that
  does not divide over the devices.
  """
  slice_ = parse_topology(topology)
  _check_batch(config, slice_, slice_.chips * slice_.devices_per_chip)
  devices = topology_devices(slice_)
  exp = _experiment_for(config, devices, model)
  hbm = slice_.hbm_bytes_per_device
  per_device = config.batch_size // len(devices)
  result = _compile(exp, config, config.batch_size)
  report = _report(config, slice_, devices, per_device, result, hbm)
  if log:
    log(_probe_line(report.per_device_batch, result, hbm))
  if max_batch:
    report.max_per_device_batch, report.max_batch_note = _largest_batch(
        exp, config, len(devices), hbm, per_device, result, log)
  return report


def _report(config, slice_, devices, per_device, result, hbm) -> FitReport:
  memory = result.memory
  sizes = dict(argument_bytes=0, temporary_bytes=0, output_bytes=0,
               alias_bytes=0, code_bytes=0, total_bytes=0)
  if memory is not None:
    sizes = dict(argument_bytes=memory.argument_size_in_bytes,
                 temporary_bytes=memory.temp_size_in_bytes,
                 output_bytes=memory.output_size_in_bytes,
                 alias_bytes=memory.alias_size_in_bytes,
                 code_bytes=memory.generated_code_size_in_bytes,
                 total_bytes=_total(memory))
  fits = memory is not None and sizes['total_bytes'] <= hbm
  return FitReport(
      config_name=_config_name(config), topology=slice_.name,
      jax_topology=slice_.jax_name, chips=slice_.chips, devices=len(devices),
      hosts=len({d.process_index for d in devices}),
      global_batch=per_device * len(devices), per_device_batch=per_device,
      hbm_bytes=hbm, fits=fits,
      flops_per_image=(result.flops / per_device
                       if result.flops is not None and per_device else None),
      bytes_accessed_per_device=result.bytes_accessed,
      compile_seconds=result.seconds, compiler_message=result.oom_message,
      **sizes)


def _fits(result, hbm) -> bool:
  return result.memory is not None and _total(result.memory) <= hbm


def _probe_line(batch, result, hbm) -> str:
  if result.memory is None:
    return (f'per-device batch {batch}: does not fit ({result.oom_message}) '
            f'[{result.seconds:.0f} s]')
  return (f'per-device batch {batch}: {_gib(_total(result.memory))} of '
          f'{_gib(hbm)} [{result.seconds:.0f} s]')


# Per-device batches above this are not probed: XLA's compile time grows
# with the batch (a width-4 ResNet-8 took 129 s at 2048 images per device on
# 2 cores), and no config here trains near it.
MAX_BATCH_LIMIT = 4096


def _granule(batch: int) -> int:
  return 8 if batch >= 64 else 1


def _largest_batch(exp, config, devices, hbm, start, first, log,
                   limit: int = MAX_BATCH_LIMIT) -> Tuple[int, str]:
  """Largest per-device batch that compiles within HBM (at most `limit`).

  Memory grows almost linearly with the batch, so each probe goes where a
  line through the two nearest measured totals crosses HBM (a little past
  it while no failing batch is known), then bisects: a few compiles instead
  of a doubling ladder. Batches of 64 and more are searched in steps of 8.
  """
  totals: Dict[int, Optional[int]] = {}

  def probe(batch: int) -> bool:
    if batch not in totals:
      result = first if batch == start else _compile(exp, config,
                                                     batch * devices)
      totals[batch] = (_total(result.memory) if result.memory is not None
                       else None)
      if log and batch != start:
        log(_probe_line(batch, result, hbm))
    return totals[batch] is not None and totals[batch] <= hbm

  def crossing(a: int, b: int) -> Optional[float]:
    ta, tb = totals.get(a), totals.get(b)
    if ta is None or tb is None or tb <= ta:
      return None
    return a + (hbm - ta) * (b - a) / (tb - ta)

  lo, hi = 0, None
  if probe(start):
    lo = start
  else:
    hi = start
  while True:
    if hi is not None and hi - lo <= _granule(lo):
      break
    if hi is None:  # no failing batch yet: extrapolate upwards
      if lo >= limit:
        return lo, f'fits at {lo}, the search limit'
      fitting = sorted(b for b, t in totals.items()
                       if t is not None and t <= hbm)
      line = crossing(fitting[-2], lo) if len(fitting) > 1 else None
      guess = 2 * lo if line is None else int(line * 1.05)
      guess = min(limit, max(lo + _granule(lo), guess))
    elif lo == 0:  # only failures: halve
      guess = hi // 2
      if guess < 1:
        return 0, 'not even 1 image per device fits'
    else:
      line = crossing(lo, hi)
      guess = (lo + hi) // 2 if line is None else int(line)
    granule = _granule(guess)
    if hi is not None and lo:
      guess = max(lo + granule, min(hi - granule, guess // granule * granule))
    if probe(guess):
      lo = guess
    else:
      hi = guess
  step = _granule(lo)
  return lo, (f'fits at {lo}, not at {hi}' +
              (f' (searched in steps of {step})' if step > 1 else ''))


def _gib(n: float) -> str:
  return f'{n / GIB:.2f} GiB' if n >= GIB / 10 else f'{n / 1024 ** 2:.1f} MiB'


def format_report(report: FitReport) -> str:
  """The report as the one table train.py --compile_for prints."""
  unit = ('GPU' if report.jax_topology.startswith('1x1x') else 'chip'
          if report.devices == report.chips else 'device (TensorCore)')
  rows = [
      ('config', report.config_name),
      ('topology', f'{report.topology} = {report.jax_topology}: '
                   f'{report.chips} {"GPUs" if unit == "GPU" else "chips"}, '
                   f'{report.devices} devices, {report.hosts} host(s)'),
      ('batch', f'{report.global_batch} global, {report.per_device_batch} '
                f'per {unit}'),
      (f'arguments / {unit}', _gib(report.argument_bytes)),
      (f'temporaries / {unit}', _gib(report.temporary_bytes)),
      (f'outputs / {unit}', _gib(report.output_bytes)
       + (f' ({_gib(report.alias_bytes)} in donated arguments)'
          if report.alias_bytes else '')),
      (f'total / {unit}', f'{_gib(report.total_bytes)} of '
                          f'{_gib(report.hbm_bytes)} HBM'),
      ('fits', ('yes' if report.fits else 'NO')
       + (f' ({report.compiler_message})' if report.compiler_message
          else '')),
      ('train-step FLOPs / image',
       'not given (XLA:GPU has no cost analysis without a device)'
       if report.flops_per_image is None else
       f'{report.flops_per_image:.3g} (forward, backward and update, the '
       'compiler\'s count)'),
      ('compile', f'{report.compile_seconds:.1f} s'),
  ]
  if report.max_per_device_batch is not None:
    rows.append((f'largest batch / {unit}',
                 f'{report.max_per_device_batch} ({report.max_batch_note})'))
  width = max(len(k) for k, _ in rows)
  return '\n'.join(f'{k:<{width}}  {v}' for k, v in rows)


def does_not_fit_line(report: FitReport) -> str:
  """One line: what the step needs per device and what the slice has."""
  needed = (f'the TPU compiler: {report.compiler_message}'
            if report.compiler_message else
            f'it needs {_gib(report.total_bytes)} per device')
  return (f'{report.config_name} at batch {report.global_batch} '
          f'({report.per_device_batch} per device) does not fit '
          f'{report.topology} ({_gib(report.hbm_bytes)} HBM per device): '
          f'{needed}; try a smaller config.batch_size, a larger slice or '
          '--max_batch')


# ---------------------------------------------------------------------------
# Start-up: libtpu installed on a machine with no TPU
# ---------------------------------------------------------------------------


def _tpu_chips_attached() -> bool:
  """Whether a TPU chip is on this machine's PCI bus (Google's vendor id,
  0x1ae0), without loading libtpu; /dev/accel* and /dev/vfio are the TPU
  VM device nodes."""
  import glob  # pylint: disable=g-import-not-at-top
  for vendor in glob.glob('/sys/bus/pci/devices/*/vendor'):
    try:
      with open(vendor) as f:
        if f.read().strip() == '0x1ae0':
          return True
    except OSError:
      continue
  return bool(glob.glob('/dev/accel*'))


def _gpu_attached() -> bool:
  import glob  # pylint: disable=g-import-not-at-top
  return bool(glob.glob('/dev/nvidia[0-9]*') or os.path.exists('/dev/kfd'))


def skip_absent_tpu() -> Optional[str]:
  """Keeps JAX from starting the TPU runtime where libtpu is installed but no
  TPU is attached; call before JAX initialises its backends (before the
  first jax.devices() / computation; importing jax is fine).

  With libtpu installed and JAX_PLATFORMS unset, JAX starts the TPU backend
  on every start; on a machine without one it fails after printing five
  lines of libtpu warnings to stderr. Where no TPU chip and no GPU device is
  attached, this sets JAX's platforms to 'cpu'. Compiling for a TPU
  (get_topology_desc) does not need the TPU backend and still works. An
  explicit JAX_PLATFORMS, or a jax_platforms already set, is left alone.
  Returns the platforms it set, or None.
  """
  if os.environ.get('JAX_PLATFORMS') or _libtpu_missing():
    return None
  if _tpu_chips_attached() or _gpu_attached():
    return None
  import jax  # pylint: disable=g-import-not-at-top
  if jax.config.jax_platforms:
    return None
  jax.config.update('jax_platforms', 'cpu')
  return 'cpu'


def compile_for_main(config, topology: str, max_batch: bool = False) -> int:
  """train.py --compile_for: the table on stdout and 0 when the step fits;
  DoesNotFitError (one line: needed and available bytes) when it does not."""
  prepare_compile_only(topology)
  log = None
  if max_batch:
    log = lambda line: print(line, file=sys.stderr, flush=True)  # pylint: disable=unnecessary-lambda-assignment
  report = fit_report(config, topology, max_batch=max_batch, log=log)
  if not report.fits:
    line = does_not_fit_line(report)
    if report.max_per_device_batch:
      line += (f'; the largest per-device batch that fits is '
               f'{report.max_per_device_batch}')
    raise DoesNotFitError(line)
  print(format_report(report), flush=True)
  return 0


def prepare_compile_only(topology: str) -> None:
  """Before JAX starts its backends, in a process that compiles for
  `topology` without its hardware: no TPU runtime start where there is no
  TPU (skip_absent_tpu); for a GPU target, jax's CUDA plugin registered
  without the driver check it would fail here (no GPU, no driver) and the
  CUDA backend not started."""
  if parse_topology(topology).platform == 'cuda':
    os.environ.setdefault('JAX_SKIP_CUDA_CONSTRAINTS_CHECK', '1')
    if not _gpu_attached() and not os.environ.get('JAX_PLATFORMS'):
      import jax  # pylint: disable=g-import-not-at-top
      jax.config.update('jax_platforms', 'cpu')
      return
  skip_absent_tpu()

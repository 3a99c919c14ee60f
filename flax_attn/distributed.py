"""Several JAX processes (one per host) training one model.

JAX's multi-controller runtime (`jax.distributed`) is the engine: every
process runs the same program on its own devices, and `jit` collectives
join them. This module is what train.py / eval.py add on top:

* `initialize`: the coordinator address, process count and id from flags
  (or JAX's cluster detection: TPU pods, SLURM, Open MPI, Kubernetes),
  checked first, so misuse fails with one line naming the value; Gloo
  collectives on CPU hosts (the same code on a laptop).
* `share_compilation_cache`: the persistent compilation cache used so that
  it cannot stall a step. JAX writes cache entries from process 0 only and
  hashes, on CPU, the local client's topology fingerprint into every key,
  which differs per process: process 0 hit its warm cache while process 1
  missed and compiled for minutes, and process 0's collective timed out
  waiting for it. flax_attn.runtime makes the CPU key the same in every
  process (`share_compilation_cache_keys`), and a cache directory that
  not every process can see is switched off on all of them, since a
  process that cannot read process 0's entries would always compile alone.

The data each process reads is its slice of the same global batch
(flax_attn/data/pipeline.py); checkpoints are written by all processes
together, each its own part (orbax), and restore on any number of them.
"""
from __future__ import annotations

import os
import sys
import threading
import uuid
from typing import Optional

from flax_attn.errors import ConfigError
from flax_attn.runtime import share_compilation_cache_keys

# Seconds a process waits for the coordinator (and for the others to join).
DEFAULT_TIMEOUT_S = 300
_KEY_PREFIX = 'flax_attn'


def parse_address(address: str) -> tuple:
  """'HOST:PORT' -> (host, port); anything else is a ConfigError."""
  host, sep, port = str(address).rpartition(':')
  if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise ConfigError(f'--coordinator_address={address!r} is not HOST:PORT '
                      '(e.g. 10.0.0.1:1234, process 0\'s host and a free port)')
  return host, int(port)


def check_arguments(coordinator_address: Optional[str],
                    num_processes: Optional[int],
                    process_id: Optional[int], timeout_s: int) -> None:
  """One-line ConfigErrors for values JAX would reject with a traceback
  (or wait on for minutes). None = let JAX detect it from the cluster."""
  if coordinator_address is not None:
    parse_address(coordinator_address)
  if num_processes is not None:
    if num_processes < 1:
      raise ConfigError(f'--num_processes={num_processes} must be positive')
    if num_processes == 1:
      raise ConfigError('--num_processes=1 with --multihost: one process '
                        'needs no coordinator; drop --multihost (or start '
                        'N >= 2 processes with --num_processes=N)')
  if process_id is not None:
    if num_processes is not None and not 0 <= process_id < num_processes:
      raise ConfigError(f'--process_id={process_id} is out of range for '
                        f'--num_processes={num_processes}; valid: 0 to '
                        f'{num_processes - 1}')
    if process_id < 0:
      raise ConfigError(f'--process_id={process_id} must be >= 0')
  if timeout_s <= 0:
    raise ConfigError(f'--coordinator_timeout={timeout_s} must be a positive '
                      'number of seconds')


def initialize(coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None,
               process_id: Optional[int] = None,
               timeout_s: int = DEFAULT_TIMEOUT_S) -> None:
  """`jax.distributed.initialize` with checked arguments and one-line
  failures. Call before anything touches a JAX backend."""
  check_arguments(coordinator_address, num_processes, process_id, timeout_s)
  import jax  # pylint: disable=g-import-not-at-top
  # XLA:CPU's cross-process collectives (JAX's default today; explicit so
  # a CPU host always has some).
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  where = coordinator_address or os.environ.get('JAX_COORDINATOR_ADDRESS')
  # JAX's client aborts the process (a C++ fatal error and a stack trace)
  # when the processes do not all connect in time; this watchdog says why
  # in one line and exits first.
  if process_id == 0:
    why = (f'not every one of the {num_processes} processes connected to '
           f'this one (process 0) at --coordinator_address={where}')
  elif process_id is None:
    why = (f'the processes did not all meet at the coordinator '
           f'({where or "detected from the cluster"})')
  else:
    why = (f'no coordinator (process 0) answered at --coordinator_address='
           f'{where}')
  done = threading.Event()

  def watchdog():
    if not done.wait(timeout_s):
      print(f'error: {why} within --coordinator_timeout={timeout_s} s; start '
            'every process with the same --coordinator_address and '
            '--num_processes, and check the host and port', file=sys.stderr,
            flush=True)
      os._exit(2)  # pylint: disable=protected-access

  threading.Thread(target=watchdog, daemon=True,
                   name='flax_attn-coordinator-watchdog').start()
  try:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes,
                               process_id=process_id,
                               initialization_timeout=int(timeout_s) + 30)
  except (ValueError, TypeError, RuntimeError) as e:
    message = ' '.join(str(e).split())
    if 'coordinator_address should be defined' in message:
      raise ConfigError('--multihost: no cluster detected (TPU pod, SLURM, '
                        'Open MPI, Kubernetes); give --coordinator_address='
                        'HOST:PORT --num_processes=N --process_id=I') from e
    if 'must be defined' in message:
      raise ConfigError('--multihost: no cluster detected to give the '
                        f'process count and id ({message}); give '
                        '--num_processes=N --process_id=I') from e
    if any(s in message.upper() for s in ('DEADLINE', 'UNAVAILABLE',
                                          'TIMED OUT', 'TIMEOUT')):
      raise ConfigError(
          f'--coordinator_address={where}: the {num_processes or "N"} '
          f'processes did not all connect within --coordinator_timeout='
          f'{timeout_s} s; start every process (process 0 listens there) '
          f'and check the host and port ({message[:160]})') from e
    raise ConfigError(f'--multihost: jax.distributed.initialize failed: '
                      f'{message[:300]}') from e
  finally:
    done.set()


def _client():
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  return jax_distributed.global_state.client


def cache_is_shared(path: str, timeout_s: int = 120) -> Optional[int]:
  """None if every process sees a file process 0 writes into `path`, else
  the first process id that does not. Uses the coordinator's key-value
  store (no XLA collective, nothing to compile)."""
  import jax  # pylint: disable=g-import-not-at-top
  client = _client()
  count, me = jax.process_count(), jax.process_index()
  if client is None or count == 1:
    return None
  timeout_ms = int(timeout_s * 1000)
  token_key = f'{_KEY_PREFIX}/cache_token'
  if me == 0:
    token = uuid.uuid4().hex
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, f'.shared-{token}'), 'w') as f:
      f.write('flax_attn: is this directory shared by every process?\n')
    client.key_value_set(token_key, token)
  else:
    token = client.blocking_key_value_get(token_key, timeout_ms)
  marker = os.path.join(path, f'.shared-{token}')
  client.key_value_set(f'{_KEY_PREFIX}/cache_seen/{token}/{me}',
                       '1' if os.path.exists(marker) else '0')
  blind = None
  for process in range(count):
    seen = client.blocking_key_value_get(
        f'{_KEY_PREFIX}/cache_seen/{token}/{process}', timeout_ms)
    if seen != '1' and blind is None:
      blind = process
  if me == 0:
    try:
      os.remove(marker)
    except OSError:
      pass
  return blind


def share_compilation_cache(path: str) -> bool:
  """Keeps JAX's persistent compilation cache at `path` on only where it is
  safe with several processes; returns whether it is on."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() == 1:
    return True
  reason = None
  if not share_compilation_cache_keys():
    reason = ('cache keys differ per process on CPU (this JAX, or '
              'FLAX_ATTN_CACHE_KEY_PATCH=0)' if
              jax.devices()[0].platform == 'cpu' else None)
  if reason is None and '://' not in path:  # remote storage is shared
    blind = cache_is_shared(path)
    if blind is not None:
      reason = (f'process {blind} cannot see {path} (only process 0 '
                'writes entries); point config.compilation_cache_dir at a '
                'directory every host shares')
  if reason is None:
    return True
  jax.config.update('jax_compilation_cache_dir', None)
  jax.config.update('jax_enable_compilation_cache', False)
  if jax.process_index() == 0:
    print(f'compilation cache off: {reason}', file=sys.stderr, flush=True)
  return False

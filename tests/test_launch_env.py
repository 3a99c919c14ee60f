"""train.py / eval.py restart once with malloc on huge pages (launch_env)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = f'''
import os, sys
sys.path.insert(0, {ROOT!r})
import launch_env
launch_env.reexec_with_huge_pages()
print(os.environ.get('GLIBC_TUNABLES'), sys.argv[1:], '-u' in sys.orig_argv)
'''


def _run(tmp_path, **env_overrides):
  script = tmp_path / 'script.py'
  script.write_text(SCRIPT)
  env = {k: v for k, v in os.environ.items()
         if k not in ('GLIBC_TUNABLES', 'FLAX_ATTN_HUGEPAGES')}
  env.update(env_overrides)
  out = subprocess.run([sys.executable, '-u', str(script), '--a', 'b'],
                       env=env, capture_output=True, text=True, check=True)
  return out.stdout.strip().splitlines()


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc only')
def test_restarts_once_with_the_tunable_and_the_same_arguments(tmp_path):
  # One line: the first run re-executed itself before printing; the
  # interpreter flag (-u) and the arguments survive; other tunables stay.
  assert _run(tmp_path) == ["glibc.malloc.hugetlb=1 ['--a', 'b'] True"]
  assert _run(tmp_path, GLIBC_TUNABLES='glibc.malloc.check=0') == [
      "glibc.malloc.check=0:glibc.malloc.hugetlb=1 ['--a', 'b'] True"]


def test_can_be_turned_off(tmp_path):
  assert _run(tmp_path, FLAX_ATTN_HUGEPAGES='0') == ["None ['--a', 'b'] True"]

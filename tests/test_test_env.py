"""The test-wide set-up (conftest.py) gives this process 8 CPU devices and leaves the
subprocesses that tests start one, as a user's run has (run the suite without a device count
in XLA_FLAGS)."""
import os
import subprocess
import sys

import jax


def test_eight_devices_here_one_in_a_subprocess():
  assert jax.device_count() == 8
  proc = subprocess.run([sys.executable, "-c", "import jax; print(jax.device_count())"],
                        env=dict(os.environ), capture_output=True, text=True, check=True)
  assert proc.stdout.split()[-1] == "1", proc.stdout

"""Launchers build the commands a TPU job needs (dry run: nothing leaves this machine)."""
import subprocess
import sys

from tests.cli_utils import REPO


def test_gcloud_dry_run_prints_create_copy_and_run_on_all_workers():
  out = subprocess.run(
      [sys.executable, "launch/gcloud_tpu.py", "--name=tpu1", "--zone=us-west4-a",
       "--config=configs/sasrec.py:amazon_video", "--workdir=gs://b/run", "--create",
       "--dry_run", "--", "--config.train.num_epochs=5"],
      cwd=REPO, capture_output=True, text=True, timeout=60)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert len(lines) == 3
  assert lines[0].startswith("gcloud compute tpus tpu-vm create tpu1")
  assert "scp --recurse" in lines[1] and "--worker=all" in lines[1]
  assert "python -m recjax.main" in lines[2] and "--worker=all" in lines[2]
  assert "coordinator_address=auto" in lines[2] and "num_epochs=5" in lines[2]


def test_xm_sweep_values():
  # In a subprocess: xm_launch defines absl flags that recjax.main also defines.
  code = ("import sys; sys.path.insert(0, 'launch'); import xm_launch; "
          "print(xm_launch.sweep_values('optimizer.learning_rate=1e-3,3e-4'), "
          "xm_launch.sweep_values(''))")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == ("[{'optimizer.learning_rate': '1e-3'}, "
                                "{'optimizer.learning_rate': '3e-4'}] [{}]")

"""Multi-host training as 2 processes x 2 CPU devices on 127.0.0.1, against 1 process x 4."""
import os
import subprocess
import sys

import numpy as np
import portpicker

from recjax.train.metrics_writer import read_jsonl
from tests.cli_utils import REPO, run_main_env

ARGS = ["--config=configs/smoke.py", "--config.train.num_steps=8",
        "--config.train.checkpoint_every_steps=4", "--config.train.progress_bar=False"]


def _losses(workdir):
  return [r["train/loss"] for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))
          if "train/loss" in r]


def test_two_processes_match_one_process(tmp_path):
  single = tmp_path / "single"
  out = subprocess.run([sys.executable, "-m", "recjax.main", f"--workdir={single}", *ARGS],
                       env=run_main_env(devices=4), cwd=REPO, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]

  multi = tmp_path / "multi"
  port = portpicker.pick_unused_port()
  procs = [subprocess.Popen(
      [sys.executable, "-m", "recjax.main", f"--workdir={multi}", *ARGS,
       f"--config.distributed.coordinator_address=127.0.0.1:{port}",
       "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}"],
      env=run_main_env(devices=2), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(2)]
  outputs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]

  np.testing.assert_allclose(_losses(multi), _losses(single), rtol=1e-5)
  assert len(_losses(multi)) == 8  # only process 0 wrote metrics (no duplicate lines)
  assert "SASRec (test)" in outputs[0][0] and "SASRec (test)" not in outputs[1][0]
  # The checkpoint holds one data-iterator state per process.
  data_dir = multi / "checkpoints" / "8" / "data"
  states = sorted(f for f in os.listdir(data_dir) if f.endswith(".json"))
  assert states == ["process_0-of-2.json", "process_1-of-2.json"]

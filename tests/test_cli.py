"""`python -m recjax.main` / `recjax.evaluate` as a user runs them: results, signals, bad configs."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from recjax.train.metrics_writer import read_jsonl
from tests.cli_utils import REPO, run_main_env


def _main(workdir, *args, timeout=300):
  return subprocess.run([sys.executable, "-m", "recjax.main", "--config=configs/smoke.py",
                         f"--workdir={workdir}", *args], env=run_main_env(), cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)


def test_main_trains_and_prints_table_then_evaluate_reproduces_it(tmp_path):
  out = _main(tmp_path)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "SASRec (test)" in out.stdout and "Popularity (test)" in out.stdout
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["step"] == 20
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["train"]["num_steps"] == 20

  ev = subprocess.run([sys.executable, "-m", "recjax.evaluate", f"--workdir={tmp_path}",
                       "--split=test"], env=run_main_env(), cwd=REPO, capture_output=True,
                      text=True, timeout=300)
  assert ev.returncode == 0, ev.stderr[-3000:]
  evaluated = json.loads((tmp_path / "eval_step20_test.json").read_text())
  assert evaluated["ndcg@10"] == pytest.approx(results["test/ndcg@10"], abs=1e-6)
  assert "ndcg@10" in ev.stdout


def test_sigterm_saves_checkpoint_and_rerun_resumes(tmp_path):
  args = ["--config.train.num_steps=100000", "--config.train.checkpoint_every_steps=0",
          "--config.train.progress_bar=False"]
  proc = subprocess.Popen([sys.executable, "-m", "recjax.main", "--config=configs/smoke.py",
                           f"--workdir={tmp_path}", *args], env=run_main_env(), cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  metrics = tmp_path / "metrics.jsonl"
  deadline = time.time() + 240
  while time.time() < deadline and not (metrics.exists() and len(read_jsonl(metrics)) >= 5):
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  stdout, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 0, stderr[-3000:]
  assert "stopped by signal" in stdout
  saved = [int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()]
  assert len(saved) == 1 and saved[0] >= 5
  # Rerunning the same command resumes from the saved step.
  out = _main(tmp_path, f"--config.train.num_steps={saved[0] + 3}")
  assert out.returncode == 0, out.stderr[-3000:]
  steps = [r["step"] for r in read_jsonl(metrics) if "train/loss" in r]
  assert steps[-3:] == [saved[0] + 1, saved[0] + 2, saved[0] + 3]


@pytest.mark.parametrize("override, message", [
    ("--config.train.num_stepz=3", "num_stepz"),
    ("--config.data.dataset.name=no_such_dataset", "no_such_dataset"),
    ("--config.loss.name=hinge", "config.loss.name='hinge'"),
])
def test_bad_config_gets_a_clear_error(tmp_path, override, message):
  out = _main(tmp_path, override, timeout=120)
  assert out.returncode != 0
  assert message in out.stderr
  assert "Traceback" not in out.stderr

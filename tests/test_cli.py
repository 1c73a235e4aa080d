"""`python -m recjax.main` / `recjax.evaluate` as a user runs them: results, signals, bad configs."""
import json
import os
import shutil
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


def _evaluate(workdir, *args, timeout=300):
  return subprocess.run([sys.executable, "-m", "recjax.evaluate", f"--workdir={workdir}", *args],
                        env=run_main_env(), cwd=REPO, capture_output=True, text=True,
                        timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """One finished smoke run (checkpoints at steps 10 and 20) that the tests below reuse.

  Its dataset override adds a key the smoke spec does not set (`max_length`, 40 by default):
  a dotted override inside the free-form dataset spec.
  """
  workdir = tmp_path_factory.mktemp("smoke")
  out = _main(workdir, "--config.data.dataset.max_length=30")
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir, out


def test_main_trains_and_prints_table_then_evaluate_reproduces_it(trained):
  workdir, out = trained
  assert "SASRec (test)" in out.stdout and "Popularity (test)" in out.stdout
  results = json.loads((workdir / "results.json").read_text())
  assert results["step"] == 20
  config = json.loads((workdir / "config.json").read_text())
  assert config["train"]["num_steps"] == 20
  assert config["data"]["dataset"]["max_length"] == 30
  # The dataset summary is printed before training, the evaluated users with the table.
  assert out.stdout.index("users") < out.stdout.index("SASRec (test)")
  users, total = int(results["test/users"]), int(results["test/users_total"])
  assert f"evaluated {users:,} of {total:,} users (test)" in out.stdout

  ev = _evaluate(workdir, "--split=test")
  assert ev.returncode == 0, ev.stderr[-3000:]
  evaluated = json.loads((workdir / "eval_step20_test.json").read_text())
  assert evaluated["ndcg@10"] == pytest.approx(results["test/ndcg@10"], abs=1e-6)
  # The same table as recjax.main: the model's row and the popularity row, same figures.
  table = (workdir / "results.txt").read_text().strip().splitlines()
  rows = [line for line in ev.stdout.splitlines() if line.startswith(("SASRec", "Popularity"))]
  assert rows == table[2:] and len(rows) == 2


def test_evaluate_overrides_eval_keys_and_merges_its_file(trained, tmp_path):
  workdir, _ = trained
  shutil.copytree(workdir, tmp_path / "w")
  full = _evaluate(tmp_path / "w", "--split=test")
  assert full.returncode == 0, full.stderr[-3000:]
  path = tmp_path / "w" / "eval_step20_test.json"
  everyone = json.loads(path.read_text())
  assert everyone["users"] > 5
  (tmp_path / "w" / "eval_step20_test.json").write_text(json.dumps(dict(everyone, kept=1.0)))
  few = _evaluate(tmp_path / "w", "--split=test", "--eval=max_users=5",
                  "--eval=eval.exclude_history=true")
  assert few.returncode == 0, few.stderr[-3000:]
  merged = json.loads(path.read_text())
  assert merged["users"] == 5 and merged["kept"] == 1.0  # replaced, and the rest kept
  assert "evaluated 5 of" in few.stdout
  # The run's own config is untouched.
  assert json.loads((tmp_path / "w" / "config.json").read_text())["eval"]["max_users"] == 0
  # A tagged evaluation has its own file; the untagged one is left as it was.
  tagged = _evaluate(tmp_path / "w", "--split=test", "--tag=three_users", "--eval=max_users=3")
  assert tagged.returncode == 0, tagged.stderr[-3000:]
  assert json.loads((tmp_path / "w" / "eval_step20_test.three_users.json").read_text())[
      "users"] == 3
  assert json.loads(path.read_text()) == merged
  bad = _evaluate(tmp_path / "w", "--split=test", "--tag=../x")
  assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1].startswith(
      "error: --tag='../x'")


@pytest.mark.parametrize("override, message", [
    ("nope=1", "config.eval has no key 'nope'"),
    ("max_users=many", "config.eval.max_users='many': expected int"),
    ("exclude_history=perhaps", "config.eval.exclude_history='perhaps': expected bool"),
    ("evaluators=bogus", "bogus"),
    ("max_users", "expected KEY=VALUE"),
])
def test_evaluate_bad_override_is_one_error_line(trained, override, message):
  workdir, _ = trained
  out = _evaluate(workdir, "--split=test", f"--eval={override}")
  assert out.returncode != 0
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and message in last, out.stderr[-2000:]


def test_rerun_of_a_finished_workdir_says_so(trained, tmp_path):
  workdir, _ = trained
  shutil.copytree(workdir, tmp_path / "w")
  out = _main(tmp_path / "w")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "training already complete at step 20; evaluating" in out.stdout
  assert "SASRec (test)" in out.stdout


def test_corrupt_checkpoint_is_one_error_line(trained, tmp_path):
  workdir, _ = trained
  shutil.copytree(workdir, tmp_path / "w")
  damaged = 0
  for path in (tmp_path / "w" / "checkpoints" / "20" / "state").rglob("*"):
    if path.is_file() and path.stat().st_size > 0:
      path.write_bytes(b"\x00garbage")
      damaged += 1
  assert damaged
  for out in (_main(tmp_path / "w"), _evaluate(tmp_path / "w")):
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(tmp_path / "w" / "checkpoints" / "20") in errors[0]
    assert "corrupt" in errors[0]


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
  # Rerunning the same command resumes from the saved step, and says so.
  out = _main(tmp_path, f"--config.train.num_steps={saved[0] + 3}")
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"resumed from step {saved[0]} of {saved[0] + 3}" in out.stdout
  steps = [r["step"] for r in read_jsonl(metrics) if "train/loss" in r]
  assert steps[-3:] == [saved[0] + 1, saved[0] + 2, saved[0] + 3]


@pytest.mark.parametrize("override, message", [
    ("--config.train.num_stepz=3", "num_stepz"),
    ("--config.data.dataset.name=no_such_dataset", "no_such_dataset"),
    ("--config.loss.name=hinge", "config.loss.name='hinge'"),
    ("--config.data.max_len=0", "config.data.max_len=0: must be an integer >= 1"),
    # A key the dataset spec does not know: the registry names the valid ones.
    ("--config.data.dataset.numeric_idz=True", "unknown spec key(s) ['numeric_idz']"),
])
def test_bad_config_gets_a_clear_error(tmp_path, override, message):
  out = _main(tmp_path, override, timeout=120)
  assert out.returncode != 0
  assert message in out.stderr
  assert "Traceback" not in out.stderr

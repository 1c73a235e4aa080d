"""Multi-host training and evaluation as 2 processes x 2 CPU devices on 127.0.0.1, against 1
process x 4: SASRec (configs/smoke.py), CALRec (its contrastive losses and generative
evaluators) and the P5 evaluator."""
import json
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


def _one_and_two_processes(tmp_path, args, timeout=600):
  """Runs recjax.main with `args` as 1 process x 4 devices and as 2 processes x 2 devices on
  127.0.0.1: (single workdir, multi workdir, [(stdout, stderr)] of the 2 processes)."""
  single = tmp_path / "single"
  out = subprocess.run([sys.executable, "-m", "recjax.main", f"--workdir={single}", *args],
                       env=run_main_env(devices=4), cwd=REPO, capture_output=True, text=True,
                       timeout=timeout)
  assert out.returncode == 0, out.stderr[-3000:]
  multi = tmp_path / "multi"
  port = portpicker.pick_unused_port()
  procs = [subprocess.Popen(
      [sys.executable, "-m", "recjax.main", f"--workdir={multi}", *args,
       f"--config.distributed.coordinator_address=127.0.0.1:{port}",
       "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}"],
      env=run_main_env(devices=2), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(2)]
  outputs = [p.communicate(timeout=timeout) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  return single, multi, outputs


def test_two_processes_match_one_process(tmp_path):
  single, multi, outputs = _one_and_two_processes(tmp_path, ARGS, timeout=300)
  np.testing.assert_allclose(_losses(multi), _losses(single), rtol=1e-5)
  assert len(_losses(multi)) == 8  # only process 0 wrote metrics (no duplicate lines)
  assert "SASRec (test)" in outputs[0][0] and "SASRec (test)" not in outputs[1][0]
  # The checkpoint holds one data-iterator state per process.
  data_dir = multi / "checkpoints" / "8" / "data"
  states = sorted(f for f in os.listdir(data_dir) if f.endswith(".json"))
  assert states == ["process_0-of-2.json", "process_1-of-2.json"]


CALREC_ARGS = ["--config=configs/calrec.py", "--config.train.num_steps=6",
               "--config.train.checkpoint_every_steps=3", "--config.train.log_every_steps=1",
               "--config.train.progress_bar=False", "--config.eval.max_users=16",
               "--config.eval.num_generations=2",
               "--config.eval.evaluators=dense,bm25,constrained",
               # ndcg@300 and mrr@300 on the 300-item catalogue: every user's whole ranking counts
               "--config.eval.ks=(1,10,300)"]


def test_calrec_two_processes_match_one_process(tmp_path):
  """In-batch negatives span processes (the contrastive losses equal one process's), and the
  generative evaluators gather each decode's tokens from every process."""
  single, multi, _ = _one_and_two_processes(tmp_path, CALREC_ARGS)

  records = {w: [r for r in read_jsonl(os.path.join(w, "metrics.jsonl")) if "train/loss" in r]
             for w in (single, multi)}
  for key in ("train/loss", "train/ut", "train/tt"):
    np.testing.assert_allclose([r[key] for r in records[multi]],
                               [r[key] for r in records[single]], rtol=1e-5, err_msg=key)
  results = [json.loads((w / "results.json").read_text()) for w in (single, multi)]
  metrics = sorted(k for k in results[0] if k.startswith(("valid/", "test/"))
                   and not k.endswith(("users_per_sec", "eval_seconds")))
  assert {"test/bm25/ndcg@300", "test/constrained/mrr@300", "test/dense/ndcg@300"} <= set(metrics)
  assert all(results[0][k] > 0 for k in ("test/bm25/ndcg@300", "test/constrained/ndcg@300"))
  np.testing.assert_allclose([results[1][k] for k in metrics],
                             [results[0][k] for k in metrics], rtol=1e-5)


# A learning rate too small to move any weight in float32: both runs evaluate the same model
# (the GLM text pipeline shards documents per process, so trained weights would differ).
P5_ARGS = ["--config=configs/glm.py:p5", "--config.train.num_steps=2",
           "--config.optimizer.learning_rate=1e-12", "--config.train.checkpoint_every_steps=2",
           "--config.train.progress_bar=False", "--config.eval.evaluators=p5",
           "--config.eval.p5.max_users=4", "--config.eval.p5.num_negatives=9",
           "--config.eval.p5.num_beams=5"]


def test_p5_evaluation_on_two_processes_matches_one_process(tmp_path):
  """Scoring (sampled candidates, yes/no) and constrained beam search across processes."""
  single, multi, _ = _one_and_two_processes(tmp_path, P5_ARGS)
  results = [json.loads((w / "results.json").read_text()) for w in (single, multi)]
  metrics = sorted(k for k in results[0] if k.startswith("test/p5/")
                   and not k.endswith(("per_sec", "seconds")))
  assert {"test/p5/sequential/seen/hr@10", "test/p5/direct/seen/accuracy"} <= set(metrics)
  assert sum(results[0][k] > 0 for k in metrics) >= 10
  np.testing.assert_allclose([results[1][k] for k in metrics],
                             [results[0][k] for k in metrics], rtol=1e-5)

"""SASRec quality on real data: the original protocol and full-ranking BCE vs. CE.

    RECJAX_DATA_DIR=../shared/data python benchmarks/sasrec_quality.py --out=/tmp/sasrec_quality \
        [--runs=video_bce,beauty_ce,...]

Each run is `python -m recjax.main --config=configs/sasrec.py:DATASET` plus the overrides below,
in its own workdir under --out (an existing workdir resumes). At the end it prints one markdown
table row per run from the run's results.json (test split).
"""
from __future__ import annotations

import argparse
import os
import sys

import workdirs  # benchmarks/workdirs.py

# name -> (dataset, overrides)
RUNS = {
    # The original protocol (SASRec.pytorch on Video.txt: NDCG@10 0.5308, HR@10 0.7318).
    "video_bce": ("amazon_video", ["--config.train.num_epochs=200"]),
    # BCE and full-softmax CE side by side at the same epoch budget and width. Full softmax
    # costs ~catalogue-size times more per step on CPU, which is what sets the budget.
    "beauty_bce": ("amazon_beauty", ["--config.train.num_epochs=10", "--config.model.hidden=64"]),
    "beauty_ce": ("amazon_beauty", ["--config.loss.name=ce", "--config.train.num_epochs=10",
                                    "--config.model.hidden=64"]),
    # BCE with one negative needs far more epochs; its converged figure for reference.
    "beauty_bce_200": ("amazon_beauty", ["--config.train.num_epochs=200",
                                         "--config.model.hidden=64"]),
    "ml1m_bce": ("ml-1m-pos", ["--config.train.num_epochs=15", "--config.model.hidden=64"]),
    "ml1m_ce": ("ml-1m-pos", ["--config.loss.name=ce", "--config.train.num_epochs=15",
                              "--config.model.hidden=64"]),
}
COLUMNS = ["recall@10", "ndcg@10", "recall@50", "sampled100_hr@10", "sampled100_ndcg@10"]


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out", required=True, help="root directory for the runs' workdirs")
  ap.add_argument("--runs", default=",".join(RUNS), help="comma-separated subset of RUNS")
  args = ap.parse_args()
  rows = []
  for name in args.runs.split(","):
    dataset, overrides = RUNS[name]
    workdir = os.path.join(args.out, name)
    cmd = [sys.executable, "-m", "recjax.main", f"--config=configs/sasrec.py:{dataset}",
           f"--workdir={workdir}", "--config.train.progress_bar=False", *overrides]
    workdirs.run(cmd)
    results = workdirs.results(workdir)
    cells = " | ".join(f"{results['test/' + c]:.4f}" for c in COLUMNS)
    rows.append(f"| {name} | {dataset} | {' '.join(overrides)} | {cells} |")
  print("| run | dataset | overrides | " + " | ".join(COLUMNS) + " |")
  print("|---|---|---|" + "---|" * len(COLUMNS))
  print("\n".join(rows))


if __name__ == "__main__":
  main()

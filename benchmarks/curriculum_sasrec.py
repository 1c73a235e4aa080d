"""SASRec trained on node2vec walks (walks only / real only / both), evaluated on the real users.

    RECJAX_DATA_DIR=../shared/data python benchmarks/curriculum_sasrec.py \
        --dataset=amazon_games6k --mode=walks --workdir=/tmp/sasrec_walks_games
    # the paper's claim (SPECS.md §3): walks beat real data in recall@100 by +130%
    python benchmarks/curriculum_sasrec.py --dataset=amazon_games6k --mode=real ...

The config is configs/sasrec.py:DATASET[,LOSS] (unchanged: the SASRec task and its defaults are
not touched) plus `--override key=value` pairs. The training sequences of the leave-one-out split
are replaced by (`walks`) or augmented with (`both`) walks on the training co-occurrence graph
(recjax.curriculum.walk_split); the validation and test users, histories and targets stay the
real ones, so the printed table (full-catalogue recall@K, NDCG@K, ...) compares directly across
modes. Results go to docs/benchmarks.md by hand.
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import pathlib
import time

from recjax import config as config_lib
from recjax.curriculum import walk_split
from recjax.data import registry, splits
from recjax.tasks.sasrec import SASRecTask
from recjax.train import metrics_writer, trainer

REPO = pathlib.Path(__file__).resolve().parents[1]


def _sasrec_config(args: str):
  spec = importlib.util.spec_from_file_location("sasrec_config", REPO / "configs" / "sasrec.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(args)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--dataset", default="amazon_games6k", help="configs/sasrec.py argument")
  ap.add_argument("--mode", default="walks", choices=walk_split.MODES)
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--walk_length", type=int, default=20)
  ap.add_argument("--walks_per_node", type=int, default=10)
  ap.add_argument("--p", type=float, default=1.0)
  ap.add_argument("--q", type=float, default=1.0)
  ap.add_argument("--graph_window", type=int, default=1)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--override", action="append", default=[],
                  help="config key=value, e.g. train.num_epochs=20 (repeatable)")
  args = ap.parse_args()
  config = _sasrec_config(args.dataset)
  for item in args.override:
    key, value = item.split("=", 1)
    node, *path = key.split(".")
    target = config[node]
    for p in path[:-1]:
      target = target[p]
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass
    target[path[-1]] = value
  config_lib.check_config(config)
  data = registry.load_dataset(config.data.dataset.to_dict(), config.data.root or None)
  split = splits.make_split(data, "leave_one_out")
  start = time.perf_counter()
  walks = None
  if args.mode != "real":
    walks = walk_split.walks_for_split(split, args.graph_window, walk_length=args.walk_length,
                                       walks_per_node=args.walks_per_node, p=args.p, q=args.q,
                                       seed=args.seed)
  train_split = walk_split.walk_split(split, walks, args.mode) if walks is not None else split
  print(f"{data.summary()}\nmode {args.mode}: {len(train_split.train):,} training sequences, "
        f"{len(train_split.train.values):,} items (walks made in "
        f"{time.perf_counter() - start:.1f} s); load {os.getloadavg()[0]:.1f}", flush=True)
  task = SASRecTask(config, data, train_split)
  result = trainer.train_and_evaluate(config, task, args.workdir)
  test = {k[len("test/"):]: v for k, v in result.metrics.items() if k.startswith("test/")}
  print(metrics_writer.results_table(task, {"test": test}))
  print(f"mode {args.mode}: step {result.step}, test recall@100 {test.get('recall@100', 0):.4f}, "
        f"ndcg@10 {test.get('ndcg@10', 0):.4f} on {int(test.get('users', 0)):,} users; "
        f"{time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
  main()

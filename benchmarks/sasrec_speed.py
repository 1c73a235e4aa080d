"""SASRec training throughput of recjax against the reference PyTorch SASRec, side by side.

    RECJAX_DATA_DIR=../shared/data python benchmarks/sasrec_speed.py --dataset=amazon_video \
        --max_len=200 --steps=300 --compare

Runs recjax's real train step (Grain pipeline, jitted step, one device) for `--steps` steps after
compiling every bucket width, then full-catalogue evaluation of all test users, then (with
--compare) benchmarks/sasrec_pytorch_reference.py with the same settings in the same process
tree, one after the other, and prints one JSON line with both and their ratio. Settings follow
the SASRec.pytorch defaults: batch 128, hidden 50, 2 blocks, 1 head, dropout 0.2, BCE.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import jax
import numpy as np

from recjax import config as config_lib
from recjax.data import registry, splits
from recjax.data.sequence_pipeline import bucket_widths
from recjax.tasks.sasrec import SASRecTask
from recjax.train import sharding as shard_lib
from recjax.train import trainer


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_recjax(args) -> dict:
  config = config_lib.base_config("sasrec")
  config.data.dataset = dict(name=args.dataset)
  config.data.max_len = args.max_len
  config.data.length_bucketing = not args.no_bucketing
  config.model.update(hidden=args.hidden, num_blocks=args.blocks, num_heads=args.heads,
                      dropout=args.dropout)
  config.loss.name = args.loss
  config.train.batch_size = args.batch
  config.eval.batch_size = 1024
  config.eval.sampled_negatives = 0
  data = registry.load_dataset(dict(config.data.dataset), None)
  split = splits.leave_one_out(data)
  task = SASRecTask(config, data, split)
  mesh = shard_lib.make_mesh({"data": 1}, jax.devices()[:1])
  state = trainer.create_train_state(config, task, mesh)
  step_fn = trainer.make_train_step(config, task, state, mesh)
  it = iter(task.train_data(0, 1))

  with jax.set_mesh(mesh):
    # Compile every bucket width first (all-padding batches: zero loss weight, zero gradient)
    # so the timed steps measure steady-state speed.
    start = time.perf_counter()
    widths = [args.max_len] if args.no_bucketing else bucket_widths(args.max_len)
    step = 0
    for width in widths:
      step += 1
      n = task.pipeline_config.num_negatives
      dummy = {"inputs": np.zeros((args.batch, width), np.int32),
               "targets": np.zeros((args.batch, width), np.int32),
               "negatives": np.ones((args.batch, width, n), np.int32)}
      state.state, metrics = step_fn(state.state, shard_lib.global_batch(dummy, mesh), step)
      jax.block_until_ready(metrics)
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.steps):
      step += 1
      state.state, metrics = step_fn(state.state, shard_lib.global_batch(next(it), mesh), step)
    jax.block_until_ready(metrics)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    eval_metrics = trainer.evaluate(task, state.model(), "test", mesh)
    eval_s = time.perf_counter() - start
  return {
      "impl": "recjax", "jax": jax.__version__, "device": str(jax.devices()[0].platform),
      "examples_per_s": args.steps * args.batch / train_s,
      "it_per_s": args.steps / train_s,
      "epoch_s": task.steps_per_epoch * train_s / args.steps,
      "steps_per_epoch": task.steps_per_epoch,
      "warmup_compile_s": warmup_s,
      "full_eval_s": eval_s, "full_eval_users": len(split.test),
      "full_eval_ndcg@10": eval_metrics["ndcg@10"],
      "peak_rss_mb": peak_rss_mb(),
      "length_bucketing": not args.no_bucketing,
  }


def bench_reference(args) -> dict:
  data_file = os.path.join(os.environ.get("RECJAX_DATA_DIR", "../shared/data"),
                           "amazon_video", "Video.txt")
  if args.dataset != "amazon_video":
    raise SystemExit("--compare supports amazon_video (the reference's `u i` file format)")
  cmd = [sys.executable, os.path.join(os.path.dirname(__file__), "sasrec_pytorch_reference.py"),
         f"--data={data_file}", f"--maxlen={args.max_len}", f"--hidden={args.hidden}",
         f"--blocks={args.blocks}", f"--heads={args.heads}", f"--batch={args.batch}",
         f"--dropout={args.dropout}", f"--steps={args.ref_steps}", "--quiet"]
  out = subprocess.run(cmd, capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--dataset", default="amazon_video")
  ap.add_argument("--max_len", type=int, default=200)
  ap.add_argument("--hidden", type=int, default=50)
  ap.add_argument("--blocks", type=int, default=2)
  ap.add_argument("--heads", type=int, default=1)
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--dropout", type=float, default=0.2)
  ap.add_argument("--loss", default="bce")
  ap.add_argument("--steps", type=int, default=300)
  ap.add_argument("--ref_steps", type=int, default=60)
  ap.add_argument("--no_bucketing", action="store_true")
  ap.add_argument("--compare", action="store_true")
  args = ap.parse_args()
  result = {"argv": sys.argv[1:]}
  if args.compare:
    # The reference runs first, in a child started before this process has grown: Linux keeps
    # the peak RSS across fork/exec, so a child started later would report ours as its own.
    ref = bench_reference(args)
    result["reference"] = ref
  result["recjax"] = bench_recjax(args)
  if args.compare:
    ref_ex = ref.get("train_examples_per_s") or ref["train_it_per_s"] * args.batch
    result["speedup_examples_per_s"] = result["recjax"]["examples_per_s"] / ref_ex
  print(json.dumps(result))


if __name__ == "__main__":
  main()

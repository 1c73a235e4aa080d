"""RecSysLLM on real data next to SASRec, and its ablations at equal budget (issue 11 §3-§4).

    RECJAX_DATA_DIR=../shared/data python benchmarks/recsysllm.py --dataset=ml-1m-pos \
        --out=/tmp/recsysllm_ml1m [--variants=recsysllm,token_masking,positions_1d,shuffled] \
        [--pretrain_steps=1000 --p5_steps=1000 --sasrec_epochs=20] [-- OVERRIDES]

Each variant is `python -m recjax.chain --config=configs/glm.py:DATASET` (GLM pre-training, then
LoRA multitask P5 fine-tuning from it) with the variant's `text.glm` overrides on both steps, in
its own directory under --out (finished steps are skipped, interrupted ones resume):

    recsysllm      RecSysLLM's choices: entity-aware spans, 2D positions, chronological spans
    token_masking  GLM's plain random spans (text.glm.masking=token)
    positions_1d   plain 1D positions (text.glm.positions=1d)
    shuffled       GLM's shuffled span order (text.glm.order=shuffled)

SASRec (`configs/sasrec.py:DATASET,ce`, --sasrec_epochs) is trained once and scored on exactly
the users of the P5 sequential evaluation (the same leave-one-out split; the same 99 sampled
negatives for the `sampled99_*` columns, full-catalogue ranks for the others; neither removes
history items, as P5 does not). Extra arguments
after `--` go to every chain step (e.g. `--config.eval.p5.max_users=500`). The tables (test
split) are printed as markdown: sequential recommendation (seen and unseen prompts, SASRec in the
same rows' users), then one table per other P5 family the data supports (direct; rating next to
the training-mean baseline; explanation and review: BLEU / ROUGE), seen and unseen prompts
side by side.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import workdirs  # benchmarks/workdirs.py

VARIANTS = {
    "recsysllm": [],
    "token_masking": ["--config.text.glm.masking=token"],
    "positions_1d": ["--config.text.glm.positions=1d"],
    "shuffled": ["--config.text.glm.order=shuffled"],
}


def seq_columns(num_negatives: int) -> list[str]:
  """The sequential table's columns: sampled<N>_ (the target among N negatives), then full."""
  return [f"sampled{num_negatives}_{m}@{k}" for k in (5, 10) for m in ("hr", "ndcg")] + [
      f"{m}@{k}" for k in (5, 10) for m in ("hr", "ndcg")]


def _cell(results: dict[str, float], key: str) -> str:
  return f"{results[key]:.4f}" if key in results else "-"


def sasrec_on_p5_users(sasrec_dir: str, p5_dir: str, ks=(5, 10)) -> tuple[dict, int]:
  """SASRec's sequential metrics on the P5 evaluation's own test users and negatives."""
  # pylint: disable=g-import-not-at-top
  from recjax.eval import metrics as metrics_lib
  from recjax.workdir import open_workdir
  glm = open_workdir(p5_dir).task
  examples = [e for e in glm._p5_examples("test")  # pylint: disable=protected-access
              if e.family == "sequential" and not e.held_out]
  users = {}
  for e in examples:  # one (user, target, negatives) per user: its first seen template
    users.setdefault(e.user, e)
  sasrec = open_workdir(sasrec_dir)
  split = sasrec.task.split
  row_of = {int(u): r for r, u in enumerate(split.test.users)}
  chosen = list(users.values())
  histories = [split.test.histories[row_of[e.user]] for e in chosen]
  scores = sasrec.item_scores(histories)
  full, sampled = [], []
  for e, s in zip(chosen, scores):
    assert int(split.test.targets[row_of[e.user]]) == e.target_item, "different splits"
    t = s[e.target_item]
    full.append(int(np.sum(s > t) + np.sum(s == t) - 1))
    cand = s[np.concatenate([[e.target_item], e.negatives])]
    sampled.append(int(np.sum(cand > t) + np.sum(cand == t) - 1))
  out = {}
  sampled_prefix = f"sampled{len(chosen[0].negatives)}_"
  for prefix, ranks in (("", full), (sampled_prefix, sampled)):
    for k, v in metrics_lib.ranking_metrics(np.array(ranks), ks).items():
      if k.split("@")[0] in ("hr", "ndcg"):
        out[prefix + k] = v
  return out, len(chosen)


def mean_rating_baseline(glm_task) -> dict[str, float]:
  """RMSE/MAE of predicting the mean training rating for the P5 rating prompts' targets."""
  corpus = glm_task._rendered_corpus()  # pylint: disable=protected-access
  data, split = corpus.data, corpus.split
  train = np.concatenate([data.sequences.offsets[u] + np.arange(len(split.train[r]))
                          for r, u in enumerate(split.train_users)])
  mean = float(np.mean(data.ratings[train]))
  true = np.array([float(e.target_text) for e in glm_task._p5_examples("test")  # pylint: disable=protected-access
                   if e.family == "rating" and not e.held_out])
  return {"rmse": float(np.sqrt(np.mean((true - mean) ** 2))),
          "mae": float(np.mean(np.abs(true - mean))), "mean": mean}


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--dataset", default="ml-1m-pos")
  ap.add_argument("--out", required=True)
  ap.add_argument("--variants", default=",".join(VARIANTS))
  ap.add_argument("--pretrain_steps", type=int, default=1000)
  ap.add_argument("--p5_steps", type=int, default=1000)
  ap.add_argument("--sasrec_epochs", type=int, default=20,
                  help="SASRec CE's epochs; 0: no SASRec (the sequential family gets its own "
                  "table like the others)")
  args, rest = ap.parse_known_args()
  extra = [a for a in rest if a != "--"]
  dirs = {}
  for name in args.variants.split(","):
    dirs[name] = os.path.join(args.out, name)
    workdirs.run([sys.executable, "-m", "recjax.chain", f"--config=configs/glm.py:{args.dataset}",
                  f"--workdir={dirs[name]}", "--", "--config.train.progress_bar=False",
                  f"pretrain:--config.train.num_steps={args.pretrain_steps}",
                  f"p5:--config.train.num_steps={args.p5_steps}",
                  f"p5:--config.eval.evaluators=infilling,p5@{args.p5_steps}",
                  *VARIANTS[name], *extra])
  sasrec_dir = os.path.join(args.out, "sasrec_ce")
  if args.sasrec_epochs:
    workdirs.run([sys.executable, "-m", "recjax.main",
                  f"--config=configs/sasrec.py:{args.dataset},ce", f"--workdir={sasrec_dir}",
                  "--config.train.progress_bar=False",
                  f"--config.train.num_epochs={args.sasrec_epochs}"])

  first = next(iter(dirs.values()))
  results = {name: workdirs.results(os.path.join(workdir, "p5")) for name, workdir in dirs.items()}
  if args.sasrec_epochs:
    sasrec, users = sasrec_on_p5_users(sasrec_dir, os.path.join(first, "p5"))
    num_negatives = int(next(k for k in sasrec if k.startswith("sampled"))
                        .split("_")[0][len("sampled"):])
    print(f"\nSequential recommendation, {args.dataset}, test, {users} users "
          "(the P5 evaluation's; SASRec on the same users and negatives):\n")
    columns = seq_columns(num_negatives)
    print("| model | prompts | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    print("| SASRec CE | - | " + " | ".join(_cell(sasrec, c) for c in columns) + " |")
    for name, res in results.items():
      for group in ("seen", "unseen"):
        cells = [_cell(res, f"test/p5/sequential/{group}/{c}") for c in columns]
        print(f"| {name} | {group} | " + " | ".join(cells) + " |")
  for family in FAMILIES[int(bool(args.sasrec_epochs)):]:
    print_family(family, results, args.dataset)
  if any("/rating/" in k for k in results[next(iter(results))]):
    from recjax.workdir import open_workdir  # pylint: disable=g-import-not-at-top
    base = mean_rating_baseline(open_workdir(os.path.join(first, "p5")).task)
    print(f"\nRating baseline: the training mean ({base['mean']:.3f}) for every test prompt: "
          f"rmse {base['rmse']:.4f}, mae {base['mae']:.4f}")


FAMILIES = ("sequential", "direct", "rating", "explanation", "review")


def print_family(family: str, results: dict[str, dict[str, float]], dataset: str) -> None:
  """One markdown table of a P5 family's test metrics: a row per variant and prompt group."""
  prefix = f"test/p5/{family}/"
  columns = sorted({k[len(prefix):].split("/", 1)[1] for res in results.values() for k in res
                    if k.startswith(prefix)} - {"examples"})
  if not columns:
    return
  examples = {g: results[next(iter(results))].get(f"{prefix}{g}/examples", 0.0) for g in
              ("seen", "unseen")}
  print(f"\nP5 {family}, {dataset}, test ({examples['seen']:.0f} seen-prompt and "
        f"{examples['unseen']:.0f} unseen-prompt examples):\n")
  print("| variant | prompts | " + " | ".join(columns) + " |")
  print("|---|---|" + "---|" * len(columns))
  for name, res in results.items():
    for group in ("seen", "unseen"):
      print(f"| {name} | {group} | " +
            " | ".join(_cell(res, f"{prefix}{group}/{c}") for c in columns) + " |")

if __name__ == "__main__":
  main()

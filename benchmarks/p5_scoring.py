"""P5 candidate scoring: length-grouped calls (the evaluator's) vs padding to the longest.

    JAX_PLATFORMS=cpu RECJAX_DATA_DIR=../shared/data python benchmarks/p5_scoring.py \
        --workdir=DIR [--examples=40] [--split=test]

DIR is a finished P5 workdir (`configs/glm.py:p5,DATASET`, e.g. the `p5` step of
benchmarks/recsysllm.py). On its first `--examples` sequential/direct examples, the sampled
candidates (target + negatives, or the prompt's own) are scored twice, in the same process, one
after the other: by `P5Evaluator.log_probs` (each prompt batch prefilled once, its candidates
scored in length-sorted calls each padded to its own longest) and by `decoding.score` with
every candidate padded to the longest item text (the evaluator before). Each is run once to
compile, then timed. Prints both times, their ratio and the largest score difference.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from recjax.eval import p5 as p5_lib
from recjax.models import decoding
from recjax.workdir import open_workdir


def padded_log_probs(evaluator: p5_lib.P5Evaluator, model, exs, answers, entity_answers):
  """The evaluator's scores as it computed them before: all candidates padded to the longest."""
  num = max(len(a) for a in answers)
  width = p5_lib._width(max(len(a) for opts in answers for a in opts) + 1, 8)  # pylint: disable=protected-access
  per_call = max(1, (evaluator.batch_size * 8) // num)
  entity_trie = evaluator._item_tries()[1] if entity_answers else None  # pylint: disable=protected-access
  out = []
  for batch, n, start in evaluator._prompt_batches(exs, per_call):  # pylint: disable=protected-access
    conts = np.full((per_call, num, width), evaluator.answers.pad, np.int32)
    lengths = np.zeros((per_call, num), np.int32)
    for r in range(n):
      for j, answer in enumerate(answers[start + r]):
        seq = list(answer) + [evaluator.answers.eop]
        conts[r, j, :len(seq)], lengths[r, j] = seq, len(seq)
    scores = np.asarray(decoding.score(
        model, batch["tokens"], batch["lengths"], conts, lengths, positions=batch["inter"],
        extra_positions=batch["intra"], prefix_mask=batch["prefix"],
        part_b=decoding.PartB(batch["mask"], batch["sop_intra"], entity_trie)))
    out += [scores[r, :len(answers[start + r])] for r in range(n)]
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--examples", type=int, default=40)
  parser.add_argument("--split", default="test")
  args = parser.parse_args()
  wd = open_workdir(args.workdir)
  evaluator = next(e for e in wd.task.evaluators if isinstance(e, p5_lib.P5Evaluator))
  exs = [e for e in evaluator.examples(args.split) if e.kind == "item"][:args.examples]
  items = evaluator.answers.item_tokens
  answers = [[items[int(i)] for i in (e.candidates if e.candidates is not None else
                                       np.concatenate([[e.target_item], e.negatives]))]
             for e in exs]
  lengths = [len(a) + 1 for opts in answers for a in opts]
  print(f"{args.workdir}: {len(exs)} examples, {len(lengths)} candidates, answer tokens "
        f"(with [eop]) mean {np.mean(lengths):.1f}, max {max(lengths)}")
  seconds, scores = {}, {}
  for name, fn in (("grouped", evaluator.log_probs),
                   ("padded", lambda *a: padded_log_probs(evaluator, *a))):
    fn(wd.model, exs, answers, True)  # compile
    start = time.perf_counter()
    scores[name] = fn(wd.model, exs, answers, True)
    seconds[name] = time.perf_counter() - start
  diff = max(float(np.max(np.abs(a - b))) for a, b in zip(scores["grouped"], scores["padded"]))
  print(f"padded to the longest: {seconds['padded']:.2f} s; length-grouped: "
        f"{seconds['grouped']:.2f} s; speed-up {seconds['padded'] / seconds['grouped']:.2f}x; "
        f"largest score difference {diff:.2e}")


if __name__ == "__main__":
  main()

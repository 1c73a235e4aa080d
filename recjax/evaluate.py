"""Evaluate a checkpoint of a finished or running experiment.

    python -m recjax.evaluate --workdir=/tmp/recjax_quickstart [--step=N] [--split=test]
    python -m recjax.evaluate --workdir=/tmp/calrec --split=test --eval=evaluators=constrained

Reads the experiment's `config.json` from the workdir, restores the checkpoint's model (the
latest if --step is not given; `recjax.workdir.open_workdir`) without touching the workdir's
checkpoints (a running experiment keeps its own), runs every evaluator of the task, prints the
same table as `recjax.main` (the model and the task's baselines, one row per split) and writes
`eval_step{N}_{split}.json`, merged into that file's earlier metrics (an evaluation with other
evaluators adds to it; a metric evaluated again is replaced). `--eval=KEY=VALUE` (repeatable)
changes `config.eval.KEY` for this evaluation only: other evaluators, users, batch size.
`--tag=NAME` writes `eval_step{N}_{split}.NAME.json` instead, kept apart from the untagged file
(e.g. `--tag=all_users --eval=max_users=0` next to the configured user subset).
Errors a user can fix (no such workdir or step, a corrupt checkpoint, an unknown eval key) end
with one `error:` line.
"""
from __future__ import annotations

import json
import os
import re
import sys
from typing import TYPE_CHECKING

from absl import app, flags, logging

if TYPE_CHECKING:
  from recjax.train.trainer import Task

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Experiment directory (holds config.json and checkpoints/).")
flags.DEFINE_integer("step", None, "Checkpoint step; default: the latest.")
flags.DEFINE_enum("split", "both", ["valid", "test", "both"], "Which evaluation set(s).")
flags.DEFINE_multi_string("eval", [], "KEY=VALUE: config.eval.KEY for this evaluation, e.g. "
                          "evaluators=constrained or max_users=100 (repeatable).")
flags.DEFINE_string("tag", "", "NAME: write eval_step{N}_{split}.NAME.json, apart from the "
                    "untagged file (letters, digits, '_' and '-').")
flags.mark_flag_as_required("workdir")


def evaluate_checkpoint(workdir: str, step: int | None, splits: list[str],
                        eval_overrides: dict[str, str] | None = None,
                        ) -> tuple[int, dict[str, dict[str, float]], Task]:
  """Restores `step` (default latest) from `workdir`: (step, {split: metrics}, task)."""
  from recjax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  opened = workdir_lib.open_workdir(workdir, step, eval_overrides=eval_overrides)
  return opened.step, opened.evaluate(splits), opened.task


def _parse_overrides(items: list[str]) -> dict[str, str]:
  out = {}
  for item in items:
    key, sep, value = item.partition("=")
    key = key.strip().removeprefix("config.").removeprefix("eval.")
    if not sep or not key:
      raise ValueError(f"--eval={item!r}: expected KEY=VALUE, e.g. evaluators=dense")
    out[key] = value
  return out


def _merge_json(path: str, metrics: dict[str, float]) -> None:
  """Writes `metrics` over the file's earlier ones, atomically (a reader never sees half)."""
  merged = {}
  if os.path.exists(path):
    try:
      with open(path, encoding="utf-8") as f:
        merged = json.load(f)
    except (OSError, ValueError):
      merged = {}  # a damaged earlier file: rewritten with this evaluation's metrics
  merged.update(metrics)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(merged, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def main(argv) -> None:
  del argv
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  from recjax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  from recjax.train import metrics_writer  # pylint: disable=g-import-not-at-top
  splits = ["valid", "test"] if FLAGS.split == "both" else [FLAGS.split]
  if FLAGS.tag and not re.fullmatch(r"[A-Za-z0-9_-]+", FLAGS.tag):
    sys.exit(f"error: --tag={FLAGS.tag!r}: use letters, digits, '_' and '-'")
  suffix = f".{FLAGS.tag}" if FLAGS.tag else ""
  try:
    step, results, task = evaluate_checkpoint(FLAGS.workdir, FLAGS.step, splits,
                                              _parse_overrides(FLAGS.eval))
  except (FileNotFoundError, ValueError, ckpt_lib.CheckpointError) as e:
    sys.exit(f"error: {e}")
  for split, metrics in results.items():
    _merge_json(os.path.join(FLAGS.workdir, f"eval_step{step}_{split}{suffix}.json"), metrics)
  print(f"checkpoint step {step} in {FLAGS.workdir}, {task.results_heading}:")
  for split, metrics in results.items():
    users = metrics_writer.users_line(metrics, split)
    if users:
      print(users)
  print(metrics_writer.results_table(task, results))


if __name__ == "__main__":
  app.run(main)

"""Evaluate a checkpoint of a finished or running experiment.

    python -m recjax.evaluate --workdir=/tmp/recjax_quickstart [--step=N] [--split=test]

Reads the experiment's `config.json` from the workdir, restores the checkpoint's model (the
latest if --step is not given; `recjax.workdir.open_workdir`) without touching the workdir's
checkpoints (a running experiment keeps its own), runs every evaluator of the task, prints the
same table as `recjax.main` (the model and the task's baselines, one row per split) and writes
`eval_step{N}_{split}.json`. Errors a user can fix (no such workdir or step, a corrupt
checkpoint) end with one `error:` line.
"""
from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

from absl import app, flags, logging

if TYPE_CHECKING:
  from recjax.train.trainer import Task

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Experiment directory (holds config.json and checkpoints/).")
flags.DEFINE_integer("step", None, "Checkpoint step; default: the latest.")
flags.DEFINE_enum("split", "both", ["valid", "test", "both"], "Which evaluation set(s).")
flags.mark_flag_as_required("workdir")


def evaluate_checkpoint(workdir: str, step: int | None,
                        splits: list[str]) -> tuple[int, dict[str, dict[str, float]], Task]:
  """Restores `step` (default latest) from `workdir`: (step, {split: metrics}, task)."""
  from recjax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  opened = workdir_lib.open_workdir(workdir, step)
  return opened.step, opened.evaluate(splits), opened.task


def main(argv) -> None:
  del argv
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  from recjax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  from recjax.train import metrics_writer  # pylint: disable=g-import-not-at-top
  splits = ["valid", "test"] if FLAGS.split == "both" else [FLAGS.split]
  try:
    step, results, task = evaluate_checkpoint(FLAGS.workdir, FLAGS.step, splits)
  except (FileNotFoundError, ValueError, ckpt_lib.CheckpointError) as e:
    sys.exit(f"error: {e}")
  for split, metrics in results.items():
    with open(os.path.join(FLAGS.workdir, f"eval_step{step}_{split}.json"), "w",
              encoding="utf-8") as f:
      json.dump(metrics, f, indent=2, sort_keys=True)
  print(f"checkpoint step {step} in {FLAGS.workdir}, {task.results_heading}:")
  for split, metrics in results.items():
    users = metrics_writer.users_line(metrics, split)
    if users:
      print(users)
  print(metrics_writer.results_table(task, results))


if __name__ == "__main__":
  app.run(main)

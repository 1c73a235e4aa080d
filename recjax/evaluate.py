"""Evaluate a checkpoint of a finished or running experiment.

    python -m recjax.evaluate --workdir=/tmp/recjax_quickstart [--step=N] [--split=test]

Reads the experiment's `config.json` from the workdir, restores the checkpoint (the latest if
--step is not given), prints the metrics table and writes `eval_step{N}_{split}.json`.
"""
from __future__ import annotations

import json
import os
import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Experiment directory (holds config.json and checkpoints/).")
flags.DEFINE_integer("step", None, "Checkpoint step; default: the latest.")
flags.DEFINE_enum("split", "both", ["valid", "test", "both"], "Which evaluation set(s).")
flags.mark_flag_as_required("workdir")


def evaluate_checkpoint(workdir: str, step: int | None,
                        splits: list[str]) -> tuple[int, dict, list[str]]:
  """Restores `step` (default latest) from `workdir`: (step, {split: metrics}, table columns)."""
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from recjax import config as config_lib  # pylint: disable=g-import-not-at-top
  from recjax.metrics import TABLE_COLUMNS  # pylint: disable=g-import-not-at-top
  from recjax.tasks import build_task  # pylint: disable=g-import-not-at-top
  from recjax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  from recjax.train import sharding as shard_lib  # pylint: disable=g-import-not-at-top
  from recjax.train import trainer  # pylint: disable=g-import-not-at-top

  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"{config_path} not found: --workdir must be a directory written "
                            "by `python -m recjax.main`")
  with open(config_path, encoding="utf-8") as f:
    config = ml_collections.ConfigDict(json.load(f))
  config_lib.check_config(config)
  task = build_task(config)
  mesh = shard_lib.make_mesh(config.mesh)
  train_state = trainer.create_train_state(config, task, mesh)
  manager = ckpt_lib.make_manager(os.path.join(workdir, "checkpoints"), max_to_keep=0,
                                  async_save=False)
  steps = manager.all_steps()
  if not steps:
    raise FileNotFoundError(f"no finished checkpoint in {workdir}/checkpoints")
  step = max(steps) if step is None else step
  if step not in steps:
    raise ValueError(f"no checkpoint for step {step} in {workdir}/checkpoints; have {steps}")
  train_state.state = ckpt_lib.restore(manager, step, train_state.state, None)
  manager.close()
  with jax.set_mesh(mesh):
    model = train_state.model()
    results = {split: task.evaluate(model, split, mesh) for split in splits}
  return step, results, getattr(task, "table_columns", TABLE_COLUMNS)


def main(argv) -> None:
  del argv
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  from recjax.train.metrics_writer import format_table  # pylint: disable=g-import-not-at-top
  splits = ["valid", "test"] if FLAGS.split == "both" else [FLAGS.split]
  try:
    step, results, columns = evaluate_checkpoint(FLAGS.workdir, FLAGS.step, splits)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"error: {e}")
  for split, metrics in results.items():
    with open(os.path.join(FLAGS.workdir, f"eval_step{step}_{split}.json"), "w",
              encoding="utf-8") as f:
      json.dump(metrics, f, indent=2, sort_keys=True)
  print(f"checkpoint step {step} in {FLAGS.workdir}:")
  print(format_table({f"model ({s})": m for s, m in results.items()}, columns))


if __name__ == "__main__":
  app.run(main)

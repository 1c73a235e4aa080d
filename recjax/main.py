"""Train and evaluate one experiment.

    python -m recjax.main --config=configs/quickstart.py --workdir=/tmp/quickstart
    python -m recjax.main --config=configs/sasrec.py:ml-100k --workdir=/tmp/ml100k \
        --config.train.num_epochs=50 --config.data.root=../shared/data

A workdir that holds a checkpoint resumes from it. The workdir receives `config.json`,
`metrics.jsonl`, TensorBoard events, `checkpoints/` and `results.json`.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py[:arg]).")
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.mark_flags_as_required(["config", "workdir"])

def initialize_distributed(cfg) -> None:
  """Joins a multi-process job when `config.distributed.coordinator_address` is set."""
  if not cfg.coordinator_address:
    return
  import jax  # pylint: disable=g-import-not-at-top
  if cfg.coordinator_address == "auto":  # TPU pods, SLURM, GKE: JAX discovers the job itself.
    jax.distributed.initialize()
    return
  kwargs = dict(coordinator_address=cfg.coordinator_address, num_processes=cfg.num_processes)
  if cfg.process_id >= 0:
    kwargs["process_id"] = cfg.process_id
  if cfg.local_device_ids:
    kwargs["local_device_ids"] = [int(i) for i in str(cfg.local_device_ids).split(",")]
  jax.distributed.initialize(**kwargs)
  logging.info("process %d of %d", jax.process_index(), jax.process_count())


def results_table(task, metrics: dict[str, float]) -> str:
  """Test metrics of the trained model next to the baselines the task knows."""
  from recjax.metrics import TABLE_COLUMNS  # pylint: disable=g-import-not-at-top
  from recjax.train.metrics_writer import format_table  # pylint: disable=g-import-not-at-top
  rows = {f"{task.name} (test)": {k[len("test/"):]: v for k, v in metrics.items()
                                  if k.startswith("test/")}}
  if hasattr(task, "popularity_metrics"):
    rows["Popularity (test)"] = task.popularity_metrics("test")
  return format_table(rows, getattr(task, "table_columns", TABLE_COLUMNS))


def task_summary(task) -> str:
  """What the task trains on: its own summary, else its dataset's."""
  return task.summary() if hasattr(task, "summary") else task.data.summary()


def main(argv) -> None:
  del argv
  from recjax import config as config_lib  # pylint: disable=g-import-not-at-top
  from recjax.tasks import build_task  # pylint: disable=g-import-not-at-top
  from recjax.train import trainer  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top

  if not FLAGS["verbosity"].present:  # Orbax and Grain log every file at INFO.
    logging.set_verbosity(logging.WARNING)
  config = FLAGS.config
  try:
    config_lib.check_config(config)
  except ValueError as e:
    sys.exit(f"error in the experiment config: {e}")
  initialize_distributed(config.distributed)
  try:
    task = build_task(config, FLAGS.workdir)
  except (ValueError, FileNotFoundError) as e:  # bad dataset spec, files or values
    sys.exit(f"error: {e}")
  logging.info("%s", task_summary(task))
  result = trainer.train_and_evaluate(config, task, FLAGS.workdir)
  if jax.process_index() == 0:
    if result.stopped_by_signal:
      print(f"stopped by signal at step {result.step}; checkpoint saved in "
            f"{os.path.join(FLAGS.workdir, 'checkpoints')}. Run the same command to resume.")
    else:
      table = results_table(task, result.metrics)
      heading = getattr(task, "results_heading", None) or (
          "full-catalogue ranking" +
          (" without history items" if config.eval.get("exclude_history") else ""))
      step = (f"best checkpoint by valid {config.train.best_metric}: step "
              f"{result.metrics['best_step']} of {result.step}"
              if "best_step" in result.metrics else f"step {result.step}")
      print(f"\n{task_summary(task)}\n{step}, {heading}:\n{table}")
      with open(os.path.join(FLAGS.workdir, "results.txt"), "w", encoding="utf-8") as f:
        f.write(table + "\n")


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with a one-line error instead of a traceback for bad overrides."""
  try:
    return FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as e:
    message = str(e).replace("\\n", " ").replace("\\'", "'").strip("'\"")
    sys.exit(f"error in the command line ({type(e).__name__}): {message}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)

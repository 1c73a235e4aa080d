"""Train and evaluate one experiment.

    python -m recjax.main --config=configs/quickstart.py --workdir=/tmp/quickstart
    python -m recjax.main --config=configs/sasrec.py:ml-100k --workdir=/tmp/ml100k \
        --config.train.num_epochs=50 --config.data.root=../shared/data

A workdir that holds a checkpoint resumes from it; otherwise `config.init_from` may name
another workdir to start from (docs/getting_started.md, "Where a run starts from"). The
workdir receives `config.json`, `metrics.jsonl`, TensorBoard events, `checkpoints/`,
`results.json` and `results.txt`. What a user needs to know (the data and model summary, the
data report, where the run started from, how many users were evaluated, the results table) is
printed on stdout; logs stay at WARNING unless --verbosity is given. Errors a user can fix (a
bad config, data files, a corrupt checkpoint) end the run with one `error:` line.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
# New keys are accepted by the flag parser so that `--config.data.dataset.KEY=V` can add a key
# to the free-form dataset spec; check_config still rejects unknown keys everywhere else.
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py[:arg]).",
                                lock_config=False, accept_new_attributes=True)
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


def main(argv) -> None:
  del argv
  from recjax import config as config_lib  # pylint: disable=g-import-not-at-top
  from recjax.tasks import build_task  # pylint: disable=g-import-not-at-top
  from recjax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  from recjax.train import metrics_writer  # pylint: disable=g-import-not-at-top
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
  chief = jax.process_index() == 0
  try:
    task = build_task(config, FLAGS.workdir)
  except (ValueError, FileNotFoundError) as e:  # bad dataset spec, files or values
    sys.exit(f"error: {e}")
  if chief:
    print(task.summary(), flush=True)
  try:
    result = trainer.train_and_evaluate(config, task, FLAGS.workdir)
  except (ckpt_lib.CheckpointError, trainer.RestoreError, trainer.NonFiniteLossError) as e:
    sys.exit(f"error: {e}")
  if not chief:
    return
  if result.stopped_by_signal:
    print(f"stopped by signal at step {result.step}; checkpoint saved in "
          f"{os.path.join(FLAGS.workdir, 'checkpoints')}. Run the same command to resume.")
    return
  test = {k[len("test/"):]: v for k, v in result.metrics.items() if k.startswith("test/")}
  table = metrics_writer.results_table(task, {"test": test})
  step = (f"best checkpoint by valid {config.train.best_metric}: step "
          f"{result.metrics['best_step']} of {result.step}"
          if "best_step" in result.metrics else f"step {result.step}")
  users = metrics_writer.users_line(test, "test")
  print(f"\n{step}, {task.results_heading}:" + (f"\n{users}" if users else "") + f"\n{table}")
  with open(os.path.join(FLAGS.workdir, "results.txt"), "w", encoding="utf-8") as f:
    f.write(table + "\n")


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with a one-line error instead of a traceback for bad overrides."""
  try:
    return FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as e:
    message = str(e).replace("\\n", " ").replace("\\'", "'").strip("'\"")
    if isinstance(e, KeyError) and "Did you mean" not in message:
      message += (f": the config has no {message!r} to set a key in; an override may add a key "
                  "to a dict that exists, not create a missing one (give the dict whole: "
                  f"--config.<path>.{message}=\"{{'key': value}}\")")
    sys.exit(f"error in the command line ({type(e).__name__}): {message}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)

"""Launch a recjax experiment with XManager (the `launch` extra: pip install -e ".[launch]").

    xmanager launch launch/xm_launch.py -- --config=configs/sasrec.py:amazon_video \
        --workdir=gs://BUCKET/runs/video --accelerator=v5litepod-16 \
        [--sweep=optimizer.learning_rate=1e-3,3e-4]

Packages this checkout as a Python container, requests the TPU topology, and runs
`python -m recjax.main` on every host with `config.distributed.coordinator_address=auto`.
`--sweep=key=v1,v2,...` starts one work unit per value, each in its own workdir subdirectory.
"""
from __future__ import annotations

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "Experiment config (configs/X.py[:arg]).", required=True)
flags.DEFINE_string("workdir", None, "Shared workdir root, e.g. gs://bucket/run.", required=True)
flags.DEFINE_string("accelerator", "v5litepod-8", "TPU topology, e.g. v4-8, v5litepod-16.")
flags.DEFINE_string("sweep", "", "key=v1,v2,... : one work unit per value.")
flags.DEFINE_string("experiment_title", "recjax", "XManager experiment title.")


def sweep_values(sweep: str) -> list[dict[str, str]]:
  """'a.b=1,2' -> [{'a.b': '1'}, {'a.b': '2'}]; '' -> [{}]."""
  if not sweep:
    return [{}]
  key, values = sweep.split("=", 1)
  return [{key: v} for v in values.split(",")]


def main(argv) -> None:
  del argv
  try:
    from xmanager import xm, xm_local  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise SystemExit('xmanager is not installed: pip install -e ".[launch]"') from e
  with xm_local.create_experiment(experiment_title=FLAGS.experiment_title) as experiment:
    [executable] = experiment.package([xm.python_container(
        executor_spec=xm_local.Vertex.Spec(), path=".", entrypoint=xm.ModuleName("recjax.main"))])
    for i, overrides in enumerate(sweep_values(FLAGS.sweep)):
      args = {"config": FLAGS.config, "workdir": f"{FLAGS.workdir}/{i}",
              "config.distributed.coordinator_address": "auto"}
      args.update({f"config.{k}": v for k, v in overrides.items()})
      experiment.add(xm.Job(
          executable=executable,
          executor=xm_local.Vertex(requirements=xm.JobRequirements(**{
              FLAGS.accelerator.split("-")[0].upper(): 1})),
          args=args))


if __name__ == "__main__":
  app.run(main)

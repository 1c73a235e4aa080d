"""Launch a recjax experiment with XManager (pip install -e ".[launch]"), one work unit per sweep point.

    xmanager launch launch/xm_launch.py -- --config=configs/sasrec.py:amazon_video \
        --workdir=gs://BUCKET/runs/video --accelerator=v5e-16 \
        --sweep=optimizer.learning_rate=1e-3,3e-4 --sweep=train.seed=0,1 \
        [--override=train.num_epochs=50] [--container_registry=REGISTRY] [--dry_run]

Packages this checkout as a container (`pip install -e ".[tpu]"` for TPUs, jax[cuda12] for
GPUs), asks for the TPU slice (v4, v5e, v5p, v6e) or GPU nodes (h100-N, h200-N), and runs
`python -m recjax.main` in every host's container with
`config.distributed.coordinator_address=auto`. Several `--sweep`s make the grid; each work unit
writes to `<workdir>/<i>_<key>=<value>,...` (launch/common.py `work_units`). The backend is
XManager on Cloud (`xmanager.xm_cloud`, GKE): in xmanager 0.8.5 the xm_local Vertex backend maps
TPU v2/v3 only and its Kubernetes backend requests no TPU resources. `--dry_run` builds the
same xm objects and prints them without contacting any cloud (`python launch/xm_launch.py ...`).
"""
from __future__ import annotations

import os
import sys
import warnings

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "Experiment config (configs/X.py[:arg]).")
flags.DEFINE_string("workdir", None, "Root workdir, a bucket every host reaches: gs://BUCKET/run.")
flags.DEFINE_string("accelerator", None, "TPU slice (v4-8, v5e-16, v5p-64, v6e-8, ...) or GPUs "
                    "(h100-8, h200-16, ...).")
flags.DEFINE_string("topology", "", "TPU chip grid, when not the slice's default (v4-64 as "
                    "4x4x2).")
flags.DEFINE_multi_string("sweep", [], "key=v1,v2,...; several make the grid.")
flags.DEFINE_multi_string("override", [], "key=value, the same in every work unit.")
flags.DEFINE_string("container_registry", "", "Where the built image is pushed, e.g. "
                    "us-docker.pkg.dev/PROJECT/REPO (XManager on Cloud's default if empty).")
flags.DEFINE_string("base_image", "python:3.11-slim", "Container base image.")
flags.DEFINE_string("experiment_title", "recjax", "XManager experiment title.")
flags.DEFINE_bool("dry_run", False, "Build the xm objects and print them; launch nothing.")


def _xm():
  # google.api_core warns on every import that it will drop Python 3.11 in 2027.
  warnings.filterwarnings("ignore", category=FutureWarning, module="google.api_core")
  try:
    from xmanager import xm  # pylint: disable=g-import-not-at-top
    from xmanager.xm_cloud import executor as xm_cloud_executor  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise SystemExit(f'xmanager is not installed ({e}): pip install -e ".[launch]"') from e
  return xm, xm_cloud_executor


def requirements(accelerator: common.Accelerator):
  """The xm.JobRequirements of one work unit: a TPU slice, or GPU nodes as replicas."""
  xm, _ = _xm()
  if accelerator.kind == "tpu":
    return xm.JobRequirements({accelerator.xm_resource: xm.Topology(accelerator.topology)})
  return xm.JobRequirements({accelerator.xm_resource: accelerator.chips_per_host},
                            replicas=accelerator.hosts)


def packageable(accelerator: common.Accelerator, container_registry: str = "",
                base_image: str = "python:3.11-slim"):
  """This checkout as an xm.PythonContainer whose entrypoint is `python -m recjax.main`."""
  xm, xm_cloud_executor = _xm()
  directory = os.path.basename(REPO)
  install = ('pip install --no-cache-dir -e ".[tpu]"' if accelerator.kind == "tpu" else
             # kubernetes: jax.distributed.initialize() finds the job's pods with it on GKE.
             'pip install --no-cache-dir -e . "jax[cuda12]" kubernetes')
  return xm.python_container(
      executor_spec=xm_cloud_executor.KubernetesJobExecutor.Spec(
          container_registry=container_registry or None, image_name="recjax"),
      path=REPO, base_image=base_image,
      docker_instructions=["ENV LANG=C.UTF-8", f"COPY {directory}/ /{directory}",
                           f"WORKDIR /{directory}", f"RUN {install}"],
      entrypoint=xm.ModuleName("recjax.main"))


def job_args(config: str, unit: common.WorkUnit, overrides: dict[str, str]) -> dict[str, str]:
  """recjax.main's flags for one work unit (xm turns {'a': 1} into --a=1)."""
  args = {"config": config, "workdir": unit.workdir,
          "config.distributed.coordinator_address": "auto"}
  args.update({f"config.{k}": v for k, v in {**overrides, **unit.overrides}.items()})
  return args


def build(config: str, workdir: str, accelerator_name: str, topology: str = "",
          sweeps: list[str] = (), overrides: list[str] = (), executable=None):
  """(accelerator, [(work unit, xm.Job)]) for the flags; ValueError naming a bad flag.

  `executable` is what `experiment.package` returned; None (dry run) puts a named
  xm.Executable in its place.
  """
  xm, xm_cloud_executor = _xm()
  if not config:
    raise ValueError("--config is required, e.g. --config=configs/sasrec.py:amazon_video")
  if not workdir:
    raise ValueError("--workdir is required, e.g. --workdir=gs://BUCKET/runs/NAME")
  if not accelerator_name:
    raise ValueError(f"--accelerator is required ({common.known_accelerators()})")
  try:
    accelerator = common.parse_accelerator(accelerator_name, topology)
  except ValueError as e:
    raise ValueError(f"--accelerator: {e}") from None
  common.check_shared_workdir(workdir, "each XManager job runs in a container whose disk is "
                              "lost when it ends")
  common.check_config_file(config, REPO)
  grid = common.parse_sweeps(list(sweeps))
  fixed = dict(common.parse_override(o) for o in overrides)
  for key, _ in grid:
    if key in fixed:
      raise ValueError(f"config key {key!r} is both swept (--sweep) and fixed (--override)")
  for key in [*fixed, *(k for k, _ in grid)]:
    if key.startswith("distributed."):
      raise ValueError(f"config.{key}: the launcher sets config.distributed itself "
                       "(coordinator_address=auto)")
  executor = xm_cloud_executor.KubernetesJobExecutor(requirements=requirements(accelerator))
  executable = executable or xm.Executable(name="recjax (built by experiment.package)")
  jobs = [(unit, xm.Job(executable=executable, executor=executor, name="recjax",
                        args=job_args(config, unit, fixed)))
          for unit in common.work_units(workdir, grid)]
  return accelerator, jobs


def describe(accelerator: common.Accelerator, jobs) -> str:
  """The dry run's printout: one block per work unit, built from the xm objects."""
  from xmanager.xm import utils  # pylint: disable=g-import-not-at-top
  shape = (f"chips ({accelerator.topology})" if accelerator.kind == "tpu" else
           f"GPUs ({accelerator.chips_per_host} per node)")
  lines = [f"accelerator {accelerator.name}: {accelerator.chips} {shape}, "
           f"{accelerator.hosts} host(s), one recjax process each; {len(jobs)} work unit(s)"]
  for unit, job in jobs:
    lines += [f"work unit {unit.index}: workdir={unit.workdir}",
              f"  requirements: {job.executor.requirements!r}",
              f"  executor: {type(job.executor).__name__}",
              f"  args: {' '.join(job.args.to_list(utils.ARGV_ESCAPER))}"]
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}: pass config overrides as "
                         "--override=key=value")
  build_args = dict(config=FLAGS.config, workdir=FLAGS.workdir,
                    accelerator_name=FLAGS.accelerator, topology=FLAGS.topology,
                    sweeps=FLAGS.sweep, overrides=FLAGS.override)
  try:
    accelerator, jobs = build(**build_args)
  except ValueError as e:
    sys.exit(f"error: {e}")
  if FLAGS.dry_run:
    print(describe(accelerator, jobs))
    return
  from xmanager import xm_cloud  # pylint: disable=g-import-not-at-top
  with xm_cloud.create_experiment(experiment_title=FLAGS.experiment_title) as experiment:
    [executable] = experiment.package([packageable(accelerator, FLAGS.container_registry,
                                                   FLAGS.base_image)])
    _, jobs = build(**build_args, executable=executable)
    print(describe(accelerator, jobs))
    for _, job in jobs:
      experiment.add(job)


if __name__ == "__main__":
  app.run(main)

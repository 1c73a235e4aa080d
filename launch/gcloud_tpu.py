"""Run a recjax experiment on a Cloud TPU VM slice (one host or a pod slice) with gcloud.

    python launch/gcloud_tpu.py STEP[,STEP...] --name=NAME --zone=ZONE --accelerator=v5e-16 \
        [--project=P] [--spot | --queued [--spot]] [--config=configs/X.py --workdir=gs://B/run] \
        [--dry_run] [-- --config.train.num_epochs=50 ...]

Steps, run in the order given (`all` = create,copy,install,run,logs):
  create   the slice: `tpus tpu-vm create` (on demand, or --spot), or with --queued a queued
           resource (`tpus queued-resources create`, waits for capacity; --spot allowed)
  copy     this checkout (no .git, .venv, caches) as a tarball to every worker
  install  unpack it into ~/recjax and `pip install -e ".[tpu]"` into ~/venv on every worker
  run      `python -m recjax.main ... --config.distributed.coordinator_address=auto` on every
           worker at once, in the background (nohup), output in ~/recjax.log on each worker
  logs     stream ~/recjax.log of --log_worker (default 0, the process that prints results)
  delete   the slice (or the queued resource and its slice)
--dry_run prints the commands, one per line, and runs nothing.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = ("create", "copy", "install", "run", "logs", "delete")
TARBALL = "recjax-src.tar.gz"
LOG = "~/recjax.log"
_EXCLUDES = (".git", ".venv", ".jax_cache", "__pycache__", "*.egg-info", ".pytest_cache")


def parse_steps(spec: str) -> list[str]:
  steps = ["create", "copy", "install", "run", "logs"] if spec == "all" else spec.split(",")
  unknown = [s for s in steps if s not in STEPS]
  if unknown or not steps:
    raise ValueError(f"unknown step(s) {unknown} in {spec!r}: choose from "
                     f"{', '.join(STEPS)} or all")
  return steps


def check(args: argparse.Namespace, steps: list[str],
          overrides: list[str]) -> common.Accelerator:
  """The accelerator, or ValueError naming the flag combination that makes no sense."""
  try:
    accelerator = common.parse_accelerator(args.accelerator)
  except ValueError as e:
    raise ValueError(f"--accelerator: {e}") from None
  if accelerator.kind != "tpu":
    raise ValueError(f"--accelerator={args.accelerator} is a GPU; gcloud_tpu.py creates TPU VMs "
                     "(GPUs: launch/local.py on each node, or launch/xm_launch.py)")
  if "run" in steps:
    if not args.config or not args.workdir:
      raise ValueError("the run step needs --config and --workdir")
    if accelerator.hosts > 1:
      common.check_shared_workdir(args.workdir, f"{accelerator.name} has {accelerator.hosts} "
                                  "hosts and every host writes the checkpoint")
  elif overrides or args.config or args.workdir:
    raise ValueError("--config, --workdir and overrides after -- are for the run step, which "
                     f"is not among {','.join(steps)}")
  for o in overrides:
    if not o.startswith("--config."):
      raise ValueError(f"override {o!r} after --: expected --config.<key>=<value>")
    if o.startswith("--config.distributed."):
      raise ValueError(f"override {o!r}: the launcher sets config.distributed itself "
                       "(coordinator_address=auto)")
  if args.spot and "create" not in steps:
    raise ValueError("--spot applies to the create step, which is not among "
                     f"{','.join(steps)}")
  if "run" in steps:
    common.check_config_file(args.config, REPO)
  if args.log_worker >= accelerator.hosts:
    raise ValueError(f"--log_worker={args.log_worker}, but {accelerator.name} has workers "
                     f"0..{accelerator.hosts - 1}")
  return accelerator


def build_commands(args: argparse.Namespace, steps: list[str], overrides: list[str],
                   accelerator: common.Accelerator) -> list[list[str]]:
  """The commands, in order, for `steps`: gcloud invocations and one local tar."""
  tpu = ["gcloud", "compute", "tpus", "tpu-vm"]
  where = [f"--zone={args.zone}"] + ([f"--project={args.project}"] if args.project else [])
  runtime = args.runtime or accelerator.runtime
  spot = ["--spot"] if args.spot else []

  def ssh(worker: str, command: str) -> list[str]:
    return tpu + ["ssh", args.name, *where, f"--worker={worker}", f"--command={command}"]

  commands = []
  for step in steps:
    if step == "create" and args.queued:
      commands.append(["gcloud", "compute", "tpus", "queued-resources", "create", args.name,
                       f"--node-id={args.name}", *where,
                       f"--accelerator-type={accelerator.gcloud_type}",
                       f"--runtime-version={runtime}", *spot])
    elif step == "create":
      commands.append(tpu + ["create", args.name, *where,
                             f"--accelerator-type={accelerator.gcloud_type}",
                             f"--version={runtime}", *spot])
    elif step == "copy":
      tarball = os.path.join(args.tmp_dir, TARBALL)
      commands.append(["tar", "-czf", tarball, *(f"--exclude={e}" for e in _EXCLUDES),
                       "-C", REPO, "."])
      commands.append(tpu + ["scp", tarball, f"{args.name}:~/{TARBALL}", *where, "--worker=all"])
    elif step == "install":
      commands.append(ssh("all", " && ".join([
          f"mkdir -p ~/recjax && tar -xzf ~/{TARBALL} -C ~/recjax",
          "(python3 -m venv ~/venv || (sudo apt-get update -q && sudo apt-get install -y -q "
          "python3-venv && python3 -m venv ~/venv))",
          "cd ~/recjax && ~/venv/bin/pip install -q -U pip && "
          "~/venv/bin/pip install -q -e '.[tpu]'"])))
    elif step == "run":
      main = "~/venv/bin/python " + shlex.join([
          "-m", "recjax.main", f"--config={args.config}", f"--workdir={args.workdir}",
          "--config.distributed.coordinator_address=auto", *overrides])
      commands.append(ssh("all", f"cd ~/recjax && nohup {main} > {LOG} 2>&1 < /dev/null &"))
    elif step == "logs":
      commands.append(ssh(str(args.log_worker), f"tail -n +1 -F {LOG}"))
    elif step == "delete" and args.queued:
      commands.append(["gcloud", "compute", "tpus", "queued-resources", "delete", args.name,
                       *where, "--force", "--quiet"])
    elif step == "delete":
      commands.append(tpu + ["delete", args.name, *where, "--quiet"])
  return commands


def parser() -> argparse.ArgumentParser:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                               formatter_class=argparse.RawDescriptionHelpFormatter,
                               epilog=__doc__.split("\n", 1)[1])
  ap.add_argument("steps", help="comma-separated: create,copy,install,run,logs,delete or all")
  ap.add_argument("--name", required=True, help="TPU VM (and queued resource) name")
  ap.add_argument("--zone", required=True, help="e.g. us-west4-a")
  ap.add_argument("--project", default="")
  ap.add_argument("--accelerator", required=True,
                  help="v4-8, v5e-16 (= v5litepod-16), v5p-64, v6e-8, ...")
  ap.add_argument("--runtime", default="", help="TPU VM software version (default: the "
                  "accelerator's, e.g. v2-alpha-tpuv5-lite for v5e)")
  ap.add_argument("--spot", action="store_true", help="spot (preemptible) capacity")
  ap.add_argument("--queued", action="store_true",
                  help="create/delete through a queued resource (waits for capacity)")
  ap.add_argument("--config", default="", help="experiment config, for the run step")
  ap.add_argument("--workdir", default="",
                  help="for the run step; gs://... when the slice has several hosts")
  ap.add_argument("--log_worker", type=int, default=0, help="the worker whose log `logs` streams")
  ap.add_argument("--tmp_dir", default="/tmp", help="where `copy` writes the tarball locally")
  ap.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
  return ap


def main(argv: list[str]) -> int:
  overrides = []
  if "--" in argv:
    argv, overrides = argv[:argv.index("--")], argv[argv.index("--") + 1:]
  args = parser().parse_args(argv)
  try:
    steps = parse_steps(args.steps)
    accelerator = check(args, steps, overrides)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for command in build_commands(args, steps, overrides, accelerator):
    print(shlex.join(command), flush=True)
    if not args.dry_run:
      result = subprocess.run(command, check=False)
      if result.returncode:
        print(f"error: the command above exited with {result.returncode}", file=sys.stderr)
        return result.returncode
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

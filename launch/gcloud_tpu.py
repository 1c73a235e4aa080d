"""Launch a recjax experiment on a Cloud TPU VM (single host or pod slice) with gcloud.

    python launch/gcloud_tpu.py --name=recjax-v5e --zone=us-west4-a --accelerator=v5litepod-16 \
        --config=configs/sasrec.py:amazon_video --workdir=gs://BUCKET/runs/video \
        [--create] [--dry_run] [-- --config.train.num_epochs=50 ...]

Copies this checkout to every worker, installs it, and starts `python -m recjax.main` on all
workers at once with `config.distributed.coordinator_address=auto` (JAX discovers the pod's
hosts itself). With --dry_run it only prints the gcloud commands. The workdir must be shared by
all hosts (a gs:// path), since Orbax writes one checkpoint from every process.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_commands(args: argparse.Namespace, overrides: list[str]) -> list[list[str]]:
  """The gcloud invocations, in order, for `args`."""
  tpu = ["gcloud", "compute", "tpus", "tpu-vm"]
  where = [f"--zone={args.zone}"] + ([f"--project={args.project}"] if args.project else [])
  commands = []
  if args.create:
    commands.append(tpu + ["create", args.name, *where, f"--accelerator-type={args.accelerator}",
                           f"--version={args.runtime}"])
  commands.append(tpu + ["scp", "--recurse", REPO, f"{args.name}:~/recjax", *where,
                         "--worker=all"])
  run = " ".join([
      "cd ~/recjax &&", "pip install -q -U 'jax[tpu]' && pip install -q -e . &&",
      "python -m recjax.main", shlex.quote(f"--config={args.config}"),
      shlex.quote(f"--workdir={args.workdir}"),
      "--config.distributed.coordinator_address=auto",
      *[shlex.quote(o) for o in overrides]])
  commands.append(tpu + ["ssh", args.name, *where, "--worker=all", f"--command={run}"])
  return commands


def main(argv: list[str]) -> int:
  if "--" in argv:
    split = argv.index("--")
    argv, overrides = argv[:split], argv[split + 1:]
  else:
    overrides = []
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--name", required=True, help="TPU VM name")
  ap.add_argument("--zone", required=True)
  ap.add_argument("--project", default="")
  ap.add_argument("--accelerator", default="v5litepod-8", help="e.g. v4-8, v5litepod-16, v5p-32")
  ap.add_argument("--runtime", default="v2-alpha-tpuv5-lite", help="TPU VM software version")
  ap.add_argument("--config", required=True)
  ap.add_argument("--workdir", required=True, help="shared by all hosts, e.g. gs://bucket/run")
  ap.add_argument("--create", action="store_true", help="create the TPU VM first")
  ap.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
  args = ap.parse_args(argv)
  for command in build_commands(args, overrides):
    print(shlex.join(command))
    if not args.dry_run:
      subprocess.run(command, check=True)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

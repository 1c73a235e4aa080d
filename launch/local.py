"""Run one recjax job as several processes: on this host, on several hosts, or under SLURM.

    # 2 processes on this machine, 2 CPU devices each (a 4-device job):
    python launch/local.py --num_processes=2 --cpu_devices_per_process=2 -- \
        --config=configs/smoke.py --workdir=/tmp/smoke2
    # 2 GPU hosts, 1 process per host using all its GPUs; the same command on each, I = 0, 1:
    python launch/local.py --num_hosts=2 --host_index=I --coordinator=HOST0:12345 -- \
        --config=configs/sasrec.py --workdir=/shared/run
    # inside a SLURM allocation (sbatch/salloc): srun one task per GPU, JAX reads SLURM's env:
    python launch/local.py --num_processes=8 -- --config=configs/sasrec.py --workdir=/shared/run

Everything after `--` goes to `python -m recjax.main`; the launcher adds
`config.distributed.*` (process ids `host_index * num_processes + j`). Each process's output is
printed with a `[process id]` prefix. When a process fails, the others are stopped (SIGTERM, then
SIGKILL after --grace_s) and the launcher exits non-zero; SIGINT/SIGTERM to the launcher is passed
on as SIGTERM (recjax saves a checkpoint and exits).
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def parser() -> argparse.ArgumentParser:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                               formatter_class=argparse.RawDescriptionHelpFormatter,
                               epilog=__doc__.split("\n", 1)[1])
  ap.add_argument("--num_processes", type=int, default=1,
                  help="processes on this host (under SLURM: tasks per node)")
  ap.add_argument("--num_hosts", type=int, default=1, help="hosts running this same command")
  ap.add_argument("--host_index", type=int, default=0, help="this host, 0 .. num_hosts-1")
  ap.add_argument("--coordinator", default="",
                  help="host:port of process 0 (default with one host: 127.0.0.1:<free port>)")
  ap.add_argument("--cpu_devices_per_process", type=int, default=0,
                  help="run on CPU with this many virtual devices per process")
  ap.add_argument("--gpus_per_process", type=int, default=0,
                  help="give process j of this host GPUs j*K .. j*K+K-1 (default: all)")
  ap.add_argument("--slurm", choices=("auto", "on", "off"), default="auto",
                  help="auto: use srun when SLURM_JOB_ID is set")
  ap.add_argument("--grace_s", type=float, default=30.0,
                  help="seconds stopped processes get to exit before SIGKILL")
  ap.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
  return ap


def check(args: argparse.Namespace, main_args: list[str], slurm: bool) -> None:
  """ValueError naming the flag when the combination makes no sense."""
  if not any(a.startswith("--config=") for a in main_args) or not any(
      a.startswith("--workdir=") for a in main_args):
    raise ValueError("pass recjax.main's --config=... and --workdir=... after --")
  for a in main_args:
    if a.startswith("--config.distributed."):
      raise ValueError(f"{a}: the launcher sets config.distributed itself")
  if args.num_processes < 1 or args.num_hosts < 1:
    raise ValueError("--num_processes and --num_hosts must be at least 1")
  if args.cpu_devices_per_process < 0 or args.gpus_per_process < 0:
    raise ValueError("--cpu_devices_per_process and --gpus_per_process cannot be negative")
  if args.cpu_devices_per_process and args.gpus_per_process:
    raise ValueError("--cpu_devices_per_process (CPU) and --gpus_per_process (GPU) exclude each "
                     "other")
  if slurm:
    if args.num_hosts != 1 or args.host_index or args.coordinator:
      raise ValueError("under SLURM the nodes, ranks and coordinator come from SLURM's "
                       "environment: drop --num_hosts, --host_index and --coordinator (or "
                       "--slurm=off)")
    if args.gpus_per_process:
      raise ValueError("under SLURM JAX gives each task one GPU (SLURM_LOCALID); use "
                       "--num_processes=<GPUs per node> instead of --gpus_per_process")
    return
  if not 0 <= args.host_index < args.num_hosts:
    raise ValueError(f"--host_index={args.host_index} is outside 0..{args.num_hosts - 1}")
  if args.num_hosts > 1 and not args.coordinator:
    raise ValueError("--num_hosts > 1 needs --coordinator=HOST0:PORT, an address of host 0 "
                     "that every host reaches")
  if args.coordinator and (":" not in args.coordinator
                           or not args.coordinator.rsplit(":", 1)[1].isdigit()):
    raise ValueError(f"--coordinator={args.coordinator!r}: expected host:port")


def _cpu_env(args: argparse.Namespace) -> dict[str, str]:
  if not args.cpu_devices_per_process:
    return {}
  xla = os.environ.get("XLA_FLAGS", "")
  return {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": (
      f"{xla} --xla_force_host_platform_device_count={args.cpu_devices_per_process}").strip()}


def slurm_command(args: argparse.Namespace, main_args: list[str]) -> list[str]:
  """srun with one task per process; JAX's SLURM detection (coordinator_address=auto) does the rest."""
  nodes = os.environ.get("SLURM_JOB_NUM_NODES", os.environ.get("SLURM_NNODES", "1"))
  return ["srun", f"--nodes={nodes}", f"--ntasks-per-node={args.num_processes}",
          "--kill-on-bad-exit=1", sys.executable, "-m", "recjax.main", *main_args,
          "--config.distributed.coordinator_address=auto"]


def process_commands(args: argparse.Namespace, main_args: list[str],
                     coordinator: str) -> list[tuple[int, list[str], dict[str, str]]]:
  """(process id, command, extra environment) of each process this host starts."""
  total = args.num_hosts * args.num_processes
  out = []
  for j in range(args.num_processes):
    pid = args.host_index * args.num_processes + j
    command = [sys.executable, "-m", "recjax.main", *main_args,
               f"--config.distributed.coordinator_address={coordinator}",
               f"--config.distributed.num_processes={total}",
               f"--config.distributed.process_id={pid}"]
    if args.gpus_per_process:
      k = args.gpus_per_process
      command.append("--config.distributed.local_device_ids=" +
                     ",".join(str(d) for d in range(j * k, j * k + k)))
    out.append((pid, command, _cpu_env(args)))
  return out


def _pump(prefix: str, stream) -> None:
  for line in stream:
    sys.stdout.write(f"{prefix}{line}")
    sys.stdout.flush()


def _describe(code: int) -> str:
  if code < 0:
    return f"was killed by {signal.Signals(-code).name}"
  return f"exited with code {code}"


def run_processes(commands, grace_s: float) -> int:
  """Starts the processes, streams their output, stops them all if one fails; the exit code."""
  procs, pumps = {}, []
  stop = {"signal": None}

  def on_signal(signum, _):
    stop["signal"] = signum

  old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    for pid, command, env in commands:
      proc = subprocess.Popen(command, env={**os.environ, **env}, cwd=os.getcwd(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              bufsize=1, start_new_session=True)  # Ctrl-C reaches us only
      procs[pid] = proc
      print(f"[launcher] process {pid}: pid {proc.pid}", flush=True)
      pumps.append(threading.Thread(target=_pump, args=(f"[{pid}] ", proc.stdout), daemon=True))
      pumps[-1].start()
    failed, stopping_since = None, None
    while [p.poll() for p in procs.values()].count(None):  # poll every one, no short cut
      if failed is None and stopping_since is None:  # what a stop causes is no failure
        failed = next((pid for pid, p in procs.items() if p.returncode), None)
      if stopping_since is None and (failed is not None or stop["signal"]):
        why = (f"process {failed} {_describe(procs[failed].returncode)}; stopping the other "
               "processes" if failed is not None else
               f"received {signal.Signals(stop['signal']).name}; passing SIGTERM on")
        print(f"[launcher] {why}", file=sys.stderr, flush=True)
        for p in procs.values():
          if p.poll() is None:
            p.terminate()
        stopping_since = time.monotonic()
      if stopping_since is not None and time.monotonic() - stopping_since > grace_s:
        for p in procs.values():
          if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
      time.sleep(0.1)
    for t in pumps:
      t.join(timeout=5)
    if failed is None and stopping_since is None:
      failed = next((pid for pid, p in procs.items() if p.returncode), None)
    if failed is not None:
      code = procs[failed].returncode
      print(f"error: process {failed} {_describe(code)}; the job failed", file=sys.stderr)
      return code if code > 0 else 128 - code
    return 128 + stop["signal"] if stop["signal"] else 0
  finally:
    for s, handler in old.items():
      signal.signal(s, handler)
    for p in procs.values():
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)


def main(argv: list[str]) -> int:
  main_args = []
  if "--" in argv:
    argv, main_args = argv[:argv.index("--")], argv[argv.index("--") + 1:]
  args = parser().parse_args(argv)
  slurm = args.slurm == "on" or (args.slurm == "auto" and "SLURM_JOB_ID" in os.environ)
  try:
    check(args, main_args, slurm)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if slurm:
    command, env = slurm_command(args, main_args), _cpu_env(args)
    print(shlex.join([f"{k}={v}" for k, v in env.items()] + command), flush=True)
    return 0 if args.dry_run else subprocess.run(command, env={**os.environ, **env},
                                                 check=False).returncode
  coordinator = args.coordinator or f"127.0.0.1:{free_port()}"
  commands = process_commands(args, main_args, coordinator)
  if args.dry_run:
    for _, command, env in commands:
      print(shlex.join([f"{k}={v}" for k, v in env.items()] + command))
    return 0
  return run_processes(commands, args.grace_s)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

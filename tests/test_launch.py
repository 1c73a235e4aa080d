"""The launchers: accelerator names and sweeps, XManager's real xm objects (no cloud contacted),
the gcloud commands, and the local multi-process launcher running a real 2-process job."""
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys

import pytest

from recjax.train.metrics_writer import read_jsonl
from tests.cli_utils import REPO, run_main_env


def _load(name):
  spec = importlib.util.spec_from_file_location(f"launch_{name}", REPO / "launch" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up there
  spec.loader.exec_module(module)
  return module


common = _load("common")


def _run(*args, env=None, timeout=120):
  return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                        timeout=timeout, env=env)


# --- accelerator names and sweeps -------------------------------------------------------------

@pytest.mark.parametrize("name,canonical,xm_resource,topology,chips,hosts,runtime", [
    ("v4-8", "v4-8", "tpu_v4", "2x2x1", 4, 1, "tpu-ubuntu2204-base"),
    ("v4-32", "v4-32", "tpu_v4", "2x2x4", 16, 4, "tpu-ubuntu2204-base"),
    ("v5e-16", "v5litepod-16", "tpu_v5e", "4x4", 16, 4, "v2-alpha-tpuv5-lite"),
    ("v5litepod-8", "v5litepod-8", "tpu_v5e", "2x4", 8, 1, "v2-alpha-tpuv5-lite"),
    ("v5p-64", "v5p-64", "tpu_v5p", "2x4x4", 32, 8, "v2-alpha-tpuv5"),
    ("v6e-8", "v6e-8", "tpu_v6e", "2x4", 8, 1, "v2-alpha-tpuv6e"),
    ("v6e-256", "v6e-256", "tpu_v6e", "16x16", 256, 64, "v2-alpha-tpuv6e"),
    ("h100-8", "h100-8", "h100", "8", 8, 1, ""),
    ("H200-16", "h200-16", "h200", "8", 16, 2, ""),
])
def test_accelerator_names(name, canonical, xm_resource, topology, chips, hosts, runtime):
  a = common.parse_accelerator(name)
  assert (a.name, a.xm_resource, a.topology, a.chips, a.hosts, a.runtime) == (
      canonical, xm_resource, topology, chips, hosts, runtime)


@pytest.mark.parametrize("name,topology,message", [
    ("v5e-12", "", "v5litepod slices have 1, 4, 8, 16"),
    ("v4-6", "", "v4 slices have 8, 16, 32"),
    ("tpu-8", "", "unknown accelerator type 'tpu'"),
    ("v7x-8", "", "unknown accelerator type 'v7x'"),
    ("v4", "", "not of the form <type>-<count>"),
    ("h100-12", "", "a multiple of 8"),
    ("h100-8", "2x4", "--topology applies to TPU slices"),
    ("v4-64", "4x4x3", "has 48 chips but 'v4-64' has 32"),
    ("v4-64", "4x8", "expected 3 positive sizes"),
])
def test_bad_accelerator_names(name, topology, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    common.parse_accelerator(name, topology)


def test_sweep_grid_gives_one_workdir_per_point():
  units = common.work_units("gs://b/run/", common.parse_sweeps(
      ["optimizer.learning_rate=1e-3,3e-4", "config.data.root=a/b,c"]))
  assert [(u.index, u.overrides, u.workdir) for u in units] == [
      (0, {"optimizer.learning_rate": "1e-3", "data.root": "a/b"},
       "gs://b/run/0_optimizer.learning_rate=1e-3,data.root=a_b"),
      (1, {"optimizer.learning_rate": "1e-3", "data.root": "c"},
       "gs://b/run/1_optimizer.learning_rate=1e-3,data.root=c"),
      (2, {"optimizer.learning_rate": "3e-4", "data.root": "a/b"},
       "gs://b/run/2_optimizer.learning_rate=3e-4,data.root=a_b"),
      (3, {"optimizer.learning_rate": "3e-4", "data.root": "c"},
       "gs://b/run/3_optimizer.learning_rate=3e-4,data.root=c")]
  assert [(u.overrides, u.workdir) for u in common.work_units("/w", [])] == [({}, "/w")]


@pytest.mark.parametrize("specs,message", [
    (["optimizer.learning_rate"], "expected <config key>=<value>"),
    (["=1,2"], "expected <config key>=<value>"),
    (["a b=1"], "expected <config key>=<value>"),
    (["train.seed="], "no empty values"),
    (["train.seed=1,,2"], "no empty values"),
    (["train.seed=1,1"], "a value is repeated"),
    (["train.seed=1,2", "train.seed=3"], "swept twice"),
])
def test_bad_sweeps(specs, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    common.parse_sweeps(specs)


# --- XManager ---------------------------------------------------------------------------------

_XM_OBJECTS = """
import json, sys
sys.path.insert(0, "launch")
import xm_launch
from xmanager import xm
from xmanager.xm_cloud import executor as xm_cloud_executor
out = {}
for name in ["v4-8", "v5e-16", "v5p-64", "v6e-8", "h100-8", "h200-16"]:
  accelerator, jobs = xm_launch.build("configs/smoke.py", "gs://b/run", name,
                                      sweeps=["train.seed=0,1"])
  (unit, job), _ = jobs
  assert isinstance(job, xm.Job)
  assert isinstance(job.executor, xm_cloud_executor.KubernetesJobExecutor)
  r = job.executor.requirements
  assert isinstance(r, xm.JobRequirements)
  out[name] = dict(accelerator=r.accelerator.name, topology=r.topology.name,
                   chips=r.topology.chip_count, replicas=r.replicas,
                   per_task=r.task_requirements[r.accelerator],
                   args=job.args.to_list(), workdir=unit.workdir)
p = xm_launch.packageable(xm_launch.common.parse_accelerator("v5e-16"))
out["packageable"] = [type(p.executable_spec).__name__, p.executable_spec.entrypoint.module_name,
                      p.executable_spec.docker_instructions[-1]]
print(json.dumps(out))
"""


def test_xm_builds_real_requirements_jobs_and_container():
  out = _run("-c", _XM_OBJECTS)
  assert out.returncode == 0, out.stderr[-3000:]
  got = json.loads(out.stdout.strip().splitlines()[-1])
  assert {k: (v["accelerator"], v["topology"], v["chips"], v["replicas"], v["per_task"])
          for k, v in got.items() if k != "packageable"} == {
      "v4-8": ("TPU_V4", "2x2x1", 4, 1, 4.0),
      "v5e-16": ("TPU_V5E", "4x4", 16, 1, 16.0),
      "v5p-64": ("TPU_V5P", "2x4x4", 32, 1, 32.0),
      "v6e-8": ("TPU_V6E", "2x4", 8, 1, 8.0),
      "h100-8": ("H100", "8", 8, 1, 8.0),
      "h200-16": ("H200", "8", 8, 2, 8.0),  # 2 nodes of 8 GPUs: 2 replicas
  }
  assert got["v4-8"]["args"] == [
      "--config=configs/smoke.py", "--workdir=gs://b/run/0_train.seed=0",
      "--config.distributed.coordinator_address=auto", "--config.train.seed=0"]
  assert got["packageable"] == ["PythonContainer", "recjax.main",
                                'RUN pip install --no-cache-dir -e ".[tpu]"']


def test_xm_dry_run_prints_one_job_per_grid_point():
  out = _run("launch/xm_launch.py", "--dry_run", "--config=configs/sasrec.py:amazon_video",
             "--workdir=gs://b/run", "--accelerator=v5e-16",
             "--sweep=optimizer.learning_rate=1e-3,3e-4", "--sweep=train.seed=0,1",
             "--override=train.num_epochs=5")
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stdout.splitlines()
  assert lines[0].startswith("accelerator v5litepod-16: 16 chips (4x4), 4 host(s)")
  units = [l for l in lines if l.startswith("work unit ")]
  assert units == [f"work unit {i}: workdir=gs://b/run/{i}_optimizer.learning_rate={lr},"
                   f"train.seed={s}" for i, (lr, s) in enumerate(
                       [("1e-3", 0), ("1e-3", 1), ("3e-4", 0), ("3e-4", 1)])]
  assert sum("xm.JobRequirements(tpu_v5e=xm.Topology('4x4')" in l for l in lines) == 4
  args = [l for l in lines if l.startswith("  args: ")]
  assert len(args) == 4 and all("--config.distributed.coordinator_address=auto" in a and
                                "--config.train.num_epochs=5" in a for a in args)
  assert "--config.optimizer.learning_rate=3e-4 --config.train.seed=1" in args[3]


@pytest.mark.parametrize("flags,message", [
    (["--accelerator=v5e-12"], "--accelerator: accelerator 'v5e-12'"),
    (["--accelerator=v4-8", "--workdir=/tmp/run"], "--workdir='/tmp/run' is a local path"),
    (["--accelerator=v4-8", "--sweep=train.seed"], "--sweep='train.seed'"),
    (["--accelerator=v4-8", "--sweep=train.seed=1,2", "--override=train.seed=3"],
     "both swept (--sweep) and fixed (--override)"),
    (["--accelerator=v4-8", "--override=distributed.num_processes=2"],
     "sets config.distributed itself"),
    (["--accelerator=h100-8", "--topology=2x2"], "--topology applies to TPU slices"),
    (["--accelerator=v4-8", "--config=configs/nope.py:x"],
     "--config='configs/nope.py:x': 'configs/nope.py' is not a file of this checkout"),
    ([], "--accelerator is required"),
])
def test_xm_bad_flags(flags, message):
  # absl keeps the last value of a repeated flag, so `flags` may replace the --workdir default.
  out = _run("launch/xm_launch.py", "--dry_run", "--config=configs/smoke.py",
             "--workdir=gs://b/run", *flags)
  assert out.returncode == 1 and out.stderr.startswith("error: ") and message in out.stderr, (
      out.stderr)


# --- gcloud -----------------------------------------------------------------------------------

GCLOUD = ["launch/gcloud_tpu.py", "--name=tpu1", "--zone=us-west4-a", "--project=p", "--dry_run"]


def test_gcloud_dry_run_prints_every_step():
  out = _run(*GCLOUD, "all", "--accelerator=v5e-16", "--spot",
             "--config=configs/sasrec.py:amazon_video", "--workdir=gs://b/run", "--",
             "--config.train.num_epochs=5")
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  where = "--zone=us-west4-a --project=p"
  assert lines[0] == (f"gcloud compute tpus tpu-vm create tpu1 {where} "
                      "--accelerator-type=v5litepod-16 --version=v2-alpha-tpuv5-lite --spot")
  assert lines[1].startswith("tar -czf /tmp/recjax-src.tar.gz --exclude=.git --exclude=.venv")
  assert lines[1].endswith(f"-C {REPO} .")
  assert lines[2] == (f"gcloud compute tpus tpu-vm scp /tmp/recjax-src.tar.gz "
                      f"'tpu1:~/recjax-src.tar.gz' {where} --worker=all")
  assert lines[3].startswith(f"gcloud compute tpus tpu-vm ssh tpu1 {where} --worker=all")
  assert "python3 -m venv ~/venv" in lines[3] and "pip install -q -e" in lines[3]
  assert "[tpu]" in lines[3]
  assert lines[4] == (
      f"gcloud compute tpus tpu-vm ssh tpu1 {where} --worker=all '--command=cd ~/recjax && "
      "nohup ~/venv/bin/python -m recjax.main --config=configs/sasrec.py:amazon_video "
      "--workdir=gs://b/run --config.distributed.coordinator_address=auto "
      "--config.train.num_epochs=5 > ~/recjax.log 2>&1 < /dev/null &'")
  assert lines[5] == (f"gcloud compute tpus tpu-vm ssh tpu1 {where} --worker=0 "
                      "'--command=tail -n +1 -F ~/recjax.log'")
  assert len(lines) == 6


def test_gcloud_queued_resources_and_delete():
  out = _run(*GCLOUD, "create,delete", "--accelerator=v6e-8", "--queued", "--spot")
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip().splitlines() == [
      "gcloud compute tpus queued-resources create tpu1 --node-id=tpu1 --zone=us-west4-a "
      "--project=p --accelerator-type=v6e-8 --runtime-version=v2-alpha-tpuv6e --spot",
      "gcloud compute tpus queued-resources delete tpu1 --zone=us-west4-a --project=p "
      "--force --quiet"]
  out = _run(*GCLOUD, "delete", "--accelerator=v4-8")
  assert out.stdout.strip() == ("gcloud compute tpus tpu-vm delete tpu1 --zone=us-west4-a "
                                "--project=p --quiet")


@pytest.mark.parametrize("flags,message", [
    (["run", "--accelerator=v5e-16", "--config=c", "--workdir=/tmp/x"],
     "v5litepod-16 has 4 hosts and every host writes the checkpoint"),
    (["create", "--accelerator=h100-8"], "is a GPU; gcloud_tpu.py creates TPU VMs"),
    (["create", "--accelerator=v5e-12"], "--accelerator: accelerator 'v5e-12'"),
    (["create", "--accelerator=v4-8", "--config=c"], "are for the run step"),
    (["run", "--accelerator=v4-8"], "the run step needs --config and --workdir"),
    (["run", "--accelerator=v4-8", "--config=c", "--workdir=/w", "--",
      "--config.distributed.num_processes=2"], "sets config.distributed itself"),
    (["run", "--accelerator=v4-8", "--config=c", "--workdir=/w", "--", "--steps=3"],
     "expected --config.<key>=<value>"),
    (["run", "--accelerator=v4-8", "--config=nope.py", "--workdir=/w"],
     "'nope.py' is not a file of this checkout"),
    (["creat", "--accelerator=v4-8"], "unknown step(s) ['creat']"),
    (["logs", "--accelerator=v4-8", "--log_worker=1"], "v4-8 has workers 0..0"),
    (["delete", "--accelerator=v4-8", "--spot"], "--spot applies to the create step"),
])
def test_gcloud_bad_flags(flags, message):
  split = flags.index("--") if "--" in flags else len(flags)
  out = _run(*GCLOUD, *flags[:split], *flags[split:])
  assert out.returncode == 2 and out.stderr.startswith("error: ") and message in out.stderr, (
      out.stderr)


# --- local multi-process ----------------------------------------------------------------------

SMOKE = ["--config=configs/smoke.py", "--config.train.num_steps=8",
         "--config.train.checkpoint_every_steps=4", "--config.train.progress_bar=False"]


def test_local_launcher_runs_one_two_process_job(tmp_path):
  out = _run("launch/local.py", "--num_processes=2", "--cpu_devices_per_process=2", "--",
             f"--workdir={tmp_path}", *SMOKE, env=run_main_env(), timeout=300)
  assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
  losses = [r["train/loss"] for r in read_jsonl(tmp_path / "metrics.jsonl") if "train/loss" in r]
  assert len(losses) == 8  # one job: only process 0 writes metrics
  states = sorted(os.listdir(tmp_path / "checkpoints" / "8" / "data"))
  assert "process_0-of-2.json" in states and "process_1-of-2.json" in states
  assert (tmp_path / "results.txt").exists()
  assert "[0] SASRec (test)" in out.stdout and "[1] SASRec (test)" not in out.stdout


def test_local_launcher_stops_the_job_when_a_process_dies(tmp_path):
  launcher = subprocess.Popen(
      [sys.executable, "launch/local.py", "--num_processes=2", "--cpu_devices_per_process=2",
       "--grace_s=5", "--", f"--workdir={tmp_path}", *SMOKE],
      cwd=REPO, env=run_main_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  pids = {}
  while len(pids) < 2:
    line = launcher.stdout.readline()
    assert line, launcher.stderr.read()
    if line.startswith("[launcher] process "):
      pids[int(line.split()[2].rstrip(":"))] = int(line.split()[-1])
  os.kill(pids[1], signal.SIGKILL)
  _, err = launcher.communicate(timeout=120)
  assert launcher.returncode == 128 + signal.SIGKILL, err
  assert "process 1 was killed by SIGKILL; stopping the other processes" in err
  with pytest.raises(ProcessLookupError):  # process 0 was stopped (and reaped) by the launcher
    os.kill(pids[0], 0)


def test_local_dry_run_on_several_hosts_and_under_slurm():
  out = _run("launch/local.py", "--dry_run", "--num_hosts=2", "--host_index=1",
             "--num_processes=2", "--gpus_per_process=4", "--coordinator=10.0.0.1:1234", "--",
             "--config=configs/smoke.py", "--workdir=/shared/run")
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert [l.split(" -m recjax.main ")[1] for l in lines] == [
      "--config=configs/smoke.py --workdir=/shared/run "
      "--config.distributed.coordinator_address=10.0.0.1:1234 "
      f"--config.distributed.num_processes=4 --config.distributed.process_id={i} "
      f"--config.distributed.local_device_ids={gpus}" for i, gpus in [(2, "0,1,2,3"),
                                                                     (3, "4,5,6,7")]]
  env = {**os.environ, "SLURM_JOB_ID": "77", "SLURM_JOB_NUM_NODES": "4"}  # inside sbatch
  out = _run("launch/local.py", "--dry_run", "--num_processes=8", "--",
             "--config=configs/smoke.py", "--workdir=/shared/run", env=env)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == (
      f"srun --nodes=4 --ntasks-per-node=8 --kill-on-bad-exit=1 {sys.executable} -m "
      "recjax.main --config=configs/smoke.py --workdir=/shared/run "
      "--config.distributed.coordinator_address=auto")


@pytest.mark.parametrize("flags,slurm,message", [
    (["--num_hosts=2"], False, "--num_hosts > 1 needs --coordinator"),
    (["--num_hosts=2", "--host_index=2", "--coordinator=h:1"], False,
     "--host_index=2 is outside 0..1"),
    (["--coordinator=h"], False, "expected host:port"),
    (["--cpu_devices_per_process=2", "--gpus_per_process=1"], False, "exclude each other"),
    (["--num_processes=0"], False, "must be at least 1"),
    (["--coordinator=h:1"], True, "under SLURM the nodes, ranks and coordinator"),
    (["--gpus_per_process=2"], True, "under SLURM JAX gives each task one GPU"),
])
def test_local_bad_flags(flags, slurm, message):
  env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
  if slurm:
    env["SLURM_JOB_ID"] = "1"
  out = _run("launch/local.py", "--dry_run", *flags, "--", "--config=c", "--workdir=w", env=env)
  assert out.returncode == 2 and out.stderr.startswith("error: ") and message in out.stderr, (
      out.stderr)


def test_local_checks_what_goes_to_recjax_main():
  env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
  out = _run("launch/local.py", "--dry_run", "--", "--config=c", "--workdir=w",
             "--config.distributed.num_processes=2", env=env)
  assert out.returncode == 2 and "sets config.distributed itself" in out.stderr
  out = _run("launch/local.py", "--dry_run", "--", "--workdir=w", env=env)
  assert out.returncode == 2 and "pass recjax.main's --config=" in out.stderr

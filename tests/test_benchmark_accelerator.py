"""benchmarks/accelerator.py: every named run's real train step, smoke-sized, on the CPU.

The GPU figures of issues 10, 11 and 13 come from the same command without --smoke; here each
run builds its real experiment (config file, task, trainer step, the task's own batches) on a
tiny preset of the same family, in a child process of its own, as on the device.
"""
import importlib.util
import json
import os
import subprocess
import sys

from tests.cli_utils import REPO

_spec = importlib.util.spec_from_file_location("accelerator",
                                               REPO / "benchmarks" / "accelerator.py")
accelerator = importlib.util.module_from_spec(_spec)
sys.modules["accelerator"] = accelerator  # its dataclass looks its module up
_spec.loader.exec_module(accelerator)


def test_every_run_reports_a_line_on_cpu(tmp_path):
  # --smoke replaces each run's preset by its family's tiny one: runs that differ only in the
  # full-size preset (lm_150m / lm_1b, qwen2.5 0.5B / 1.5B) build the same smoke experiment.
  smoke_configs = {}
  for name, run in accelerator.RUNS.items():
    smoke_configs.setdefault((run.task, run.config, run.smoke_preset), name)
  assert len(smoke_configs) >= 6
  names = ["matmul"] + list(smoke_configs.values())
  out = tmp_path / "accelerator.jsonl"
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             JAX_COMPILATION_CACHE_DIR=str(REPO / ".jax_cache"))
  proc = subprocess.run(
      [sys.executable, str(REPO / "benchmarks" / "accelerator.py"), "--smoke",
       f"--runs={','.join(names)}", "--steps=2", "--warmup=1", f"--out={out}"],
      capture_output=True, text=True, env=env, cwd=REPO, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = {r["run"]: r for r in map(json.loads, out.read_text().splitlines())}
  assert sorted(results) == sorted(names)
  for name, r in results.items():
    assert "error" not in r and "skipped" not in r, (name, r)
    assert r["mfu"] is None, r  # no peak FLOP/s known for a CPU
    assert r["step_s"] > 0 and r["platform"] == "cpu"
    if name == "matmul":
      continue
    run = accelerator.RUNS[name]
    assert r["task"] == run.task and r["preset"] == run.smoke_preset
    assert r["params"] > 0 and r["tokens_per_s"] > 0 and r["examples_per_s"] > 0
    assert r["model_tflops"] > 0 and r["dtype"] == "bfloat16" and r["scan_layers"]
    assert r["batch"] == accelerator.SMOKE["batch"]
    assert r["seq_len"] == accelerator.SMOKE["seq_len"]
    assert r["loss"] > 0
    if run.lora:
      assert r["lora_rank"] == 8 and 0 < r["trainable_params"] < r["params"]
    else:
      assert r["trainable_params"] == r["params"]
    if run.task == "calrec":  # joint rows and item-alone rows
      assert r["item_row_len"] % 8 == 0  # the task pads item rows for cuDNN
      assert r["tokens_per_s"] > r["nonpad_tokens_per_s"] > 0
  # The table at the end has a row per run.
  table = proc.stdout[proc.stdout.index("| run |"):]
  assert all(f"| {name} |" in table for name in names)


def test_a_failing_run_is_a_line_and_the_next_run_still_runs(tmp_path):
  # cuDNN attention on a CPU fails when the step is traced: an error line, then matmul runs.
  out = tmp_path / "accelerator.jsonl"
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             JAX_COMPILATION_CACHE_DIR=str(REPO / ".jax_cache"))
  proc = subprocess.run(
      [sys.executable, str(REPO / "benchmarks" / "accelerator.py"), "--smoke",
       "--runs=lm_1b,matmul", "--attention=cudnn", "--steps=1", "--warmup=0", f"--out={out}"],
      capture_output=True, text=True, env=env, cwd=REPO, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  failed, matmul = map(json.loads, out.read_text().splitlines())
  assert failed["run"] == "lm_1b" and "cuDNN" in failed["error"], failed
  assert failed["preset"] == "tiny_llama" and failed["attention_asked"] == "cudnn"
  assert matmul["run"] == "matmul" and matmul["step_s"] > 0
  assert "| lm_1b | tiny_llama | RuntimeError: cuDNN" in proc.stdout


def test_peak_flops_by_device_kind():
  assert accelerator.peak_flops("NVIDIA H200") == 989e12
  assert accelerator.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
  assert accelerator.peak_flops("NVIDIA H100 PCIe") == 756e12
  assert accelerator.peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
  assert accelerator.peak_flops("cpu") is None


def test_wheels_install_nothing_when_everything_is_there(tmp_path, monkeypatch):
  monkeypatch.setattr(sys, "path", list(sys.path))  # ensure_packages prepends its site
  monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
  (tmp_path / "wheels").mkdir()
  assert accelerator.ensure_packages(str(tmp_path / "wheels"), str(tmp_path / "site")) == []
  assert accelerator._version("0.12.10rc1") == (0, 12, 10) > accelerator._version("0.12.8")
  assert accelerator._version("1.1") == accelerator._version("1.1.0") == (1, 1, 0)


def test_table_shows_failed_and_skipped_runs():
  table = accelerator.markdown([
      {"run": "lm_1b", "preset": "llama3_2_1b", "error": "XlaRuntimeError: RESOURCE_EXHAUSTED"},
      {"run": "calrec_gemma3_1b", "skipped": "--budget_s=420 s spent"}])
  assert "| lm_1b | llama3_2_1b | XlaRuntimeError: RESOURCE_EXHAUSTED |" in table
  assert "| calrec_gemma3_1b | - | --budget_s=420 s spent |" in table
  assert not accelerator._gpu_failure({"error": "RESOURCE_EXHAUSTED: out of memory"})
  assert accelerator._gpu_failure({"error": "cuDNN fused attention is not supported"})

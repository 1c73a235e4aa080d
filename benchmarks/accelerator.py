"""Training-step speed of the real experiments on one accelerator: LM, CALRec and GLM LoRA.

The GPU figures of issues 13 §4 (the `lm` task at ~150M and ~1B parameters), 10 §4 (CALRec's
training step on 0.5-1.5B shapes) and 11 §4 (GLM LoRA fine-tuning of a 1-2B shape), in bf16
with random weights, in one command:

    python benchmarks/accelerator.py --out=$OUT/accelerator.jsonl

On the device machine of this workplace (one H200, no network; its image's python3 has jax
0.11 with CUDA, flax, optax, orbax, numpy, absl, but not grain, array_record, ml_collections,
gin-config or portpicker), those travel as wheels. Once, here (pip reaches PyPI), in the repo
root: `echo /.whl/ >> .git/info/exclude` and WHEELS_DOWNLOAD below (`python3 -m pip download
--no-deps --only-binary=:all: --python-version 3.12 ... -d .whl grain==0.2.18 ...`, 5 MB).
Then one device call with `carry=[".whl"]` and `timeout_s=600`:

    PYTHONUNBUFFERED=1 python3 benchmarks/accelerator.py --wheels=.whl \
        --out=$OUT/accelerator.jsonl 2>&1 | tee $OUT/accelerator.log

`--wheels` installs (pip --no-index --target, into --site) those of REQUIRED that are missing
or older than recjax's minimum, and children find them and this checkout's recjax through
PYTHONPATH: no `pip install -e .` needed. Elsewhere, with network: `pip install -e .
"jax[cuda12]"` (setup.py has no GPU extra), then `python benchmarks/accelerator.py
--out=accelerator.jsonl`. The path was checked on the CPU under Python 3.12, jax 0.11.2 and
flax 0.12.12 from these wheels (no GPU was lent to the session that wrote this).

Each run (RUNS below: config file:argument, preset, batch, seq_len) builds the REAL experiment
config (the config module's `get_config`, then `model.preset`, `model.dtype=bfloat16`,
`text.seq_len`, `train.batch_size`, `scan_layers=True` and the attention implementation;
recjax's synthetic dataset and the byte tokenizer, so nothing is downloaded and no tokenizer
is trained; `model.vocab_size` is the preset's, so the embedding and output layers have their
real size), builds the task, the train state and the shared trainer's jitted step
(`recjax.train.trainer.create_train_state` / `make_train_step`: AdamW, the task's own loss),
takes batches from the task's own training pipeline (`task.train_data`, placed on the device
before timing: the input pipeline is not timed), compiles the step ahead of time (compile
seconds reported), runs `--warmup` steps and times `--steps` more, each blocked on its loss
(median reported). CALRec's item-alone rows are the task's own (BOS + `calrec.item_len` tokens,
padded to a multiple of 8: cuDNN's attention trains with a mask only on even row lengths).

Reported per run, one JSON line in --out (and on stdout): params (LLM parameters without
adapters) and trainable params (the LoRA adapters for the glm_lora runs), step_s (median),
tokens/s (every row slot of the batch, padding included: what the step computes; CALRec's rows
are padded, not packed, so `nonpad_tokens_per_s` is given too), examples/s (rows of the lm and
glm tasks, (history, next item) pairs of CALRec), model TFLOP/s and MFU against the device's
peak dense bf16 FLOP/s (PEAK_FLOPS; null where unknown, e.g. on CPU; `--peak_flops` overrides),
peak device memory (`memory_stats()['peak_bytes_in_use']`, null where the backend has none)
and the compiled step's own memory figures, the attention implementation asked for and whether
the compiled step holds a cuDNN fused-attention call (`cudnn_attention_in_hlo`), jax version
and device kind. Model FLOPs follow `recjax.compile.lm_model_flops` (MaxText's convention:
6 x weights x tokens plus causal attention; embedding lookups and remat are not counted). For
CALRec the item-alone rows add their forward+backward without the output layer. For LoRA the
frozen base needs no weight gradients: 4 x base weights x tokens (forward and activation
gradients) plus 6 x adapter weights x tokens.

Each run is a child process of its own (unless `--no-isolate`): an out-of-memory or any error
becomes a JSON line with the error and the next run still runs, and each run's peak memory is
its own (`XLA_PYTHON_CLIENT_MEM_FRACTION` defaults to 0.95 instead of JAX's 0.75). With
`--attention=auto` (default) GPU runs ask for 'cudnn' (`LLMConfig.attention_impl`, passed to
`jax.nn.dot_product_attention`; JAX's own default, None, is XLA's attention even on GPU in jax
0.10); a run that fails with cuDNN is reported and run again with 'xla' (after two such runs
the rest start with 'xla'). Every training batch has segment ids (packed rows, or CALRec's
padded ones), so the model hands the attention a dense (batch, 1, T, S) mask, which cuDNN
takes as an additive bias: flash attention with a bias, not its causal fast path.

`--budget_s` (420) stops starting runs after that many seconds (the rest are reported as
skipped), no child runs past `--run_timeout_s` (240) or `--deadline_s` (540): the default runs
are ordered by priority (each issue's first shape comes early) and meant to finish inside one
10-minute command on an H200 (an estimate, not measured: ~40-60 s per 1B run, mostly start-up
and compilation; timed steps are 0.1-0.4 s at 50% MFU). A markdown table of every run is
printed at the end.

`--smoke` replaces every preset by a tiny one of the same family (tiny_llama, tiny_qwen2,
tiny_qwen3, tiny_gemma3), rows of 256 tokens, 2 per batch, and a smaller synthetic dataset:
the whole path in seconds on a CPU (tests/test_benchmark_accelerator.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Peak dense bf16 FLOP/s per device (vendor datasheets, without sparsity), matched against
# `jax.Device.device_kind` (first matching substring wins, case-insensitive).
PEAK_FLOPS = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM (H100 80GB HBM3); NVL is 835e12
    ("A100", 312e12),
    ("L4", 121e12),
    ("TPU v5 lite", 197e12),
    ("TPU v5p", 459e12),
    ("TPU v5", 459e12),
    ("TPU v6", 918e12),
    ("TPU v4", 275e12),
)

# ~150M Llama-style LM (tiny_llama widened; untied 32k-vocab embeddings): 149M parameters.
LM_150M = dict(hidden_size=768, num_layers=12, num_heads=12, num_kv_heads=12, head_dim=64,
               mlp_dim=2560, rope_scaling="default", rope_theta=10000.0, vocab_size=32768,
               max_position_embeddings=4096)


@dataclasses.dataclass(frozen=True)
class Run:
  """One benchmark run: which experiment, at which shape."""

  task: str         # recjax task name (what the config's get_config builds)
  config: str       # config file relative to the repo, with its get_config argument
  preset: str       # gin preset of the backbone
  overrides: dict   # LLMConfig fields replacing the preset's (vocab_size included)
  batch: int        # train.batch_size: rows (lm, glm) or pairs (calrec)
  seq_len: int      # text.seq_len
  smoke_preset: str  # the tiny preset of the same family that --smoke uses
  issue: str        # which issue asks for it

  @property
  def lora(self) -> bool:
    return self.config.endswith(":p5")


# Priority order: the default runs and --budget_s keep the first ones.
RUNS = {
    # issue 13 §4: the lm task (configs/lm.py) at ~150M and ~1B.
    "lm_150m": Run("lm", "configs/lm.py:synthetic", "tiny_llama", LM_150M, 32, 2048,
                   "tiny_llama", "13"),
    "lm_1b": Run("lm", "configs/lm.py:synthetic", "llama3_2_1b", {}, 8, 2048, "tiny_llama",
                 "13"),
    # issue 11 §4: GLM LoRA multitask fine-tuning (configs/glm.py:p5, rank 8), 1-2B shapes.
    "glm_lora_llama3_2_1b": Run("glm", "configs/glm.py:p5", "llama3_2_1b", {}, 8, 2048,
                                "tiny_llama", "11"),
    # issue 10 §4: CALRec's training step (configs/calrec.py:synthetic; stage 2 is the same
    # step on the target domain's data), 0.5-1.5B shapes; 16 pairs of 1024-token joint rows.
    "calrec_llama3_2_1b": Run("calrec", "configs/calrec.py:synthetic", "llama3_2_1b", {}, 16,
                              1024, "tiny_llama", "10"),
    "calrec_qwen2_5_0_5b": Run("calrec", "configs/calrec.py:synthetic", "qwen2_5_0_5b", {}, 16,
                               1024, "tiny_qwen2", "10"),
    "calrec_gemma3_1b": Run("calrec", "configs/calrec.py:synthetic", "gemma3_1b", {}, 16, 1024,
                            "tiny_gemma3", "10"),
    "calrec_qwen3_0_6b": Run("calrec", "configs/calrec.py:synthetic", "qwen3_0_6b", {}, 16,
                             1024, "tiny_qwen3", "10"),
    "calrec_qwen2_5_1_5b": Run("calrec", "configs/calrec.py:synthetic", "qwen2_5_1_5b", {}, 16,
                               1024, "tiny_qwen2", "10"),
    "glm_lora_qwen3_1_7b": Run("glm", "configs/glm.py:p5", "qwen3_1_7b", {}, 8, 2048,
                               "tiny_qwen3", "11"),
}
DEFAULT_RUNS = ",".join(["matmul"] + list(RUNS))
# The matmul run: one large bf16 matmul, the device's reachable dense rate (MFU's ceiling).
MATMUL_N, SMOKE_MATMUL_N = 8192, 256
# CALRec's item-alone rows are padded to a multiple of this (see bench_run).
SMOKE = dict(batch=2, seq_len=256, dataset=dict(num_users=120, num_items=60, num_clusters=6))


def peak_flops(device_kind: str) -> float | None:
  """The device's peak dense bf16 FLOP/s from PEAK_FLOPS; None if unknown (CPU)."""
  kind = device_kind.lower()
  for name, flops in PEAK_FLOPS:
    if name.lower() in kind:
      return flops
  return None


def load_config(spec: str):
  """`configs/x.py:ARG` -> the config module's get_config(ARG)."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("bench_config", os.path.join(REPO, path))
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def experiment_config(run: Run, smoke: bool, attention: str | None):
  """The run's real experiment config with the benchmark's shape overrides."""
  from recjax import config as config_lib  # pylint: disable=g-import-not-at-top
  from recjax.models import llm  # pylint: disable=g-import-not-at-top
  config = load_config(run.config)
  overrides = dict(run.overrides)
  if smoke:
    preset, overrides = run.smoke_preset, {}
    config.data.dataset.update(SMOKE["dataset"])
  else:
    preset = run.preset
  vocab = overrides.pop("vocab_size", None)
  if vocab is None and not smoke:
    vocab = llm.get_preset(preset).vocab_size  # the preset's real embedding size
  config.model.preset = preset
  config.model.vocab_size = int(vocab or 0)  # 0 (smoke): the byte tokenizer's ids, rounded
  config.model.dtype = "bfloat16"
  # Replaces cpu_backbone's 4 x 128 widening: the preset's own architecture.
  config.model.overrides = dict(overrides, scan_layers=True, attention_impl=attention)
  config.text.tokenizer = "byte"  # no SentencePiece training, no download
  config.lm.tokenizer_vocab_size = 0
  config.text.seq_len = SMOKE["seq_len"] if smoke else run.seq_len
  config.train.batch_size = SMOKE["batch"] if smoke else run.batch
  config.text.worker_count = 0
  config.mesh.data = 1  # one device
  config_lib.check_config(config)
  return config


def _count(tree) -> int:
  import jax  # pylint: disable=g-import-not-at-top
  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))


def _model_flops(task, run: Run, batch: dict, lora_params: int) -> float:
  """Model FLOPs of one training step of the run's task (see the module docstring)."""
  from recjax.compile import lm_model_flops  # pylint: disable=g-import-not-at-top
  cfg = task.model_config
  rows, seq = batch["tokens"].shape
  if run.lora:
    return 2 * lm_model_flops(cfg, rows, seq, train=False) + 6 * lora_params * rows * seq
  flops = lm_model_flops(cfg, rows, seq, train=True)
  if "item_tokens" in batch:  # CALRec's item-alone rows: no output layer
    flops += lm_model_flops(dataclasses.replace(cfg, vocab_size=0), rows,
                            batch["item_tokens"].shape[1], train=True)
  return flops


def _memory(device) -> dict[str, Any]:
  try:
    stats = device.memory_stats() or {}
  except Exception:  # pylint: disable=broad-except
    stats = {}
  peak = stats.get("peak_bytes_in_use")
  return {"peak_memory_gib": None if peak is None else round(peak / 2**30, 2),
          "memory_limit_gib": (round(stats["bytes_limit"] / 2**30, 2)
                               if "bytes_limit" in stats else None)}


def _device_info() -> dict[str, Any]:
  """Device kind, platform and the versions of the packages the step runs on."""
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  versions = {}
  for name in ("jaxlib", "flax", "optax", "grain", "numpy"):
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return {"device_kind": device.device_kind, "platform": device.platform,
          "jax": jax.__version__, "versions": versions}


def bench_matmul(args) -> dict[str, Any]:
  """Median time of one n x n x n bf16 matmul: the dense rate the device reaches."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  n = SMOKE_MATMUL_N if args.smoke else MATMUL_N
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (n, n), jnp.bfloat16)
  b = jax.random.normal(kb, (n, n), jnp.bfloat16)
  dot = jax.jit(jnp.dot)
  for _ in range(3):
    dot(a, b).block_until_ready()
  times = []
  for _ in range(10):
    start = time.perf_counter()
    dot(a, b).block_until_ready()
    times.append(time.perf_counter() - start)
  step = statistics.median(times)
  info = _device_info()
  peak = args.peak_flops or peak_flops(info["device_kind"])
  rate = 2 * n ** 3 / step
  return dict(info, run="matmul", task="matmul", preset=f"{n}x{n}x{n}", dtype="bfloat16",
              step_s=round(step, 6), model_tflops=float(f"{rate / 1e12:.4g}"),
              mfu=None if peak is None else round(rate / peak, 3),
              peak_tflops=None if peak is None else peak / 1e12)


def bench_run(name: str, args, attention: str | None) -> dict[str, Any]:
  """Builds run `name`'s experiment, compiles its train step, times it; one result dict."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from recjax.tasks import build_task  # pylint: disable=g-import-not-at-top
  from recjax.train import sharding as shard_lib  # pylint: disable=g-import-not-at-top
  from recjax.train import trainer  # pylint: disable=g-import-not-at-top
  from recjax.models import lora  # pylint: disable=g-import-not-at-top

  run = RUNS[name]
  info = _device_info()
  start = time.perf_counter()
  config = experiment_config(run, args.smoke, attention)
  with tempfile.TemporaryDirectory() as workdir:
    task = build_task(config, workdir)
    build_s = time.perf_counter() - start
    mesh = shard_lib.make_mesh(config.mesh, jax.devices()[:1])
    # Parameter counts from the abstract model (nothing allocated).
    abstract = nnx.eval_shape(lambda: task.build_model(nnx.Rngs(params=0)))
    lora_params = _count(nnx.state(abstract, lora.LoRAParam))
    params = _count(nnx.state(abstract, nnx.Param)) - lora_params
    trainable = _count(nnx.state(abstract, task.trainable))
    del abstract

    # Batches of the task's own training pipeline, on the device before timing.
    n_batches = max(1, min(args.warmup + args.steps, 4))
    it = iter(task.train_data(0, 1))
    host = [next(it) for _ in range(n_batches)]
    data_s = time.perf_counter() - start - build_s
    batches = [shard_lib.global_batch(b, mesh) for b in host]
    row_tokens = sum(math.prod(np.shape(b[k])) for b in host[:1]
                     for k in ("tokens", "item_tokens") if k in b)
    nonpad = float(np.mean([sum(int(np.sum(np.asarray(b[k]) > 0))
                                for k in ("segment_ids", "item_segment_ids") if k in b)
                            for b in host]))
    rows = int(np.shape(host[0]["tokens"])[0])
    seq = int(np.shape(host[0]["tokens"])[1])
    item_row = int(np.shape(host[0]["item_tokens"])[1]) if "item_tokens" in host[0] else None
    flops = _model_flops(task, run, host[0], lora_params)

    state = trainer.create_train_state(config, task, mesh)
    step_fn = trainer.make_train_step(config, task, state, mesh)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    step_arg = lambda i: jax.device_put(np.int32(i), replicated)
    compile_start = time.perf_counter()
    with jax.set_mesh(mesh):
      compiled = step_fn.lower(state.state, batches[0], step_arg(1)).compile()
    compile_s = time.perf_counter() - compile_start
    hlo = compiled.as_text() or ""
    cudnn_attention = "cudnn$fmha" in hlo or "__cudnn$fmha" in hlo
    mem = compiled.memory_analysis()
    compiled_gib = None
    if mem is not None:
      compiled_gib = round((mem.argument_size_in_bytes + mem.output_size_in_bytes -
                            mem.alias_size_in_bytes + mem.temp_size_in_bytes) / 2**30, 2)
    del hlo

    train_state = state.state
    times, loss = [], float("nan")
    with jax.set_mesh(mesh):
      for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        train_state, metrics = compiled(train_state, batches[i % n_batches], step_arg(i + 1))
        loss = float(metrics["loss"])  # blocks until the step is done
        if i >= args.warmup:
          times.append(time.perf_counter() - t0)
  step_s = statistics.median(times)
  peak = args.peak_flops or peak_flops(info["device_kind"])
  rate = flops / step_s
  cfg = task.model_config
  out = dict(
      run=name, task=run.task, issue=run.issue, config=run.config, preset=config.model.preset,
      params=params, trainable_params=trainable, lora_rank=int(config.model.lora.rank),
      dtype=cfg.dtype, param_dtype=cfg.param_dtype, batch=rows, seq_len=seq, item_row_len=item_row,
      vocab_size=cfg.vocab_size, steps=args.steps, warmup=args.warmup,
      step_s=round(step_s, 5), step_s_all=[round(t, 5) for t in times],
      tokens_per_s=round(row_tokens / step_s, 1),
      nonpad_tokens_per_s=round(nonpad / step_s, 1),
      examples_per_s=round(rows / step_s, 2),
      model_flops_per_step=float(f"{flops:.4g}"), model_tflops=float(f"{rate / 1e12:.4g}"),
      mfu=None if peak is None else round(rate / peak, 4),
      peak_tflops=None if peak is None else peak / 1e12,
      attention_impl=attention or "default (xla)", cudnn_attention_in_hlo=cudnn_attention,
      scan_layers=cfg.scan_layers, remat_policy=cfg.remat_policy,
      loss=round(loss, 4), build_s=round(build_s, 1), data_s=round(data_s, 1),
      compile_s=round(compile_s, 1), compiled_memory_gib=compiled_gib, **_memory(jax.devices()[0]))
  out.update(info)
  if not math.isfinite(loss):
    out["warning"] = "non-finite loss"
  return out


def _resolve_attention(choice: str, platform: str) -> str | None:
  if choice == "auto":
    return "cudnn" if platform == "gpu" else None
  return None if choice == "default" else choice


def _child(args) -> int:
  """One run in this process: prints its JSON line after RESULT_MARK."""
  try:
    if args.one == "matmul":
      result = bench_matmul(args)
    else:
      import jax  # pylint: disable=g-import-not-at-top
      attention = _resolve_attention(args.attention, jax.devices()[0].platform)
      result = bench_run(args.one, args, attention)
  except Exception as e:  # pylint: disable=broad-except
    traceback.print_exc()
    result = {"run": args.one, "error": f"{type(e).__name__}: {str(e)[:2000]}"}
  print(RESULT_MARK + json.dumps(result), flush=True)
  return 0


RESULT_MARK = "@@accelerator-result@@ "


def _run_child(name: str, args, attention: str, timeout: float) -> dict[str, Any]:
  """Runs `name` in a child process; its result, or an error line if it died."""
  cmd = [sys.executable, os.path.abspath(__file__), f"--one={name}", f"--steps={args.steps}",
         f"--warmup={args.warmup}", f"--attention={attention}"]
  if args.smoke:
    cmd.append("--smoke")
  if args.peak_flops:
    cmd.append(f"--peak_flops={args.peak_flops}")
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=REPO, check=False)
  except subprocess.TimeoutExpired as e:
    tail = (e.stderr or b"")[-1500:] if isinstance(e.stderr, bytes) else (e.stderr or "")[-1500:]
    return {"run": name, "error": f"timed out after {timeout:.0f} s", "stderr_tail": str(tail)}
  for line in proc.stdout.splitlines():
    if line.startswith(RESULT_MARK):
      result = json.loads(line[len(RESULT_MARK):])
      if "error" in result:
        result["stderr_tail"] = proc.stderr[-1500:]
      return result
  return {"run": name, "error": f"child exited with status {proc.returncode} and no result "
          "(killed: out of host memory, or a crash)", "stderr_tail": proc.stderr[-1500:]}


def _describe(name: str, result: dict[str, Any], smoke: bool) -> dict[str, Any]:
  """Adds the run's task and preset to a result (an error line has neither)."""
  run = RUNS.get(name)
  if run is not None:
    result.setdefault("task", run.task)
    result.setdefault("preset", run.smoke_preset if smoke else run.preset)
  return result


def _in_process(name: str, args, attention: str) -> dict[str, Any]:
  try:
    if name == "matmul":
      return bench_matmul(args)
    import jax  # pylint: disable=g-import-not-at-top
    return bench_run(name, args, _resolve_attention(attention, jax.devices()[0].platform))
  except Exception as e:  # pylint: disable=broad-except
    traceback.print_exc()
    return {"run": name, "error": f"{type(e).__name__}: {str(e)[:2000]}"}


# What recjax needs to build and train these runs, with the lowest versions it is tested with
# (setup.py's CORE), in import order: the device image lacks the first five.
REQUIRED = (("array_record", "0.8.1"), ("portpicker", ""), ("grain", "0.2.18"),
            ("ml_collections", "1.1"), ("gin_config", "0.5"), ("optax", "0.2.8"),
            ("flax", "0.12.8"))
WHEELS_DOWNLOAD = (
    "python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 "
    "--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 "
    "--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 "
    "--platform manylinux1_x86_64 -d .whl grain==0.2.18 array_record==0.8.6 gin-config==0.5.0 "
    "ml_collections==1.1.0 portpicker==1.6.0 optax==0.2.8 flax==0.12.8")


def _version(text: str) -> tuple[int, ...]:
  """'0.12.10rc1' -> (0, 12, 10); '1.1' -> (1, 1, 0)."""
  parts = []
  for piece in text.split(".")[:3]:
    digits = piece[:len(piece) - len(piece.lstrip("0123456789"))]  # leading digits
    if not digits:
      break
    parts.append(int(digits))
  return tuple(parts + [0] * (3 - len(parts)))


def _normalise(name: str) -> str:
  return name.lower().replace("-", "_").replace(".", "_")


def ensure_packages(wheels: str, site: str) -> list[str]:
  """Installs from the wheels in `wheels` each REQUIRED package that is missing or older than
  its minimum, into `site` (pip --target, no index, no dependencies), and puts `site` first
  on sys.path and PYTHONPATH. Returns the wheel files installed."""
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  if os.path.isdir(site):
    sys.path.insert(0, site)  # an earlier call's installs count as present
  needed = set()
  for name, minimum in REQUIRED:
    try:
      found = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      needed.add(name)
      continue
    if minimum and _version(found) < _version(minimum):
      needed.add(name)
  files = sorted(f for f in os.listdir(wheels)
                 if f.endswith(".whl") and _normalise(f.split("-")[0]) in needed)
  missing = needed - {_normalise(f.split("-")[0]) for f in files}
  if missing:
    raise RuntimeError(f"{sorted(missing)} missing or too old and no wheel of them in {wheels}; "
                       f"download them where pip reaches PyPI: {WHEELS_DOWNLOAD}")
  if files:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                    "--no-compile", "--no-cache-dir", "--upgrade", "--target", site,
                    *[os.path.join(wheels, f) for f in files]], check=True)
    importlib.invalidate_caches()
  if site not in sys.path:
    sys.path.insert(0, site)
  os.environ["PYTHONPATH"] = os.pathsep.join(
      p for p in (site, os.environ.get("PYTHONPATH")) if p)
  return files


def _smoke_environment() -> None:
  """--smoke: XLA's backend optimisations off (halves CPU compile time: the figures of a
  smoke run mean nothing anyway) and a compilation cache the children share, so that runs
  whose tiny programs are identical compile once. Set before JAX starts; inherited by
  children."""
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_backend_optimization_level" not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
      tempfile.gettempdir(), f"recjax_accelerator_smoke_cache_{os.getuid()}"))
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def _gpu_failure(result: dict[str, Any]) -> bool:
  """Whether a failed run was a GPU run (asked cuDNN attention) worth retrying with XLA."""
  text = result.get("error", "") + result.get("stderr_tail", "")
  text = text.lower()
  if "resource_exhausted" in text or "out of memory" in text:
    return False  # XLA's attention needs more memory, not less
  return any(k in text for k in ("cudnn", "fmha", "dot_product_attention", "custom-call",
                                 "custom_call"))


def _fmt(v, spec: str = "") -> str:
  if v is None:
    return "-"
  return format(v, spec) if spec else str(v)


def markdown(results: list[dict[str, Any]]) -> str:
  """The table printed at the end: one row per result line."""
  head = ("| run | preset | params (trainable) | batch x seq | attention | step s | tokens/s | "
          "examples/s | model TFLOP/s | MFU | peak mem GiB | compile s |")
  lines = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
  for r in results:
    if "error" in r or "skipped" in r:
      why = r.get("error") or r.get("skipped")
      lines.append(f"| {r['run']} | {r.get('preset', '-')} | {str(why)[:120]} |" +
                   " |" * 9)
      continue
    if r["run"] == "matmul":
      lines.append(f"| matmul | {r['preset']} | - | - | - | {r['step_s']:.5f} | - | - | "
                   f"{r['model_tflops']} | {_fmt(r['mfu'], '.1%')} | - | - |")
      continue
    trainable = (f" ({r['trainable_params'] / 1e6:.2f}M)"
                 if r["trainable_params"] != r["params"] else "")
    item = r.get("item_row_len")
    shape = f"{r['batch']} x {r['seq_len']}" + (f" (+{item})" if item else "")
    attention = r["attention_impl"] + (" [cuDNN fmha]" if r["cudnn_attention_in_hlo"] else "")
    lines.append(
        f"| {r['run']} | {r['preset']} | {r['params'] / 1e6:.1f}M{trainable} | {shape} | "
        f"{attention} | {r['step_s']:.4f} | {r['tokens_per_s']:,.0f} | {r['examples_per_s']:.1f}"
        f" | {r['model_tflops']} | {_fmt(r['mfu'], '.1%')} | {_fmt(r['peak_memory_gib'])} | "
        f"{r['compile_s']} |")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--runs", default=DEFAULT_RUNS,
                      help=f"comma list of: matmul, {', '.join(RUNS)}")
  parser.add_argument("--steps", type=int, default=8, help="timed steps (median reported)")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
  parser.add_argument("--out", default="", help="JSONL file, one line per run")
  parser.add_argument("--smoke", action="store_true",
                      help="tiny presets, short rows: the whole path on a CPU in seconds")
  parser.add_argument("--attention", default="auto", choices=("auto", "cudnn", "xla", "default"),
                      help="LLMConfig.attention_impl: auto = cudnn on GPU (xla retried if it "
                      "fails), JAX's default elsewhere; default = None (JAX's choice)")
  parser.add_argument("--peak_flops", type=float, default=0.0,
                      help="peak FLOP/s of the device for MFU; 0 = PEAK_FLOPS by device kind")
  parser.add_argument("--no-isolate", dest="isolate", action="store_false",
                      help="run every run in this process (peak memory then accumulates)")
  parser.add_argument("--budget_s", type=float, default=420.0,
                      help="start no run after this many seconds (the rest: skipped)")
  parser.add_argument("--deadline_s", type=float, default=540.0,
                      help="a child still running at this many seconds is stopped")
  parser.add_argument("--run_timeout_s", type=float, default=240.0,
                      help="a child running longer than this is stopped")
  parser.add_argument("--wheels", default="",
                      help="a folder of wheels: install from it the REQUIRED packages that are "
                      "missing or too old (a machine without network)")
  parser.add_argument("--site", default=os.path.join(tempfile.gettempdir(), "recjax_site"),
                      help="where --wheels installs (pip --target)")
  parser.add_argument("--one", default="", help=argparse.SUPPRESS)  # child mode
  args = parser.parse_args(argv)
  # JAX preallocates 75% of GPU memory by default: let a run use what the device has.
  os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")
  if REPO not in sys.path:
    sys.path.insert(0, REPO)  # recjax from this checkout when it is not installed
  if args.smoke:
    _smoke_environment()
  if args.one:
    return _child(args)
  if args.wheels:
    installed = ensure_packages(args.wheels, args.site)
    print(f"installed from {args.wheels} into {args.site}: {installed or 'nothing needed'}",
          flush=True)

  names = [n.strip() for n in args.runs.split(",") if n.strip()]
  unknown = [n for n in names if n != "matmul" and n not in RUNS]
  if unknown:
    parser.error(f"unknown runs {unknown}; known: matmul, {', '.join(RUNS)}")
  if args.steps < 1 or args.warmup < 0:
    parser.error("--steps must be >= 1 and --warmup >= 0")
  out = open(args.out, "w", encoding="utf-8") if args.out else None
  start = time.perf_counter()
  results = []

  def record(result: dict[str, Any]) -> None:
    result["elapsed_s"] = round(time.perf_counter() - start, 1)
    results.append(result)
    line = json.dumps(result)
    print(line, flush=True)
    if out:
      out.write(line + "\n")
      out.flush()

  cudnn_failures = 0
  for name in names:
    elapsed = time.perf_counter() - start
    if elapsed > args.budget_s:
      record(_describe(name, {"run": name,
                              "skipped": f"--budget_s={args.budget_s:.0f} s spent"},
                       args.smoke))
      continue
    # After two runs that failed with cuDNN attention, the rest start with XLA's.
    attentions = ["xla" if args.attention == "auto" and cudnn_failures >= 2 else args.attention]
    for attention in attentions:
      if args.isolate:
        timeout = max(30.0, min(args.run_timeout_s,
                                args.deadline_s - (time.perf_counter() - start)))
        result = _run_child(name, args, attention, timeout)
      else:
        result = _in_process(name, args, attention)
      result.setdefault("attention_asked", attention)
      record(_describe(name, result, args.smoke))
      # A GPU run that failed with cuDNN attention is run again with XLA's.
      if ("error" in result and attention == "auto" and name != "matmul" and
          "timed out" not in result["error"] and
          time.perf_counter() - start < args.budget_s and _gpu_failure(result)):
        cudnn_failures += 1
        attentions.append("xla")
  if out:
    out.close()
  print()
  print(markdown(results))
  return 0


if __name__ == "__main__":
  sys.exit(main())

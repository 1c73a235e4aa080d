"""LLM-backbone training and decoding speed on CPU: recjax against transformers (PyTorch).

    python benchmarks/lm_cpu.py --steps=5 --warmup=1 --no-scan   # as in docs/benchmarks.md
    python benchmarks/lm_cpu.py --steps=5 --warmup=1 --no-scan --no-decode --torch_allocator=retain
    python benchmarks/lm_cpu.py --sizes=10m --steps=10 --no-decode

For each size (`10m`, `50m`: Llama-style, SwiGLU, RMSNorm, RoPE, untied embeddings, float32
unless --dtype=bfloat16) it times training steps of recjax's real path (`LMTask.loss` inside the
shared trainer's jitted step: AdamW, packed-row masks) and of a `transformers.LlamaForCausalLM`
loop of the identical configuration (same vocabulary, width, layers, heads, sequence length,
batch and AdamW; `torch.set_num_threads(--threads)`) on the same random token batches. Each
framework runs in a worker process of its own (in one process, one framework's idle thread pool
slowed the other's steps); their timed steps alternate in lockstep, so that changes in machine
load hit both alike (medians). Each training row also gives the step's matmul FLOP rate and that
as a fraction of the same framework's rate on one large matmul of the model's MLP shape
(`fraction_of_matmul_rate`): the headroom a faster step could still use. Then (unless
--no-decode) greedy KV-cache decoding tokens/s of the 10m model with
`recjax.models.decoding.generate` at batch 1 and 64. Prints one JSON line per measurement and a
final summary line with the recjax / transformers ratios and the 1-minute load average before
and after: on a shared machine other jobs slow both sides, transformers' OpenMP threads more.
The recjax process keeps freed host memory for reuse (recjax/train/host_memory.py, on import);
`--torch_allocator=retain` gives the transformers process the same glibc settings, the fair
comparison: a process that unmaps and re-faults its buffers each step also slows the other one.
About 4-5 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import subprocess
import time

import jax
import numpy as np

SIZES = {
    # name: (vocab, hidden, layers, heads, mlp)
    "10m": (8192, 256, 6, 4, 1024),
    "50m": (8192, 512, 10, 8, 2048),
}


def load() -> float:
  return os.getloadavg()[0]


def machine() -> str:
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next(l.split(":", 1)[1].strip() for l in out.splitlines() if "Model name" in l)
  except (OSError, StopIteration):
    model = platform.processor()
  return f"{os.cpu_count()}-core {model}"


def lm_config(size: str, seq_len: int, batch: int, dtype: str, scan_layers: bool = True):
  """An `lm` experiment config for SIZES[size]; data comes from `batches`, not the corpus."""
  from recjax import config as config_lib  # pylint: disable=g-import-not-at-top
  vocab, hidden, layers, heads, mlp = SIZES[size]
  config = config_lib.base_config("lm")
  config.data.dataset = dict(name="synthetic", num_users=64, num_items=32, num_clusters=4)
  config.text.seq_len = seq_len
  config.model.preset = "tiny_llama"
  config.model.vocab_size = vocab
  config.model.dtype = dtype
  config.model.overrides = dict(hidden_size=hidden, num_layers=layers, num_heads=heads,
                                num_kv_heads=heads, head_dim=hidden // heads, mlp_dim=mlp,
                                rope_scaling="default", rope_theta=10000.0,
                                scan_layers=scan_layers)
  config.train.batch_size = batch
  config.train.num_steps = 1000
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 1e-4
  config.optimizer.b2 = 0.95
  config.optimizer.weight_decay = 0.01
  return config


def batches(vocab: int, batch: int, seq_len: int, n: int, seed: int = 0) -> list[np.ndarray]:
  rng = np.random.default_rng(seed)
  return [rng.integers(4, vocab, (batch, seq_len), dtype=np.int64) for _ in range(n)]


def setup_recjax(size, args, data):
  """Compiles and warms up recjax's train step; returns (step(i) -> loss, info)."""
  from recjax.tasks.lm import LMTask  # pylint: disable=g-import-not-at-top
  from recjax.train import sharding as shard_lib  # pylint: disable=g-import-not-at-top
  from recjax.train import trainer  # pylint: disable=g-import-not-at-top
  config = lm_config(size, args.seq_len, args.batch, args.dtype, args.scan_layers)
  task = LMTask(config)
  mesh = shard_lib.make_mesh({"data": 1}, jax.devices()[:1])
  state = trainer.create_train_state(config, task, mesh)
  step_fn = trainer.make_train_step(config, task, state, mesh)
  ones = np.ones((args.batch, args.seq_len), np.int32)
  positions = np.broadcast_to(np.arange(args.seq_len, dtype=np.int32), ones.shape)
  batches = [shard_lib.global_batch({"tokens": d.astype(np.int32), "segment_ids": ones,
                                     "positions": positions, "loss_mask": ones}, mesh)
             for d in data]

  def step(i):
    with jax.set_mesh(mesh):
      state.state, metrics = step_fn(state.state, batches[i % len(batches)], i + 1)
      return float(metrics["loss"])  # waits for the step

  start = time.perf_counter()
  first_loss = step(0)
  info = {"framework": "recjax", "size": size, "params": task.model_config.num_params(),
          "scan_layers": args.scan_layers,
          "first_step_s": round(time.perf_counter() - start, 2), "first_loss": round(first_loss, 4)}
  for i in range(args.warmup):
    step(1 + i)
  return step, info


def setup_torch(size, args, data):
  """The identical model and AdamW in transformers; returns (step(i) -> loss, info)."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  vocab, hidden, layers, heads, mlp = SIZES[size]
  cfg = transformers.LlamaConfig(
      vocab_size=vocab, hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
      num_attention_heads=heads, num_key_value_heads=heads, head_dim=hidden // heads,
      max_position_embeddings=max(args.seq_len, 2048), rope_theta=10000.0, rms_norm_eps=1e-5,
      tie_word_embeddings=False, attention_bias=False, mlp_bias=False, initializer_range=0.02)
  cfg._attn_implementation = "sdpa"  # pylint: disable=protected-access
  model = transformers.LlamaForCausalLM(cfg).float().train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8,
                          weight_decay=0.01)
  batches = [torch.from_numpy(d) for d in data]

  # Mixed precision as recjax's `dtype`: fp32 parameters and optimizer, bf16 matmuls.
  autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

  def step(i):
    ids = batches[i % len(batches)]
    with autocast:
      loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())

  start = time.perf_counter()
  first_loss = step(0)
  info = {"framework": "transformers", "size": size,
          "params": sum(p.numel() for p in model.parameters()),
          "first_step_s": round(time.perf_counter() - start, 2), "first_loss": round(first_loss, 4),
          "torch_threads": args.threads}
  for i in range(args.warmup):
    step(1 + i)
  return step, info


def train_flops_per_token(size: str, seq_len: int) -> float:
  """Matmul FLOPs of one training token (forward + backward = 3x forward; causal attention
  counted in full, as both frameworks compute it)."""
  vocab, hidden, layers, _, mlp = SIZES[size]
  dense = layers * (4 * hidden * hidden + 3 * hidden * mlp) + hidden * vocab
  attention = layers * 2 * seq_len * hidden  # q.k and p.v
  return 3 * 2 * (dense + attention)


def matmul_gflops(framework: str, size: str, args) -> float:
  """The framework's throughput on one large matmul of the model's MLP shape: the ceiling
  against which its training step's FLOP rate is read."""
  _, hidden, _, _, mlp = SIZES[size]
  rows = args.batch * args.seq_len
  rng = np.random.default_rng(0)
  a = rng.standard_normal((rows, hidden), np.float32)
  b = rng.standard_normal((hidden, mlp), np.float32)
  if framework == "recjax":
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    dot = jax.jit(jnp.dot)
    xa, xb = jnp.asarray(a, args.dtype), jnp.asarray(b, args.dtype)
    run = lambda: dot(xa, xb).block_until_ready()
  else:
    import torch  # pylint: disable=g-import-not-at-top
    ta, tb = (torch.from_numpy(x).to(getattr(torch, args.dtype)) for x in (a, b))
    run = lambda: torch.matmul(ta, tb)
  run()
  times = []
  for _ in range(10):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return 2 * rows * hidden * mlp / float(np.median(times)) / 1e9


def _worker(framework: str, size: str, args, conn) -> None:
  """One framework in its own process: set up, then one timed step per request."""
  if framework == "transformers" and args.torch_allocator == "retain":
    from recjax.train import host_memory  # pylint: disable=g-import-not-at-top
    host_memory.retain_host_allocations()  # as recjax's own process does on import
  data = batches(SIZES[size][0], args.batch, args.seq_len, 4)
  setup = setup_recjax if framework == "recjax" else setup_torch
  step, info = setup(size, args, data)
  info["matmul_gflops"] = round(matmul_gflops(framework, size, args), 1)
  conn.send(info)
  profile = args.profile and framework == "recjax"
  if profile:
    jax.profiler.start_trace(os.path.join(args.profile, size))
  while (i := conn.recv()) is not None:
    start = time.perf_counter()
    loss = step(i)
    conn.send((time.perf_counter() - start, loss))
  if profile:
    jax.profiler.stop_trace()


def bench_training(size, args) -> list[dict]:
  """Both frameworks' steps, interleaved so that load changes hit both alike.

  Each framework runs in a process of its own: in one process, the idle thread pool of one
  (OpenMP threads spin after each op) slowed the other's next step by up to 45%.
  """
  frameworks = ["recjax"] + ([] if args.skip_torch else ["transformers"])
  ctx = multiprocessing.get_context("spawn")
  conns, procs, infos = [], [], []
  for framework in frameworks:  # one at a time, so that neither compiles while the other runs
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_worker, args=(framework, size, args, child))
    proc.start()
    infos.append(parent.recv())
    conns.append(parent)
    procs.append(proc)
  times = [[] for _ in frameworks]
  losses = [0.0 for _ in frameworks]
  for i in range(args.steps):
    for k, conn in enumerate(conns):
      time.sleep(0.5)  # lets the other framework's worker threads go idle first
      conn.send(100 + i)
      seconds, losses[k] = conn.recv()
      times[k].append(seconds)
  for conn, proc in zip(conns, procs):
    conn.send(None)
    proc.join()
  flops = train_flops_per_token(size, args.seq_len)
  out = []
  for info, t, loss in zip(infos, times, losses):
    step_s = float(np.median(t))
    tokens_per_s = args.batch * args.seq_len / step_s
    # The step's matmul FLOP rate, and that as a fraction of the framework's own large-matmul
    # rate on this machine: how much headroom the step leaves.
    step_gflops = tokens_per_s * flops / 1e9
    out.append(dict(info, step_s_median=round(step_s, 4), step_s_all=[round(x, 3) for x in t],
                    tokens_per_s=round(tokens_per_s, 1), final_loss=round(loss, 4),
                    step_gflops=round(step_gflops, 1),
                    fraction_of_matmul_rate=round(step_gflops / info["matmul_gflops"], 2)))
  return out


def bench_decode(args) -> list[dict]:
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from recjax.models import decoding, llm  # pylint: disable=g-import-not-at-top
  vocab, hidden, layers, heads, mlp = SIZES["10m"]
  cfg = llm.get_preset("tiny_llama", vocab_size=vocab, hidden_size=hidden, num_layers=layers,
                       num_heads=heads, num_kv_heads=heads, head_dim=hidden // heads,
                       mlp_dim=mlp, dtype=args.dtype, rope_scaling="default")
  model = llm.LLM(cfg, rngs=nnx.Rngs(0))
  out = []
  for batch in (1, 64):
    rng = np.random.default_rng(batch)
    prompts = rng.integers(4, vocab, (batch, args.prompt_len)).astype(np.int32)
    dc = decoding.DecodeConfig(max_new_tokens=args.new_tokens)
    start = time.perf_counter()
    jax.block_until_ready(decoding.generate(model, prompts, config=dc).tokens)
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(3):
      start = time.perf_counter()
      jax.block_until_ready(decoding.generate(model, prompts, config=dc).tokens)
      times.append(time.perf_counter() - start)
    t = float(np.median(times))
    out.append({"framework": "recjax", "size": "10m", "decode_batch": batch,
                "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
                "compile_s": round(compile_s, 2), "seconds_median": round(t, 4),
                "generated_tokens_per_s": round(batch * args.new_tokens / t, 1)})
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sizes", default="10m,50m")
  parser.add_argument("--seq_len", type=int, default=256)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--steps", type=int, default=8, help="timed steps (median reported)")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
  parser.add_argument("--dtype", default="float32",
                      help="compute dtype of both: float32, or bfloat16 (recjax's model dtype; "
                      "torch.autocast on the transformers side); parameters stay float32")
  parser.add_argument("--no-decode", dest="decode", action="store_false")
  parser.add_argument("--no-scan", dest="scan_layers", action="store_false",
                      help="unrolled layers (LLMConfig.scan_layers=False)")
  parser.add_argument("--skip_torch", action="store_true")
  parser.add_argument("--profile", default="",
                      help="write a jax.profiler trace of recjax's timed steps under this directory")
  parser.add_argument("--torch_allocator", default="system", choices=("system", "retain"),
                      help="the transformers process's glibc malloc: as shipped, or with the "
                      "settings recjax applies to its own (recjax/train/host_memory.py)")
  parser.add_argument("--prompt_len", type=int, default=32)
  parser.add_argument("--new_tokens", type=int, default=64)
  args = parser.parse_args()

  summary = {"machine": machine(), "load_before": round(load(), 2), "seq_len": args.seq_len,
             "batch": args.batch, "dtype": args.dtype, "jax": jax.__version__,
             "torch_allocator": args.torch_allocator}
  for size in args.sizes.split(","):
    results = bench_training(size, args)
    for r in results:
      print(json.dumps(r), flush=True)
    summary[f"train_{size}"] = {f"{r['framework']}_tokens_per_s": r["tokens_per_s"]
                                for r in results}
    summary[f"train_{size}"].update(
        {f"{r['framework']}_fraction_of_matmul_rate": r["fraction_of_matmul_rate"]
         for r in results})
    if len(results) == 2:
      summary[f"train_{size}"]["ratio"] = round(
          results[0]["tokens_per_s"] / results[1]["tokens_per_s"], 2)
  if args.decode:
    for d in bench_decode(args):
      print(json.dumps(d), flush=True)
      summary[f"decode_batch{d['decode_batch']}_tokens_per_s"] = d["generated_tokens_per_s"]
  summary["load_after"] = round(load(), 2)
  print(json.dumps(summary), flush=True)


if __name__ == "__main__":
  main()

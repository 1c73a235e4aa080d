"""LLM-backbone training and decoding speed on CPU: recjax against transformers (PyTorch).

    python benchmarks/lm_cpu.py                      # both model sizes, training and decoding
    python benchmarks/lm_cpu.py --sizes=10m --steps=10 --no-decode

For each size (`10m`, `50m`: Llama-style, SwiGLU, RMSNorm, RoPE, untied embeddings, float32)
it times training steps of recjax's real path (`LMTask.loss` inside the shared trainer's jitted
step: AdamW, packed-row masks) and of a `transformers.LlamaForCausalLM` loop of the identical
configuration (same vocabulary, width, layers, heads, sequence length, batch and AdamW;
`torch.set_num_threads(--threads)`), one after the other in this process, on the same random
token batches. Then (unless --no-decode) greedy KV-cache decoding tokens/s of the 10M model with
`recjax.models.decoding.generate` at batch 1 and 64. Prints one JSON line per measurement and a
final summary line with the recjax / transformers ratios. The machine's 1-minute load average
before and after is included: on a shared machine other jobs slow both sides.
"""
from __future__ import annotations

import argparse
import json
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


def lm_config(size: str, seq_len: int, batch: int, dtype: str):
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
                                rope_scaling="default", rope_theta=10000.0)
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


def bench_recjax(size, args, data) -> dict:
  from recjax.tasks.lm import LMTask  # pylint: disable=g-import-not-at-top
  from recjax.train import sharding as shard_lib  # pylint: disable=g-import-not-at-top
  from recjax.train import trainer  # pylint: disable=g-import-not-at-top
  config = lm_config(size, args.seq_len, args.batch, args.dtype)
  task = LMTask(config)
  mesh = shard_lib.make_mesh({"data": 1}, jax.devices()[:1])
  state = trainer.create_train_state(config, task, mesh)
  step_fn = trainer.make_train_step(config, task, state, mesh)
  ones = np.ones((args.batch, args.seq_len), np.int32)

  def feed(tokens):
    b = {"tokens": tokens.astype(np.int32), "segment_ids": ones,
         "positions": np.broadcast_to(np.arange(args.seq_len, dtype=np.int32), ones.shape),
         "loss_mask": ones}
    return shard_lib.global_batch(b, mesh)

  with jax.set_mesh(mesh):
    start = time.perf_counter()
    state.state, metrics = step_fn(state.state, feed(data[0]), 1)
    first_loss = float(metrics["loss"])
    compile_s = time.perf_counter() - start
    for i in range(args.warmup):
      state.state, metrics = step_fn(state.state, feed(data[(1 + i) % len(data)]), 2 + i)
    jax.block_until_ready(metrics)
    times = []
    for i in range(args.steps):
      start = time.perf_counter()
      state.state, metrics = step_fn(state.state, feed(data[i % len(data)]), 100 + i)
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - start)
  step_s = float(np.median(times))
  return {"framework": "recjax", "size": size, "params": task.model_config.num_params(),
          "compile_s": round(compile_s, 2), "step_s_median": round(step_s, 4),
          "tokens_per_s": round(args.batch * args.seq_len / step_s, 1),
          "first_loss": round(first_loss, 4), "final_loss": round(float(metrics["loss"]), 4)}


def bench_torch(size, args, data) -> dict:
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

  def step(tokens):
    ids = torch.from_numpy(tokens)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss)

  start = time.perf_counter()
  first_loss = step(data[0])
  first_s = time.perf_counter() - start
  for i in range(args.warmup):
    step(data[(1 + i) % len(data)])
  times = []
  for i in range(args.steps):
    start = time.perf_counter()
    loss = step(data[i % len(data)])
    times.append(time.perf_counter() - start)
  step_s = float(np.median(times))
  return {"framework": "transformers", "size": size,
          "params": sum(p.numel() for p in model.parameters()),
          "compile_s": round(first_s, 2), "step_s_median": round(step_s, 4),
          "tokens_per_s": round(args.batch * args.seq_len / step_s, 1),
          "first_loss": round(first_loss, 4), "final_loss": round(loss, 4),
          "torch_threads": args.threads}


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
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--no-decode", dest="decode", action="store_false")
  parser.add_argument("--prompt_len", type=int, default=32)
  parser.add_argument("--new_tokens", type=int, default=64)
  args = parser.parse_args()

  summary = {"machine": machine(), "load_before": round(load(), 2), "seq_len": args.seq_len,
             "batch": args.batch, "dtype": args.dtype, "jax": jax.__version__}
  for size in args.sizes.split(","):
    data = batches(SIZES[size][0], args.batch, args.seq_len, 4)
    r = bench_recjax(size, args, data)
    print(json.dumps(r), flush=True)
    t = bench_torch(size, args, data)
    print(json.dumps(t), flush=True)
    summary[f"train_{size}"] = {"recjax_tokens_per_s": r["tokens_per_s"],
                                "transformers_tokens_per_s": t["tokens_per_s"],
                                "ratio": round(r["tokens_per_s"] / t["tokens_per_s"], 2)}
  if args.decode:
    for d in bench_decode(args):
      print(json.dumps(d), flush=True)
      summary[f"decode_batch{d['decode_batch']}_tokens_per_s"] = d["generated_tokens_per_s"]
  summary["load_after"] = round(load(), 2)
  print(json.dumps(summary), flush=True)


if __name__ == "__main__":
  main()

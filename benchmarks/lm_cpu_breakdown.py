"""Where an LM training step's time goes on CPU: each part of the 10m model, forward and backward.

    python benchmarks/lm_cpu_breakdown.py [--size=10m] [--dtype=float32]

Times, jitted and in isolation, one decoder block's MLP and attention (with the packed-row mask
the LM task passes, and with `is_causal`), one RMSNorm, and the output projection plus
cross-entropy, each forward and forward+backward, at the shapes of `benchmarks/lm_cpu.py`
(batch 8 x 256 tokens), with the matmul FLOP rate of each. Layers x (MLP + attention + 2 norms)
+ head is the model's gradient; compare with `benchmarks/lm_cpu.py`'s step time. Then (unless
--no-torch) the same parts in transformers (`LlamaMLP`, `LlamaAttention` with SDPA, causal;
output projection + `cross_entropy`), timed the same way after the JAX parts.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from lm_cpu import SIZES
from recjax.models import llm


def timed(f, *args) -> float:
  """Median seconds of 7 calls after one warm-up (compilation) call."""
  jax.block_until_ready(f(*args))
  times = []
  for _ in range(7):
    start = time.perf_counter()
    jax.block_until_ready(f(*args))  # a no-op on torch's results
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def report(name: str, seconds: float, flops: float) -> None:
  rate = f"{flops / seconds / 1e9:7.1f} GFLOP/s" if flops else ""
  print(f"{name:38s} {seconds * 1e3:8.1f} ms {rate}", flush=True)


def part(name: str, module: nnx.Module, apply, x: jax.Array, flops: float) -> None:
  """Forward and forward+backward (parameters and input) of apply(module, x)."""
  graphdef, state = nnx.split(module)
  # A random cotangent: with a plain sum XLA simplifies the last matmul's backward away.
  cotangent = jax.random.normal(jax.random.key(1), x.shape, x.dtype)

  def loss(state, x):
    return jnp.sum((apply(nnx.merge(graphdef, state), x) * cotangent).astype(jnp.float32))

  report(f"{name} forward", timed(jax.jit(loss), state, x), flops)
  report(f"{name} forward+backward",
         timed(jax.jit(jax.grad(loss, argnums=(0, 1))), state, x), 3 * flops)


def part_flops(b: int, t: int, d: int, mlp: int, vocab: int) -> dict[str, float]:
  """Forward matmul FLOPs of each part."""
  return {"MLP": 2 * b * t * 3 * d * mlp,
          "attention": 2 * b * t * 4 * d * d + 2 * 2 * b * t * t * d,
          "head": 2 * b * t * d * vocab}


def torch_parts(args, vocab: int, d: int, heads: int, mlp: int) -> None:
  """The same parts in transformers, forward+backward."""
  import torch  # pylint: disable=g-import-not-at-top
  from transformers.models.llama import modeling_llama  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(args.threads)
  b, t = args.batch, args.seq_len
  cfg = modeling_llama.LlamaConfig(
      vocab_size=vocab, hidden_size=d, intermediate_size=mlp, num_hidden_layers=1,
      num_attention_heads=heads, num_key_value_heads=heads, head_dim=d // heads,
      attn_implementation="sdpa")
  x = torch.randn(b, t, d, requires_grad=True)
  mlp_module = modeling_llama.LlamaMLP(cfg)
  attention = modeling_llama.LlamaAttention(cfg, layer_idx=0)
  rope = modeling_llama.LlamaRotaryEmbedding(cfg)(x, torch.arange(t)[None].expand(b, t))
  head = torch.randn(d, vocab, requires_grad=True)
  targets = torch.randint(0, vocab, (b * t,))
  cotangent = torch.randn(b, t, d)
  flops = part_flops(b, t, d, mlp, vocab)
  parts = {
      "MLP": (lambda: mlp_module(x).backward(cotangent), flops["MLP"]),
      # No mask: transformers' SDPA path then runs causal (is_causal=True).
      "attention (is_causal)": (lambda: attention(x, rope, None)[0].backward(cotangent),
                                flops["attention"]),
      "head + cross-entropy": (lambda: torch.nn.functional.cross_entropy(
          x.reshape(-1, d) @ head, targets, reduction="sum").backward(), flops["head"]),
  }
  for name, (run, flops) in parts.items():
    report(f"transformers {name} forward+backward", timed(run), 3 * flops)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="10m", choices=sorted(SIZES))
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--seq_len", type=int, default=256)
  parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
  parser.add_argument("--no-torch", dest="torch", action="store_false")
  args = parser.parse_args()
  vocab, d, layers, heads, mlp = SIZES[args.size]
  b, t = args.batch, args.seq_len
  cfg = llm.get_preset("tiny_llama", vocab_size=vocab, hidden_size=d, num_layers=layers,
                       num_heads=heads, num_kv_heads=heads, head_dim=d // heads, mlp_dim=mlp,
                       dtype=args.dtype, scan_layers=False)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((b, t, d)), args.dtype)
  print(f"{args.size}: {layers} layers of width {d}, MLP {mlp}, vocabulary {vocab}; "
        f"batch {b} x {t} tokens, {args.dtype}")

  flops = part_flops(b, t, d, mlp, vocab)
  part("MLP", llm.MLP(cfg, rngs=nnx.Rngs(0)), lambda m, x: m(x), x, flops["MLP"])
  attention = llm.Attention(cfg, rngs=nnx.Rngs(0))
  sin, cos = llm._rope_tables(  # pylint: disable=protected-access
      jnp.broadcast_to(jnp.arange(t), (b, t)), llm.rope_inv_freq(d // heads, 10000.0))
  mask = jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool)), (b, 1, t, t))
  part("attention (mask)", attention,
       lambda m, x: m(x, sin, cos, mask, False, None, None)[0], x, flops["attention"])
  part("attention (is_causal)", attention,
       lambda m, x: m(x, sin, cos, None, True, None, None)[0], x, flops["attention"])
  norm = llm.RMSNorm(d, "embed", eps=1e-6, plus_one=False, dtype=args.dtype,
                     param_dtype="float32", rngs=nnx.Rngs(0))
  part("RMSNorm", norm, lambda m, x: m(x), x, 0)

  head = jnp.asarray(rng.standard_normal((d, vocab)) * 0.02, jnp.float32)
  targets = jnp.asarray(rng.integers(0, vocab, (b, t)))

  def head_loss(head, x):
    logits = jnp.dot(x.reshape(-1, d), head.astype(x.dtype)).reshape(b, t, vocab)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), targets).sum()

  report("head + cross-entropy forward", timed(jax.jit(head_loss), head, x), flops["head"])
  report("head + cross-entropy forward+backward",
         timed(jax.jit(jax.grad(head_loss, argnums=(0, 1))), head, x), 3 * flops["head"])
  if args.torch:
    torch_parts(args, vocab, d, heads, mlp)


if __name__ == "__main__":
  main()

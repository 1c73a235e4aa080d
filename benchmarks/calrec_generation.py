"""CALRec's BM25 generations: one prefill per user (num_samples) vs one per generation.

    JAX_PLATFORMS=cpu python benchmarks/calrec_generation.py [--users=64] [--k=10]

`BM25Evaluator` samples K texts per user. It used to repeat each prompt K times (K prefills of
the same history) and then run a full forward over prompt + generation per row to score it;
now `DecodeConfig(num_samples=K)` prefills each prompt once, copies its KV cache to the K rows
and sums the log-probabilities inside the decoding loop. Both run here, in one process, on the
configs/calrec.py backbone (`tiny_llama` 4 x 128, random weights, an 8,064-token vocabulary)
with prompts as long as its histories (`--prompt_len`) and generations as long as its item
titles (`--new_tokens`): each path once to compile, then timed. Prints users/s of each, their
ratio, and whether the two give the same tokens and log-probabilities.

Then the decoding step alone (`--new_tokens` steps of batch x K rows over a full-length cache)
with the KV cache laid out both ways the model supports: one stacked (layers, ...) array (what
a scanned model keeps; an unrolled model used to re-stack it every step) and one array per layer
(the unrolled model's now): ms per step of each, and their ratio.
"""
from __future__ import annotations

import argparse
import functools
import time

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from recjax import config as config_lib
from recjax.models import decoding
from recjax.models import llm


@functools.partial(jax.jit, static_argnames=("graphdef",))
def rescored(graphdef, state, prompts, lengths, generated, gen_lengths):
  """[B] summed log-probability of each row's generation: a full forward (the old path)."""
  model = nnx.merge(graphdef, state)
  p = prompts.shape[1]
  tokens = jnp.concatenate([prompts, generated], axis=1)
  slot = jnp.arange(tokens.shape[1])
  pad = p - lengths
  real = (slot[None] >= pad[:, None]) & (slot[None] < p + gen_lengths[:, None])
  positions = jnp.maximum(slot[None] - pad[:, None], 0)
  logits = model(tokens, positions=positions, segment_ids=real.astype(jnp.int32)).logits
  logp = jax.nn.log_softmax(logits[:, p - 1:-1].astype(jnp.float32), axis=-1)
  picked = jnp.take_along_axis(logp, generated[..., None], axis=-1)[..., 0]
  counted = jnp.arange(generated.shape[1])[None] < gen_lengths[:, None]
  return jnp.sum(jnp.where(counted, picked, 0.0), axis=1)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--users", type=int, default=64, help="users timed (whole batches)")
  parser.add_argument("--batch", type=int, default=32, help="users per call (eval.batch_size)")
  parser.add_argument("--k", type=int, default=10, help="generations per user")
  parser.add_argument("--prompt_len", type=int, default=224, help="history tokens per prompt")
  parser.add_argument("--new_tokens", type=int, default=28, help="tokens per generation")
  parser.add_argument("--vocab", type=int, default=8064)
  args = parser.parse_args()

  backbone = config_lib.cpu_backbone(config_lib.base_config("calrec")).model
  model = llm.create_model(backbone.preset, seed=0, vocab_size=args.vocab,
                           **dict(backbone.overrides))
  graphdef, state = nnx.split(model)
  rng = np.random.default_rng(0)
  batches = []
  for _ in range(max(1, args.users // args.batch)):
    lengths = rng.integers(args.prompt_len // 2, args.prompt_len + 1, args.batch)
    rows = [rng.integers(3, args.vocab, n).tolist() for n in lengths]
    batches.append(decoding.left_pad(rows, 0, args.prompt_len))
  cfg = decoding.DecodeConfig(max_new_tokens=args.new_tokens, method="sample", temperature=1.0,
                              stop_tokens=(1,), pad_id=0)
  key = jax.random.key(0)

  def per_generation(prompts, lengths):
    rep = jnp.asarray(np.repeat(prompts, args.k, 0)), jnp.asarray(np.repeat(lengths, args.k))
    out = decoding.generate(model, *rep, cfg, rng=key)
    return out.tokens, rescored(graphdef, state, *rep, out.tokens, out.lengths)

  def per_user(prompts, lengths):
    out = decoding.generate(model, prompts, lengths,
                            decoding.DecodeConfig(**{**cfg.__dict__, "num_samples": args.k}),
                            rng=key)
    return out.tokens, out.log_probs

  results = {}
  for name, fn in (("one prefill per generation + rescoring", per_generation),
                   ("one prefill per user (num_samples)", per_user)):
    jax.block_until_ready(fn(*batches[0]))  # compile
    start = time.perf_counter()
    outs = [jax.block_until_ready(fn(*b)) for b in batches]
    seconds = time.perf_counter() - start
    results[name] = (seconds, outs)
    print(f"{name}: {len(batches) * args.batch / seconds:.1f} users/s ({seconds:.2f} s)")
  (old_s, old), (new_s, new) = results.values()
  same = all(np.array_equal(a[0], b[0]) for a, b in zip(old, new))
  diff = max(float(np.max(np.abs(np.asarray(a[1]) - np.asarray(b[1])))) for a, b in zip(old, new))
  print(f"speed-up {old_s / new_s:.2f}x; same tokens: {same}; largest log-prob difference "
        f"{diff:.2e}; {args.batch} users x {args.k} generations per call, prompts of "
        f"{args.prompt_len} tokens, {args.new_tokens} new tokens")
  time_cache_layouts(model, args.batch * args.k, args.prompt_len + args.new_tokens,
                     args.new_tokens)


def time_cache_layouts(model, rows: int, cache_len: int, steps: int) -> None:
  """ms per decoding step with a stacked vs a per-layer KV cache, the same model and tokens."""
  graphdef, state = nnx.split(model)

  @jax.jit
  def decode(state, cache):
    model = nnx.merge(graphdef, state)

    def body(i, carry):
      tokens, cache = carry
      logits, cache = decoding._step(model, tokens, jnp.full((rows,), i, jnp.int32), cache)  # pylint: disable=protected-access
      return jnp.argmax(logits, -1).astype(jnp.int32), cache
    return jax.lax.fori_loop(0, steps, body, (jnp.ones((rows,), jnp.int32), cache))[0]

  def cache(stacked: bool):
    c = llm.KVCache.create(model.cfg, rows, cache_len)
    c = c.replace(segment_ids=jnp.ones_like(c.segment_ids),
                  index=jnp.asarray(cache_len - steps, jnp.int32))
    return c.replace(k=jnp.stack(c.k), v=jnp.stack(c.v)) if stacked else c

  times = {}
  for name, stacked in (("stacked (layers, ...) array", True), ("one array per layer", False)):
    jax.block_until_ready(decode(state, cache(stacked)))
    c = cache(stacked)
    start = time.perf_counter()
    jax.block_until_ready(decode(state, c))
    times[name] = (time.perf_counter() - start) / steps * 1e3
    print(f"decoding step, KV cache as {name}: {times[name]:.0f} ms ({rows} rows, "
          f"{cache_len} slots)")
  a, b = times.values()
  print(f"per-layer cache: {a / b:.2f}x")


if __name__ == "__main__":
  main()

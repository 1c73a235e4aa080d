"""Semantic IDs by a top-k sparse autoencoder (the synthetic-curriculum paper's best quantiser).

    a = TopK_k(ReLU(W_enc (x - b_pre) + b_enc))        x_hat = b_pre + sum_i a_i d_i

(Gao et al. 2024's top-k SAE.) The decoder directions d_i are the rows of `W_dec` normalised to
unit length in the forward pass, so an activation a_i is the length of latent i's contribution
and activations of different latents compare. `W_enc` starts as the transpose of `W_dec`. Loss
per item: `||x - x_hat||^2` (summed over dimensions). Trained by the shared trainer through the
`sae` task (recjax/tasks/semantic_ids.py).

An item's code is its k most active latent indices in order of activation (largest first; ties
by the smaller index, as `jax.lax.top_k`), plus the collision level: `<a_i1><b_i2>...`. Every
position indexes the same `num_latents` dictionary. An item with fewer than k positive
activations still gets k indices (the next ones have activation 0, in index order); the report
counts such items.

Report per position j: utilisation (distinct latents at position j / num_latents), perplexity,
and the error of reconstructing from the first j latents, `mean ||x - b_pre - sum_{i<=j} a_i
d_i||^2` (relative: divided by `mean ||x||^2`).

Small catalogues: more latents than items is allowed (an SAE dictionary is overcomplete by
design); at most `items * k` latents can be used, which the utilisation shows.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from recjax.curriculum import semantic_ids as sid
from recjax.curriculum.rqvae import batched_apply, usage_metrics


@dataclasses.dataclass(frozen=True)
class SAEConfig:
  """Top-k SAE knobs (docs/curriculum.md)."""

  input_dim: int  # width of the item embeddings
  num_latents: int = 4096  # dictionary size (the paper's codes reach REC6594: ~8192 there)
  k: int = 8  # active latents per item = code length before the collision level (the paper: 8)
  collision_level: bool = True  # append the index among items sharing a code (unique codes)


class TopKSAE(nnx.Module):
  """Linear encoder + ReLU, the k largest activations kept, linear decoder of unit directions."""

  def __init__(self, config: SAEConfig, rngs: nnx.Rngs):
    if not 1 <= config.k <= config.num_latents:
      raise ValueError(f"SAEConfig needs 1 <= k <= num_latents, got k={config.k}, "
                       f"num_latents={config.num_latents}")
    self.config = config
    d, m = config.input_dim, config.num_latents
    w = jax.random.normal(rngs.params(), (m, d))
    w = w / jnp.linalg.norm(w, axis=-1, keepdims=True)
    self.w_dec = nnx.Param(w)
    self.w_enc = nnx.Param(w.T)
    self.b_enc = nnx.Param(jnp.zeros(m))
    self.b_pre = nnx.Param(jnp.zeros(d))

  def directions(self) -> jax.Array:
    """[num_latents, input_dim] unit decoder directions."""
    w = self.w_dec[...]
    return w / jnp.maximum(jnp.linalg.norm(w, axis=-1, keepdims=True), 1e-8)

  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(activations [B, k], latent indices [B, k]), largest activation first."""
    pre = jax.nn.relu((x - self.b_pre[...]) @ self.w_enc[...] + self.b_enc[...])
    return jax.lax.top_k(pre, self.config.k)

  def decode(self, values: jax.Array, indices: jax.Array) -> jax.Array:
    return self.b_pre[...] + jnp.einsum("bk,bkd->bd", values, self.directions()[indices])

  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    values, indices = self.encode(x)
    x_hat = self.decode(values, indices)
    return dict(values=values, indices=indices, x_hat=x_hat,
                loss=jnp.sum((x - x_hat) ** 2, -1))

  def loss(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Per-item loss [B] and batch metrics (utilisation and perplexity per position)."""
    out = self(x)
    m = self.config.num_latents
    metrics = {"recon": out["loss"].mean(),
               "active": jnp.mean(jnp.sum(out["values"] > 0, -1).astype(jnp.float32)),
               "latents_used": jnp.mean(jnp.bincount(out["indices"].reshape(-1), length=m) > 0)}
    # One vmapped bincount: k separate ones on column slices take ~25x longer on XLA:CPU.
    counts = jax.vmap(lambda c: jnp.bincount(c, length=m), 1)(out["indices"])  # [k, m]
    metrics.update(usage_metrics(counts))
    return out["loss"], metrics


def semantic_ids(model: TopKSAE, embeddings: np.ndarray, notes: tuple[str, ...] = ()
                 ) -> sid.SemanticIds:
  """The codes of items 1..n (row i-1 of `embeddings` is item i), collision level included."""
  cfg = model.config
  x = sid.check_embeddings(embeddings)

  @nnx.jit
  def run(m, b):
    values, indices = m.encode(b)
    parts = values[..., None] * m.directions()[indices]  # [B, k, d]
    partial = m.b_pre[...] + jnp.cumsum(parts, axis=1)
    return values, indices, jnp.sum((b[:, None] - partial) ** 2, -1)

  values, indices, errors = batched_apply(lambda b: run(model, b), x)
  base = float((x.astype(np.float64) ** 2).sum(1).mean()) or 1.0
  mse = errors.astype(np.float64).mean(0)
  levels = [sid.level_stats(indices[:, j], cfg.num_latents, cfg.num_latents, mse[j], base)
            for j in range(cfg.k)]
  collisions = sid.with_collision_level(indices.astype(np.int32), cfg.collision_level)
  used = len(np.unique(indices))
  short = int((values[:, -1] <= 0).sum())
  notes = tuple(notes) + (
      f"latents used at any position: {used} of {cfg.num_latents} "
      f"(utilisation {used / cfg.num_latents:.3f}); items with fewer than k={cfg.k} positive "
      f"activations: {short}",)
  return sid.SemanticIds(codes=collisions.codes,
                         codebooks=[np.asarray(jax.device_get(model.directions()), np.float32)],
                         levels=levels, collision_rate=collisions.collision_rate,
                         items_in_collision=collisions.items_in_collision,
                         collision_size=collisions.collision_size, config=cfg,
                         method="top-k SAE", codebook_size=cfg.num_latents, notes=notes)

"""Semantic IDs by a top-k sparse autoencoder (the synthetic-curriculum paper's best quantiser).

    a = TopK_k(ReLU(W_enc (x - b_pre) + b_enc))        x_hat = b_pre + sum_i a_i d_i

(Gao et al. 2024's top-k SAE.) The decoder directions d_i are the rows of `W_dec` normalised to
unit length in the forward pass, so an activation a_i is the length of latent i's contribution
and activations of different latents compare. `W_enc` starts as the transpose of `W_dec`. Loss
per item: `||x - x_hat||^2` (summed over dimensions). Trained by the shared trainer through the
`sae` task (recjax/tasks/semantic_ids.py).

An item's code is its k most active latent indices in order of activation (largest first; ties
by the smaller index, as `jax.lax.top_k`), plus the collision level: `<a_i1><b_i2>...`. Every
position indexes the same `num_latents` dictionary; with `shared_vocabulary` (default) the LM
writes latent i as the same token `REC<i>` at every position (recjax/text/semantic_text.py).
An item with fewer than k positive activations still gets k indices (the next ones have
activation 0, in index order); the report counts such items.

Dead latents (Gao et al.'s AuxK): `unfired` counts, per latent, the training steps since the
latent was last among some item's k most active. A latent unfired for `dead_after` steps is
dead; then the auxiliary loss reconstructs the main reconstruction's residual `e = x - x_hat`
(held fixed) from the `aux_k` most active *dead* latents, `e_hat = sum_j a_j d_j`, and adds
`aux_weight * ||e - e_hat||^2 * var(x) / var(e)` per item: Gao et al.'s normalised MSE of the
residual, in the units of the (unnormalised) main loss. Its gradient reaches only the dead
latents' encoder rows and decoder directions and pulls them toward what the live ones miss, so
they fire again. Gao et al.: aux_k = 512 at 32k+ latents, weight 1/32, dead after 10M tokens.

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
from recjax.curriculum.rqvae import QuantizerState, batched_apply, usage_metrics


@dataclasses.dataclass(frozen=True)
class SAEConfig:
  """Top-k SAE knobs (docs/curriculum.md)."""

  input_dim: int  # width of the item embeddings
  num_latents: int = 4096  # dictionary size (the paper's codes reach REC6594: ~8192 there)
  k: int = 8  # active latents per item = code length before the collision level (the paper: 8)
  collision_level: bool = True  # append the index among items sharing a code (unique codes)
  # AuxK (Gao et al. 2024) against dead latents: steps unfired before a latent is dead (0: dead
  # latents neither counted nor revived), dead latents the residual is rebuilt from, and the
  # auxiliary loss's weight (0: dead latents counted only).
  dead_after: int = 100
  aux_k: int = 256
  aux_weight: float = 1 / 32
  # Code tokens: one dictionary for every position (`REC<latent>` wherever the latent is, as the
  # paper writes codes) or, False, one token range per position.
  shared_vocabulary: bool = True


class TopKSAE(nnx.Module):
  """Linear encoder + ReLU, the k largest activations kept, linear decoder of unit directions."""

  def __init__(self, config: SAEConfig, rngs: nnx.Rngs):
    if not 1 <= config.k <= config.num_latents:
      raise ValueError(f"SAEConfig needs 1 <= k <= num_latents, got k={config.k}, "
                       f"num_latents={config.num_latents}")
    if config.dead_after < 0 or config.aux_k < 1 or config.aux_weight < 0:
      raise ValueError(f"SAEConfig needs dead_after >= 0, aux_k >= 1 and aux_weight >= 0, got "
                       f"dead_after={config.dead_after}, aux_k={config.aux_k}, "
                       f"aux_weight={config.aux_weight}")
    self.config = config
    d, m = config.input_dim, config.num_latents
    w = jax.random.normal(rngs.params(), (m, d))
    w = w / jnp.linalg.norm(w, axis=-1, keepdims=True)
    self.w_dec = nnx.Param(w)
    self.w_enc = nnx.Param(w.T)
    self.b_enc = nnx.Param(jnp.zeros(m))
    self.b_pre = nnx.Param(jnp.zeros(d))
    self.unfired = QuantizerState(jnp.zeros(m, jnp.int32))  # steps since each latent fired

  def directions(self) -> jax.Array:
    """[num_latents, input_dim] unit decoder directions."""
    w = self.w_dec[...]
    return w / jnp.maximum(jnp.linalg.norm(w, axis=-1, keepdims=True), 1e-8)

  def activations(self, x: jax.Array) -> jax.Array:
    """[B, num_latents] ReLU activations before the top-k."""
    return jax.nn.relu((x - self.b_pre[...]) @ self.w_enc[...] + self.b_enc[...])

  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(activations [B, k], latent indices [B, k]), largest activation first."""
    return jax.lax.top_k(self.activations(x), self.config.k)

  def decode(self, values: jax.Array, indices: jax.Array) -> jax.Array:
    return self.b_pre[...] + jnp.einsum("bk,bkd->bd", values, self.directions()[indices])

  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    acts = self.activations(x)
    values, indices = jax.lax.top_k(acts, self.config.k)
    x_hat = self.decode(values, indices)
    return dict(acts=acts, values=values, indices=indices, x_hat=x_hat,
                loss=jnp.sum((x - x_hat) ** 2, -1))

  def aux_loss(self, x: jax.Array, out: dict[str, jax.Array], dead: jax.Array) -> jax.Array:
    """[B] AuxK: the residual x - x_hat rebuilt from the aux_k most active dead latents,
    normalised as Gao et al.'s (relative to the residual's variance, in units of the main loss)."""
    cfg = self.config
    residual = jax.lax.stop_gradient(x - out["x_hat"])
    masked = jnp.where(dead[None], out["acts"], 0.0)  # activations are >= 0: 0 never wins
    k = min(cfg.aux_k, cfg.num_latents)
    # The aux_k-th largest dead activation of each row (ties at it are kept too). With at most
    # aux_k dead latents, the usual case, every one is kept and no top-k is needed.
    threshold = jax.lax.cond(
        dead.sum() > k, lambda m: jax.lax.top_k(m, k)[0][:, -1:],
        lambda m: jnp.zeros((m.shape[0], 1), m.dtype), jax.lax.stop_gradient(masked))
    kept = jnp.where(masked >= threshold, masked, 0.0)
    # A dense [B, m] x [m, d] matmul: gathering [B, aux_k, d] directions costs far more.
    e_hat = kept @ self.directions()
    # Gao et al. add nmse(e_hat, e) = ||e - e_hat||^2 / var(e) to nmse(x_hat, x); the main loss
    # here is unnormalised (var(x) x nmse), so the auxiliary term is scaled by var(x) / var(e).
    var = lambda a: jnp.mean(jnp.sum((a - a.mean(0)) ** 2, -1))
    scale = jax.lax.stop_gradient(var(x) / jnp.maximum(var(residual), 1e-12))
    # No dead latent: every value is 0, e_hat = 0, and the term is a constant without gradient.
    return jnp.where(dead.any(), scale * jnp.sum((residual - e_hat) ** 2, -1), 0.0)

  def loss(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Per-item loss [B] and batch metrics (utilisation and perplexity per position, dead
    latents); updates the `unfired` counters (a `QuantizerState`)."""
    out = self(x)
    cfg = self.config
    m = cfg.num_latents
    # Fired: among an item's k most active with a positive activation (a short item's trailing
    # indices have activation 0 and do not count).
    positive = (out["values"] > 0).reshape(-1).astype(jnp.float32)
    fired = jnp.bincount(out["indices"].reshape(-1), weights=positive, length=m) > 0
    unfired = jnp.where(fired, 0, self.unfired[...] + 1)
    self.unfired[...] = unfired.astype(jnp.int32)
    loss = out["loss"]
    metrics = {"recon": out["loss"].mean(),
               "active": jnp.mean(jnp.sum(out["values"] > 0, -1).astype(jnp.float32)),
               "latents_used": jnp.mean(fired)}
    # One vmapped bincount: k separate ones on column slices take ~25x longer on XLA:CPU.
    counts = jax.vmap(lambda c: jnp.bincount(c, length=m), 1)(out["indices"])  # [k, m]
    metrics.update(usage_metrics(counts))
    if cfg.dead_after > 0:
      dead = unfired >= cfg.dead_after
      metrics["dead_latents"] = dead.mean()
      if cfg.aux_weight > 0:
        aux = self.aux_loss(x, out, dead)
        metrics["aux_loss"] = aux.mean()
        loss = loss + cfg.aux_weight * aux
    return loss, metrics


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
  if cfg.dead_after > 0:
    dead = int((np.asarray(jax.device_get(model.unfired[...])) >= cfg.dead_after).sum())
    notes += (f"dead latents at the end of training (unfired for >= {cfg.dead_after} steps): "
              f"{dead}; AuxK weight {cfg.aux_weight:g}, aux_k {cfg.aux_k}",)
  return sid.SemanticIds(codes=collisions.codes,
                         codebooks=[np.asarray(jax.device_get(model.directions()), np.float32)],
                         levels=levels, collision_rate=collisions.collision_rate,
                         items_in_collision=collisions.items_in_collision,
                         collision_size=collisions.collision_size, config=cfg,
                         method="top-k SAE", codebook_size=cfg.num_latents, notes=notes,
                         shared_digits=cfg.k if cfg.shared_vocabulary else 0)

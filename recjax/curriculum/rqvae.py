"""Semantic IDs by an RQ-VAE (TIGER): MLP encoder -> residual quantiser -> MLP decoder, in NNX.

The encoder maps an item embedding x to a latent z; level 1 picks the nearest of `codebook_size`
codewords to z, each next level the nearest codeword to the residual (z minus the codewords
chosen so far); the decoder reconstructs x from the sum of the chosen codewords, passed through
with the straight-through estimator. Loss per item (TIGER's, all norms squared and summed over
dimensions):

    ||x - decoder(z_q)||^2 + sum_l ||sg(r_l) - e_l||^2 + beta * ||r_l - sg(e_l)||^2

(reconstruction, codebook and commitment terms; r_l the residual entering level l, e_l its
codeword, sg stop-gradient; beta 0.25 as TIGER). Trained by the shared trainer through the
`rqvae` task (recjax/tasks/semantic_ids.py); `kmeans_init` sets the codebooks by residual k-means
over the encoder's outputs on the whole catalogue before the first step (what public RQ-VAE code
needs against codebook collapse).

Dead-code restart: `unused` counts, per level and code, the training steps since the code was
last chosen by an item of the batch. When it reaches `restart_after`, the code is re-seeded
with the level-l residual (level 1: the encoder output) of a random item of the current batch,
and its count starts again. A codeword is the trained `codebook` parameter plus a non-trained
`offset`; a restart writes `offset = target - codebook`, so the codeword is the target exactly
while the parameter keeps its gradient (and optimizer state). `offset`, `unused` and `restarts`
are `QuantizerState` variables, which the trainer keeps when the loss changes them (the task's
`loss_updates`).

Usage monitoring: the loss returns, per level, the batch's utilisation (codes used / size),
perplexity (exp of the entropy of the batch's code histogram) and the codes currently dead
(unused for `restart_after` steps or more), which the trainer logs as train metrics; on the
whole catalogue `semantic_ids` gives the same per level in its report.

Small catalogues: a catalogue with fewer items than `codebook_size` raises ValueError (a trained
codebook larger than the catalogue cannot be used and would be restarted forever); use
RQ-KMeans there, which shrinks its levels, or a smaller `codebook_size`.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from recjax.curriculum import semantic_ids as sid


@dataclasses.dataclass(frozen=True)
class RQVAEConfig:
  """RQ-VAE knobs (docs/curriculum.md); defaults as TIGER / RQ-VAE-Recommender."""

  input_dim: int  # width of the item embeddings
  hidden: tuple[int, ...] = (512, 256, 128)  # encoder MLP widths (the decoder mirrors them)
  latent_dim: int = 32  # width of z and of every codeword
  levels: int = 3  # quantisation levels before the collision level
  codebook_size: int = 256  # codes per level
  beta: float = 0.25  # commitment weight
  restart_after: int = 100  # steps a code may go unchosen before it is re-seeded; 0: never
  collision_level: bool = True  # append the index among items sharing a code (unique codes)
  seed: int = 0  # k-means initialisation seed (level l uses seed + l)
  kmeans_iters: int = 100  # Lloyd iterations per level of the k-means initialisation


class QuantizerState(nnx.Variable):
  """Codebook state the loss changes outside the gradient (offsets, usage counters)."""


class RQVAE(nnx.Module):
  """Encoder, residual quantiser with `levels` codebooks, decoder."""

  def __init__(self, config: RQVAEConfig, rngs: nnx.Rngs):
    if config.levels < 1 or config.codebook_size < 1:
      raise ValueError(f"RQVAEConfig needs levels >= 1 and codebook_size >= 1, got {config}")
    self.config = config
    widths = [config.input_dim, *config.hidden, config.latent_dim]
    self.encoder = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths, widths[1:])])
    back = widths[::-1]
    self.decoder = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(back, back[1:])])
    shape = (config.levels, config.codebook_size, config.latent_dim)
    self.codebook = nnx.Param(jax.random.normal(rngs.params(), shape) * 0.1)
    self.offset = QuantizerState(jnp.zeros(shape))
    self.unused = QuantizerState(jnp.zeros(shape[:2], jnp.int32))
    self.restarts = QuantizerState(jnp.zeros(config.levels, jnp.int32))

  def encode(self, x: jax.Array) -> jax.Array:
    return _mlp(self.encoder, x)

  def decode(self, z: jax.Array) -> jax.Array:
    return _mlp(self.decoder, z)

  def codewords(self) -> jax.Array:
    """[levels, codebook_size, latent_dim]: the trained codebook plus the restart offsets."""
    return self.codebook[...] + self.offset[...]

  def quantize(self, z: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(codes [B, levels], residuals entering each level and their codewords [levels, B, D])."""
    books = self.codewords()
    residual, codes, residuals, chosen = z, [], [], []
    for level in range(self.config.levels):
      book = books[level]
      dist = (jnp.sum(residual ** 2, -1, keepdims=True) - 2 * residual @ book.T +
              jnp.sum(book ** 2, -1)[None])
      code = jnp.argmin(dist, axis=-1)
      e = book[code]
      codes.append(code)
      residuals.append(residual)
      chosen.append(e)
      residual = residual - e
    return jnp.stack(codes, 1), jnp.stack(residuals), jnp.stack(chosen)

  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    """Forward pass: codes, reconstruction (straight-through) and the per-item loss terms."""
    z = self.encode(x)
    codes, residuals, chosen = self.quantize(z)
    z_q = chosen.sum(0)
    x_hat = self.decode(z + jax.lax.stop_gradient(z_q - z))
    sg = jax.lax.stop_gradient
    codebook = jnp.sum((sg(residuals) - chosen) ** 2, -1).sum(0)
    commitment = jnp.sum((residuals - sg(chosen)) ** 2, -1).sum(0)
    recon = jnp.sum((x - x_hat) ** 2, -1)
    return dict(codes=codes, residuals=residuals, x_hat=x_hat, recon=recon, codebook=codebook,
                commitment=commitment, loss=recon + codebook + self.config.beta * commitment)

  def loss(self, x: jax.Array, key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Per-item loss [B] and batch metrics; restarts dead codes (changes `QuantizerState`)."""
    out = self(x)
    cfg = self.config
    counts = jax.vmap(lambda c: jnp.bincount(c, length=cfg.codebook_size), 1)(out["codes"])
    metrics = {"recon": out["recon"].mean(), "codebook_loss": out["codebook"].mean(),
               "commitment": out["commitment"].mean()}
    metrics.update(usage_metrics(counts))
    unused = jnp.where(counts > 0, 0, self.unused[...] + 1)
    if cfg.restart_after > 0:
      dead = unused >= cfg.restart_after  # [levels, K]
      batch = x.shape[0]
      keys = jax.random.split(key, cfg.levels)
      rows = jax.vmap(lambda k: jax.random.permutation(k, batch))(keys)  # [levels, B]
      picks = rows[:, jnp.arange(cfg.codebook_size) % batch]  # [levels, K]
      residuals = jax.lax.stop_gradient(out["residuals"])  # [levels, B, D]
      targets = jnp.take_along_axis(residuals, picks[..., None], axis=1)  # [levels, K, D]
      codebook = jax.lax.stop_gradient(self.codebook[...])
      self.offset[...] = jnp.where(dead[..., None], targets - codebook, self.offset[...])
      self.restarts[...] = self.restarts[...] + dead.sum(-1).astype(jnp.int32)
      unused = jnp.where(dead, 0, unused)
      for level in range(cfg.levels):
        letter = sid.level_letter(level)
        metrics[f"restarted_{letter}"] = dead[level].sum().astype(jnp.float32)
    self.unused[...] = unused.astype(jnp.int32)
    return out["loss"], metrics


def usage_metrics(counts: jax.Array) -> dict[str, jax.Array]:
  """`utilisation_<l>` (share of codes used) and `perplexity_<l>` of code counts [levels, K]."""
  p = counts / jnp.maximum(counts.sum(-1, keepdims=True), 1)
  perplexity = jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0), -1))
  out = {}
  for level in range(counts.shape[0]):
    letter = sid.level_letter(level)
    out[f"utilisation_{letter}"] = jnp.mean(counts[level] > 0)
    out[f"perplexity_{letter}"] = perplexity[level]
  return out


def check_catalogue(num_items: int, config: RQVAEConfig) -> None:
  """The small-catalogue rule: ValueError when there are fewer items than codes per level."""
  if num_items < config.codebook_size:
    raise ValueError(
        f"RQ-VAE: the catalogue has {num_items:,} items, fewer than codebook_size="
        f"{config.codebook_size}; each level could use at most {num_items} codes and the rest "
        f"would be restarted forever. Set codebook_size <= {num_items}, or use RQ-KMeans "
        "(recjax.curriculum.semantic_ids.rq_kmeans), which shrinks its levels to fit")


def batched_apply(fn, x: np.ndarray, batch_size: int = 4096):
  """`fn` over `x` in row batches (the last one padded), outputs concatenated on the host."""
  outs = []
  for start in range(0, len(x), batch_size):
    chunk = x[start:start + batch_size]
    pad = batch_size - len(chunk) if len(x) > batch_size else 0
    padded = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
    out = jax.device_get(fn(padded))
    outs.append(jax.tree.map(lambda a, n=len(chunk): np.asarray(a)[:n], out))
  return jax.tree.map(lambda *a: np.concatenate(a), *outs)


def kmeans_init(model: RQVAE, embeddings: np.ndarray) -> None:
  """Sets the codebooks to residual k-means centroids of the encoder's outputs (offsets 0).

  A level whose residuals have fewer distinct rows than `codebook_size` (duplicate item texts)
  fills its remaining codes with copies of its centroids plus 1e-3 noise; those codes are dead
  at the start and get restarted.
  """
  cfg = model.config
  x = sid.check_embeddings(embeddings)
  check_catalogue(len(x), cfg)
  encode = nnx.jit(lambda m, b: m.encode(b))
  z = batched_apply(lambda b: encode(model, b), x)
  ids = sid.rq_kmeans(z, sid.RQKMeansConfig(levels=cfg.levels, codebook_size=cfg.codebook_size,
                                            seed=cfg.seed, max_iter=cfg.kmeans_iters,
                                            collision_level=False))
  rng = np.random.default_rng(cfg.seed)
  books = []
  for book in ids.codebooks:
    if len(book) < cfg.codebook_size:
      extra = book[rng.integers(0, len(book), cfg.codebook_size - len(book))]
      book = np.concatenate([book, extra + 1e-3 * rng.normal(size=extra.shape)])
    books.append(book)
  value = jnp.asarray(np.stack(books).astype(np.float32))
  sharding = getattr(model.codebook[...], "sharding", None)
  model.codebook[...] = jax.device_put(value, sharding) if sharding is not None else value
  model.offset[...] = jnp.zeros_like(model.offset[...])
  model.unused[...] = jnp.zeros_like(model.unused[...])


def semantic_ids(model: RQVAE, embeddings: np.ndarray, notes: tuple[str, ...] = ()
                 ) -> sid.SemanticIds:
  """The codes of items 1..n (row i-1 of `embeddings` is item i), collision level included.

  Per level: utilisation and perplexity of the codes over the catalogue, and the error of
  decoding the sum of the first l codewords, `mean ||x - decoder(e_1 + ... + e_l)||^2` (relative:
  divided by `mean ||x||^2`).
  """
  cfg = model.config
  x = sid.check_embeddings(embeddings)

  @nnx.jit
  def run(m, b):
    codes, _, chosen = m.quantize(m.encode(b))
    partial = jnp.cumsum(chosen, axis=0)  # [levels, B, D]
    errors = jnp.stack([jnp.sum((b - m.decode(partial[l])) ** 2, -1) for l in range(cfg.levels)])
    return codes, errors.T

  codes, errors = batched_apply(lambda b: run(model, b), x)
  base = float((x.astype(np.float64) ** 2).sum(1).mean()) or 1.0
  mse = errors.astype(np.float64).mean(0)
  levels = [sid.level_stats(codes[:, l], cfg.codebook_size, cfg.codebook_size, mse[l], base)
            for l in range(cfg.levels)]
  collisions = sid.with_collision_level(codes.astype(np.int32), cfg.collision_level)
  books = np.asarray(jax.device_get(model.codewords()), np.float32)
  restarts = np.asarray(jax.device_get(model.restarts[...]))
  notes = tuple(notes) + (
      "dead-code restarts during training per level: " + " / ".join(map(str, restarts)),)
  return sid.SemanticIds(codes=collisions.codes, codebooks=list(books), levels=levels,
                         collision_rate=collisions.collision_rate,
                         items_in_collision=collisions.items_in_collision,
                         collision_size=collisions.collision_size, config=cfg, method="RQ-VAE",
                         codebook_size=cfg.codebook_size, notes=notes)


def _mlp(layers, x: jax.Array) -> jax.Array:
  """`layers` in turn with a ReLU between them (none after the last)."""
  for i, layer in enumerate(layers):
    x = layer(x)
    if i < len(layers) - 1:
      x = jax.nn.relu(x)
  return x

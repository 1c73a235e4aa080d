"""In-batch contrastive loss (InfoNCE), after big_vision's `bidirectional_contrastive_loss`.

Row i of `queries` (e.g. a user's history) and row i of `keys` (e.g. its next item) are a
positive pair; every other key of the batch is a negative. Under `jax.jit` the arrays are the
global batch, sharded over the data-parallel axes: the [B, B] similarities, and so the
negatives, come from the whole global batch across every device and process, not from one
device's shard (XLA gathers the keys). Memory and compute grow as B^2.
`mean_pool` turns per-token hidden states into such embeddings (CALRec's towers).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  """x / max(||x||, eps) along the last axis."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=-1, keepdims=True),
                                       eps * eps))


def mean_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
  """float32 [B, D]: the mean of `hidden` [B, T, D] over the positions where `mask` [B, T] is
  set (a row with no such position gives zeros, not NaN)."""
  weights = mask.astype(jnp.float32)
  total = jnp.einsum("bt,btd->bd", weights, hidden.astype(jnp.float32))
  return total / jnp.maximum(jnp.sum(weights, axis=1, keepdims=True), 1.0)


def info_nce(queries: jax.Array, keys: jax.Array, *, temperature: float | jax.Array,
             ids: jax.Array | None = None, valid: jax.Array | None = None,
             bidirectional: bool = True,
             cosine: bool = True) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
  """In-batch softmax cross-entropy of each positive pair against the batch's other pairs.

  Args:
    queries, keys: [B, D] embeddings; row i of each is a positive pair.
    temperature: similarities are divided by it (a float, or a learned scalar kept positive by
      the caller). Typical: 0.05-0.1 for cosine similarity.
    ids: int [B], the id of each row's key (e.g. the target item). A key whose id equals row
      i's is never a negative of row i (nor, backwards, of column i): an item that appears twice
      in the batch is not its own negative. None: every other row is a negative.
    valid: bool [B], False for padded rows: they are neither positives nor negatives, and add
      nothing to the loss, the weight or the metrics. None: every row is real.
    bidirectional: True = mean of the query->key and key->query losses per pair (CLIP, SigLIP's
      softmax baseline); False = query->key only.
    cosine: True = cosine similarity (rows L2-normalised); False = raw dot products.

  Returns:
    (loss sum over valid rows, number of valid rows, {"ncorrect": valid rows whose own key has
    the highest query->key similarity}); divided by the weight, as the trainer does, ncorrect is
    the in-batch top-1 accuracy.
  """
  if queries.shape != keys.shape or queries.ndim != 2:
    raise ValueError(f"queries and keys must both be [B, D], got {queries.shape} and "
                     f"{keys.shape}")
  queries, keys = queries.astype(jnp.float32), keys.astype(jnp.float32)
  if cosine:
    queries, keys = l2_normalize(queries), l2_normalize(keys)
  logits = (queries @ keys.T) / temperature
  n = logits.shape[0]
  diagonal = jnp.eye(n, dtype=bool)
  exclude = jnp.zeros((n, n), bool)
  if ids is not None:
    exclude = ids[:, None] == ids[None, :]
  if valid is not None:
    exclude = exclude | ~valid[:, None] | ~valid[None, :]
  # The diagonal is never excluded, so no row or column is all -inf (no NaN, even in gradients);
  # an invalid row's own pair is masked out of the sums below instead.
  logits = jnp.where(exclude & ~diagonal, -jnp.inf, logits)
  per_pair = -jnp.diagonal(jax.nn.log_softmax(logits, axis=1))
  if bidirectional:
    per_pair = 0.5 * (per_pair - jnp.diagonal(jax.nn.log_softmax(logits, axis=0)))
  correct = jnp.argmax(logits, axis=1) == jnp.arange(n)
  if valid is None:
    valid = jnp.ones((n,), bool)
  loss_sum = jnp.sum(jnp.where(valid, per_pair, 0.0))
  return (loss_sum, jnp.sum(valid.astype(jnp.float32)),
          {"ncorrect": jnp.sum((correct & valid).astype(jnp.float32))})

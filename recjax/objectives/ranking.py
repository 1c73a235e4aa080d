"""Next-item losses over item scores: SASRec's bce, gbce, sampled softmax and full-catalogue ce.

Every function returns `(loss_sum, weight, metrics)`: the sum of per-position losses over the
`valid` positions (target positions of real items), their count as the weight, and no extra
metrics. A task that divides by something else (SASRec's `loss.normalize="mean"`) replaces the
weight. Item id 0 is padding throughout recjax: a sampled negative with id 0 is an empty slot
(`sample_negatives` gives one where a user has no unseen item left) and is masked by
`negative_mask`; in full-catalogue logits, column 0 is never a class.

The caller computes the scores (e.g. `model.score(hidden, ids)`) in float32; masking uses
`jnp.where`, never a multiplication, since a masked score or loss may be inf and inf * 0 is NaN.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

Loss = tuple[jax.Array, jax.Array, dict[str, jax.Array]]


def _masked_sum(per_position: jax.Array, valid: jax.Array) -> Loss:
  loss_sum = jnp.sum(jnp.where(valid, per_position, 0.0))
  return loss_sum, jnp.sum(valid.astype(jnp.float32)), {}


def bce(positive: jax.Array, negatives: jax.Array, valid: jax.Array,
        negative_mask: jax.Array | None = None, *, beta: float | jax.Array = 1.0) -> Loss:
  """Binary cross-entropy of each target against its sampled negatives (original SASRec).

  Args:
    positive: [...] score of the target at each position.
    negatives: [..., N] scores of N sampled items at each position.
    valid: bool [...], the positions that count.
    negative_mask: bool [..., N], False where a negative slot is empty (item id 0); None = all
      slots are real.
    beta: exponent on the target's probability (gSASRec; 1 = plain BCE).

  Per position: -beta * log sigmoid(positive) - sum_n log sigmoid(-negative_n).
  """
  log_not_negative = jax.nn.log_sigmoid(-negatives)
  if negative_mask is not None:
    log_not_negative = jnp.where(negative_mask, log_not_negative, 0.0)
  per_position = -beta * jax.nn.log_sigmoid(positive) - jnp.sum(log_not_negative, axis=-1)
  return _masked_sum(per_position, valid)


def gbce_beta(num_negatives: int, num_items: int, t: float) -> float:
  """gSASRec's beta = alpha * (t * (1 - 1/alpha) + 1/alpha), alpha = negatives / (items - 1).

  `num_negatives` is the configured sample size; an empty slot (masked) does not change it.
  """
  alpha = num_negatives / (num_items - 1)
  return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


def gbce(positive: jax.Array, negatives: jax.Array, valid: jax.Array,
         negative_mask: jax.Array | None = None, *, num_items: int, t: float) -> Loss:
  """gSASRec's generalised BCE (Petrov & Macdonald, 2023): `bce` with beta = `gbce_beta(...)`.

  `t` in [0, 1] calibrates the over-confidence negative sampling causes; t = 0 is plain BCE.
  """
  beta = gbce_beta(negatives.shape[-1], num_items, t)
  return bce(positive, negatives, valid, negative_mask, beta=beta)


def sampled_softmax(positive: jax.Array, negatives: jax.Array, valid: jax.Array,
                    negative_mask: jax.Array | None = None) -> Loss:
  """Softmax cross-entropy of each target over itself and its sampled negatives.

  Shapes as in `bce`; a masked negative slot gets probability 0.
  """
  if negative_mask is not None:
    negatives = jnp.where(negative_mask, negatives, -jnp.inf)
  logits = jnp.concatenate([positive[..., None], negatives], axis=-1)
  per_position = -jax.nn.log_softmax(logits, axis=-1)[..., 0]
  return _masked_sum(per_position, valid)


def softmax_ce(logits: jax.Array, targets: jax.Array, valid: jax.Array) -> Loss:
  """Full-catalogue softmax cross-entropy ("SASRec+", and CE over a vocabulary of items).

  Args:
    logits: [..., V] scores of every item id; column 0 (padding) is ignored.
    targets: int [...] target item ids.
    valid: bool [...], the positions that count.
  """
  logits = jnp.asarray(logits).at[..., 0].set(-jnp.inf)
  # Padding positions get a real label so neither the loss nor its gradient is inf there.
  per_position = optax.softmax_cross_entropy_with_integer_labels(
      logits, jnp.where(valid, targets, 1))
  return _masked_sum(per_position, valid)

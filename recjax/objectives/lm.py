"""The causal-LM next-token loss over packed rows.

A packed row holds several documents, told apart by `segment_ids` (0 = padding). The token at
position t predicts the token at t + 1 when both belong to the same document; with
`loss_on="target"` the predicted token must also be in the document's answer (`loss_mask`, the
template's target). The loss is the sum of the counted tokens' negative log-likelihoods, with
their count as the weight: after the trainer's single division, the mean per token.
`target_token_loss` is the unshifted variant for objectives that name each token's target
(GLM blank infilling: Part B predicts span + [eop]).
"""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import optax

LOSS_ON = ("all", "target")


def shift_left(x: jax.Array, fill: int = 0) -> jax.Array:
  """x shifted left by one position along the sequence: out[:, t] = x[:, t + 1]."""
  return jnp.concatenate([x[:, 1:], jnp.full_like(x[:, :1], fill)], axis=1)


def next_token_nll(logits: jax.Array, tokens: jax.Array,
                   segment_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-position next-token losses of packed rows.

  Args:
    logits: [batch, seq_len, vocab] the model's logits at every position.
    tokens, segment_ids: int [batch, seq_len].

  Returns:
    nll: float32 [batch, seq_len], -log p(token t+1 | tokens <= t of its document) at t.
    counts: bool, same shape: where token t+1 is a real token of the same document as token t
      (never at the last position).
  """
  # Logits of every position, targets shifted instead: slicing the logits would make the
  # backward pass pad and transpose a [batch, seq_len, vocab] array (slow on XLA:CPU).
  next_segments = shift_left(segment_ids)
  counts = (next_segments == segment_ids) & (next_segments > 0)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                        shift_left(tokens))
  return nll, counts


def answer_mask(segment_ids: jax.Array, loss_mask: jax.Array) -> jax.Array:
  """bool [batch, seq_len]: where the next token is in its document's answer (template target)."""
  next_segments = shift_left(segment_ids)
  same = (next_segments == segment_ids) & (next_segments > 0)
  return same & (shift_left(loss_mask) > 0)


def causal_lm_loss(logits: jax.Array, batch: Mapping[str, jax.Array],
                   loss_on: str = "all") -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
  """`(nll sum, counted tokens, {})` of a packed batch (tokens, segment_ids[, loss_mask]).

  `loss_on`: "all" counts every next token of a document (continual pre-training); "target"
  only the answer's tokens (needs `batch["loss_mask"]`).
  """
  if loss_on not in LOSS_ON:
    raise ValueError(f"loss_on={loss_on!r} is unknown; choose from {LOSS_ON}")
  nll, counts = next_token_nll(logits, batch["tokens"], batch["segment_ids"])
  weights = counts if loss_on == "all" else answer_mask(batch["segment_ids"],
                                                       batch["loss_mask"])
  return jnp.sum(jnp.where(weights, nll, 0.0)), jnp.sum(weights.astype(jnp.float32)), {}


def target_token_loss(logits: jax.Array, targets: jax.Array,
                      loss_mask: jax.Array) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
  """`(nll sum, counted tokens, {})` of logits at t against `targets[t]` where `loss_mask[t]`.

  Not shifted: the input at t is the token before its target (GLM's Part B, recjax.text.
  infilling). A masked position's label is replaced by 0 so it is finite.
  """
  mask = loss_mask > 0
  nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                        jnp.where(mask, targets, 0))
  return jnp.sum(jnp.where(mask, nll, 0.0)), jnp.sum(mask.astype(jnp.float32)), {}

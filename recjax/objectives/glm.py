"""GLM's autoregressive blank-infilling loss (RecSysLLM pre-training), and its model inputs.

An infilling example (recjax.text.infilling) names each token's target: Part B is fed as
`[sop] + span` and predicts `span + [eop]`, so the logits at t are scored against `targets[t]`
where `loss_mask[t]` (Part B) -- not shifted like the causal-LM loss. The loss is the sum of
those tokens' negative log-likelihoods with their count as the weight (the trainer divides once:
the mean per Part-B token); `accuracy` counts the tokens whose argmax is the target (divided by
the same weight: the share predicted exactly).
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax


def model_kwargs(batch: Mapping[str, jax.Array]) -> dict[str, Any]:
  """Keyword arguments of recjax's `LLM.__call__` for a batch of GLM rows (after `tokens`).

  Part A (`prefix_mask`) attends bidirectionally within its own packed example
  (`segment_ids`), Part B causally; inter-positions drive RoPE, intra-positions the backbone's
  second learned position table (`num_extra_positions`; ignored by a model without one).
  """
  return dict(positions=batch["inter_positions"], segment_ids=batch["segment_ids"],
              attention_mask_kind="prefix", prefix_mask=batch["prefix_mask"],
              extra_positions=batch["intra_positions"])


def infilling_loss(logits: jax.Array, targets: jax.Array, loss_mask: jax.Array
                   ) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
  """`(nll sum, Part-B tokens, {"accuracy": exact-argmax tokens})` of GLM rows.

  Args:
    logits: float [batch, seq_len, vocab], the model's logits at every position.
    targets: int [batch, seq_len], each Part-B token's target (anything elsewhere).
    loss_mask: int or bool [batch, seq_len], 1 on the tokens that count (Part B).
  """
  mask = loss_mask > 0
  labels = jnp.where(mask, targets, 0)  # a position that does not count gets a finite label
  nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  correct = mask & (jnp.argmax(logits, axis=-1) == labels)
  return (jnp.sum(jnp.where(mask, nll, 0.0)), jnp.sum(mask.astype(jnp.float32)),
          {"accuracy": jnp.sum(correct.astype(jnp.float32))})

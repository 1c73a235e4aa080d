"""Top-K ranking metrics for one held-out target per user.

A target's rank is the number of candidates scored strictly higher plus the number of *other*
candidates tied with it (ties are broken against the target, so a constant model scores zero).
With one relevant item, Recall@K equals HR@K.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from recjax.eval.retrieval import normalize_title

DEFAULT_KS = (1, 5, 10, 20, 50, 100)
# Columns of the results table the command-line tools print.
TABLE_COLUMNS = ["recall@10", "ndcg@10", "mrr@10", "recall@50", "ndcg@50",
                 "sampled100_hr@10", "sampled100_ndcg@10"]


def target_ranks(scores: jax.Array, targets: jax.Array) -> jax.Array:
  """0-based pessimistic rank of `targets` [B] within `scores` [B, N]."""
  target_scores = jnp.take_along_axis(scores, targets[:, None], axis=1)
  higher = jnp.sum(scores > target_scores, axis=1)
  ties = jnp.sum(scores == target_scores, axis=1) - 1
  return (higher + ties).astype(jnp.int32)


def ranking_metrics(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS,
                    prefix: str = "") -> dict[str, float]:
  """Mean Recall/HR, NDCG and MRR at each K from 0-based ranks."""
  ranks = np.asarray(ranks, dtype=np.float64)
  out = {}
  for k in ks:
    hit = ranks < k
    out[f"{prefix}recall@{k}"] = float(hit.mean())
    out[f"{prefix}hr@{k}"] = float(hit.mean())
    out[f"{prefix}ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean())
    out[f"{prefix}mrr@{k}"] = float(np.where(hit, 1.0 / (ranks + 1.0), 0.0).mean())
  return out


def generated_item_ranks(targets: Sequence[str], predictions: Sequence) -> np.ndarray:
  """0-based rank of each target text among its ranked generated texts (a str is a list of one).

  Texts match after `normalize_title` (case and white space do not matter); a target not
  generated gets a rank past every cut-off, i.e. counts as a miss.
  """
  ranks = []
  for target, prediction in zip(targets, predictions):
    ranked = [prediction] if isinstance(prediction, str) else list(prediction)
    wanted = normalize_title(target)
    ranks.append(next((i for i, c in enumerate(ranked) if normalize_title(c) == wanted),
                      1 << 30))
  return np.asarray(ranks, dtype=np.int64)


def generated_ranking_metric_fn(ks: Sequence[int] = (1, 5, 10)):
  """A SeqIO-style metric function `(targets, predictions) -> {hr@K, ndcg@K, mrr@K, ...}` for
  generative recommendation, where predictions are ranked lists of generated item texts."""

  def metric_fn(targets: Sequence[str], predictions: Sequence) -> dict[str, float]:
    return ranking_metrics(generated_item_ranks(targets, predictions), ks)

  return metric_fn

"""Next-item ranking of sequence recommenders over the whole catalogue (the `ranking` evaluator).

Each evaluated user's history (its most recent `max_len` items, right-aligned) is encoded by the
model; the hidden state after the newest item scores every catalogue item, and the held-out
target's pessimistic rank gives Recall/HR, NDCG and MRR at each K (`recjax.eval.metrics`).
- `exclude_history` removes the user's own history items (all of them, not only the `max_len`
  the model reads) from the ranking, as RecBole does; a target that is itself in the history can
  then never be found and counts as a miss.
- `sampled_negatives=N > 0` also reports `sampled{N}_*`: the target ranked among N sampled items
  outside the user's history (the original SASRec protocol, for old papers only). A slot with no
  unseen item left (id 0) is an empty one: it never outranks the target.
It also returns `users` (evaluated) and `users_total` (users in the dataset; the split drops
those too short to evaluate, `max_users` keeps a fixed subset).

The model interface: `model(items [B, T]) -> [B, T, D]`, `model.item_table() -> [N + 1, D]`
(row 0 padding) and `model.score(user [B, D], ids [B, C]) -> [B, C]` (SASRec's).
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from recjax.data import sequence_pipeline
from recjax.data.splits import EvalSet, Split
from recjax.eval import batching
from recjax.eval import metrics as metrics_lib


def subset_rows(num_users: int, max_users: int, seed: int) -> np.ndarray:
  """Rows of an evaluation set of `num_users` kept by `max_users` (0 = all): a fixed random
  subset, sorted. Every task draws its evaluated users with it, so that SASRec, CALRec and a
  baseline with the same `seed` and `max_users` are evaluated on the same users."""
  if not max_users or num_users <= max_users:
    return np.arange(num_users)
  return np.sort(np.random.default_rng(seed).choice(num_users, max_users, False))


def subset_eval_set(eval_set: EvalSet, max_users: int, seed: int) -> EvalSet:
  """A fixed random subset of `max_users` users (0 = all), the same for every checkpoint."""
  if not max_users or len(eval_set) <= max_users:
    return eval_set
  pick = subset_rows(len(eval_set), max_users, seed)
  return EvalSet(eval_set.users[pick],
                 type(eval_set.histories).from_lists([eval_set.histories[i] for i in pick]),
                 eval_set.targets[pick])


def split_eval_set(split: Split, name: str, max_users: int, seed: int) -> EvalSet:
  """The 'valid' or 'test' users of `split`, subset by `max_users`."""
  if name not in ("valid", "test"):
    raise ValueError(f"split must be 'valid' or 'test', got '{name}'")
  return subset_eval_set(getattr(split, name), max_users, seed)


def popularity_ranks(train_items: np.ndarray, num_items: int, eval_set: EvalSet,
                     exclude_history: bool) -> np.ndarray:
  """0-based ranks of the targets under the most-popular-items baseline (training counts),
  with the same pessimistic tie rule and history exclusion as the model's ranking."""
  counts = np.bincount(train_items, minlength=num_items + 1)
  scores = counts.astype(np.float64)
  scores[0] = -np.inf
  sorted_scores = np.sort(scores)
  t = scores[eval_set.targets]
  higher = len(scores) - np.searchsorted(sorted_scores, t, side="right")
  ties = np.searchsorted(sorted_scores, t, side="right") - np.searchsorted(sorted_scores, t)
  ranks = higher + ties - 1
  if exclude_history:
    for i in range(len(eval_set)):
      history = np.unique(eval_set.histories[i])
      if np.isin(eval_set.targets[i], history):
        ranks[i] = len(scores)  # the target was removed with the history: a miss
      else:
        ranks[i] -= np.sum(scores[history] >= t[i])
  return ranks


class RankingEvaluator:
  """Full-catalogue (and optionally sampled) next-item ranking; see the module docstring."""

  name = "ranking"

  def __init__(self, split: Split, *, users_total: int, max_len: int, ks: Sequence[int],
               exclude_history: bool, sampled_negatives: int, batch_size: int, max_users: int,
               seed: int, every_steps: int = 0):
    self.split, self.users_total, self.max_len = split, int(users_total), int(max_len)
    self.ks, self.exclude_history = tuple(ks), bool(exclude_history)
    self.sampled_negatives, self.batch_size = int(sampled_negatives), int(batch_size)
    self.max_users, self.seed, self.every_steps = int(max_users), int(seed), int(every_steps)

  def eval_set(self, split: str) -> EvalSet:
    return split_eval_set(self.split, split, self.max_users, self.seed)

  def __call__(self, model: nnx.Module, split: str, mesh: jax.sharding.Mesh) -> dict[str, float]:
    eval_set = self.eval_set(split)
    graphdef, state = nnx.split(model)
    rows = batching.eval_batch_rows(self.batch_size, mesh)
    ranks, sampled_ranks = [], []
    for batch, n in batching.device_batches(self._host_batches(eval_set, rows), rows, mesh):
      r, s = _eval_ranks(graphdef, state, batch, mesh=mesh)
      ranks.append(np.asarray(r)[:n])
      if s is not None:
        sampled_ranks.append(np.asarray(s)[:n])
    out = metrics_lib.ranking_metrics(np.concatenate(ranks), self.ks)
    if sampled_ranks:
      out.update(metrics_lib.ranking_metrics(
          np.concatenate(sampled_ranks), self.ks, prefix=f"sampled{self.sampled_negatives}_"))
    out["users"] = float(len(eval_set))
    out["users_total"] = float(self.users_total)
    return out

  def _host_batches(self, eval_set: EvalSet, rows: int):
    """Right-aligned histories grouped by length (to cut padding), `rows` users at a time."""
    widths = np.asarray(sequence_pipeline.bucket_widths(self.max_len))
    lengths = np.minimum(eval_set.histories.lengths, self.max_len)
    order = np.argsort(lengths, kind="stable")
    rng = np.random.default_rng([self.seed, 1234])
    n_sampled = self.sampled_negatives
    for start in range(0, len(order), rows):
      idx = order[start:start + rows]
      width = int(widths[np.searchsorted(widths, max(int(lengths[idx].max()), 1))])
      batch = {"items": np.zeros((len(idx), width), np.int32),
               "targets": eval_set.targets[idx].astype(np.int32)}
      for r, i in enumerate(idx):
        batch["items"][r] = sequence_pipeline.right_aligned(eval_set.histories[i], width)
      if self.exclude_history:
        # Every distinct history item, however old: not only the max_len the model reads.
        seen_items = [np.unique(eval_set.histories[i]) for i in idx]
        n_seen = max([len(u) for u in seen_items] + [1])
        exclude = np.zeros((len(idx), 1 << (n_seen - 1).bit_length()), np.int32)  # pow2 widths
        for r, seen in enumerate(seen_items):
          exclude[r, :len(seen)] = seen
        batch["exclude"] = exclude
      if n_sampled:
        negatives = np.zeros((len(idx), n_sampled), np.int32)
        for r, i in enumerate(idx):
          seen = np.concatenate([eval_set.histories[i], [eval_set.targets[i]]])
          negatives[r] = sequence_pipeline.sample_negatives(
              rng, self.split.num_items, seen, (n_sampled,))
        batch["negatives"] = negatives
      yield batch


@functools.partial(jax.jit, static_argnames=("graphdef", "mesh"))
def _eval_ranks(graphdef, state, batch, *, mesh):
  """(full-catalogue ranks [B], sampled ranks [B] or None), replicated on every device."""
  model = nnx.merge(graphdef, state)
  model.eval()
  targets = batch["targets"]
  user = model(batch["items"])[:, -1]  # the hidden state after the most recent item
  scores = jnp.einsum("bd,id->bi", user, model.item_table()).astype(jnp.float32)
  scores = scores.at[:, 0].set(-jnp.inf)
  exclude = batch.get("exclude")
  if exclude is not None:  # exclude is 0-padded; item 0 is already -inf
    rows = jnp.arange(scores.shape[0])[:, None]
    scores = scores.at[rows, exclude].set(-jnp.inf)
    target_in_history = jnp.any(exclude == targets[:, None], axis=1)
  ranks = metrics_lib.target_ranks(scores, targets)
  if exclude is not None:
    ranks = jnp.where(target_in_history, scores.shape[1], ranks)
  replicated = NamedSharding(mesh, PartitionSpec())
  ranks = jax.lax.with_sharding_constraint(ranks, replicated)
  sampled = None
  negatives = batch.get("negatives")
  if negatives is not None:
    candidates = jnp.concatenate([targets[:, None], negatives], axis=1)
    cand_scores = model.score(user, candidates).astype(jnp.float32)
    # An empty negative slot (id 0) never outranks the target; column 0 is the target itself.
    cand_scores = jnp.where(candidates > 0, cand_scores, -jnp.inf)
    sampled = metrics_lib.target_ranks(cand_scores, jnp.zeros_like(targets))
    sampled = jax.lax.with_sharding_constraint(sampled, replicated)
  return ranks, sampled

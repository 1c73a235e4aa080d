"""SASRec as a trainer Task: data, losses and full-catalogue / sampled evaluation.

Losses (`config.loss.name`):
- `bce`: binary cross-entropy of the target against `num_negatives` sampled items (the original
  SASRec uses one).
- `sampled_softmax`: softmax cross-entropy over the target and `num_negatives` sampled items.
- `gbce`: gSASRec's generalised BCE (Petrov & Macdonald, 2023): the positive's probability is
  raised to beta = alpha * (t * (1 - 1/alpha) + 1/alpha), alpha = negatives / (items - 1).
- `ce`: full softmax cross-entropy over the whole catalogue ("SASRec+").

Evaluation ranks the target among all items (`recall@K`, `hr@K`, `ndcg@K`, `mrr@K`); with
`eval.sampled_negatives=100` it also reports the original code's protocol, the target among 100
sampled non-interacted items, as `sampled100_*` (for comparison with old papers only).
`eval.exclude_history` removes the user's own history items from the full ranking (RecBole's
default); off by default, since repeat consumption is legitimate in some datasets. A target that
is itself in the history can then never be found, so it counts as a miss.
"""
from __future__ import annotations

import functools
from typing import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from recjax import metrics as metrics_lib
from recjax.data import sequence_pipeline
from recjax.data.canonical import InteractionData
from recjax.data.splits import EvalSet, Split
from recjax.models.sasrec import SASRec, SASRecConfig
from recjax.train import sharding as shard_lib

LOSSES = ("bce", "sampled_softmax", "gbce", "ce")


class SASRecTask:
  """Trains SASRec on one dataset split; see the module docstring for losses and metrics."""

  name = "SASRec"
  trainable = nnx.Param

  def __init__(self, config: ml_collections.ConfigDict, data: InteractionData, split: Split):
    if config.loss.name not in LOSSES:
      raise ValueError(f"config.loss.name='{config.loss.name}' is unknown; choose from {LOSSES}")
    self.config, self.data, self.split = config, data, split
    self.model_config = SASRecConfig(
        num_items=split.num_items, max_len=config.data.max_len, hidden=config.model.hidden,
        num_blocks=config.model.num_blocks, num_heads=config.model.num_heads,
        dropout=config.model.dropout, norm=config.model.norm, dtype=config.model.dtype,
        embedding_init=config.model.embedding_init,
        attend_to_padding=config.model.attend_to_padding)
    num_negatives = 0 if config.loss.name == "ce" else int(config.loss.num_negatives)
    self.pipeline_config = sequence_pipeline.PipelineConfig(
        batch_size=config.train.batch_size, max_len=config.data.max_len,
        num_negatives=num_negatives, length_bucketing=config.data.length_bucketing,
        bucket_window=config.data.bucket_window, seed=config.seed,
        num_threads=config.data.num_threads, prefetch=config.data.prefetch)
    self.steps_per_epoch = sequence_pipeline.steps_per_epoch(split.train, self.pipeline_config)
    if config.loss.normalize not in ("batch", "mean"):
      raise ValueError(f"config.loss.normalize='{config.loss.normalize}' is unknown; choose "
                       "'batch' or 'mean'")
    # Mean number of target positions per training row (what a batch row holds on average).
    self.mean_positions = float(sequence_pipeline.BatchPlan(
        split.train.lengths, self.pipeline_config).steps.mean())

  # --- Task interface -------------------------------------------------------------------------

  def build_model(self, rngs: nnx.Rngs) -> SASRec:
    return SASRec(self.model_config, rngs)

  def train_data(self, process_index: int, process_count: int):
    return sequence_pipeline.training_batches(self.split.train, self.split.num_items,
                                              self.pipeline_config, process_index, process_count)

  def loss(self, model: SASRec, batch: Mapping[str, jax.Array], rngs: nnx.Rngs):
    hidden = model(batch["inputs"], rngs=rngs)
    targets = batch["targets"]
    valid = targets > 0
    name = self.config.loss.name
    if name == "ce":
      logits = jnp.einsum("btd,id->bti", hidden, model.item_table()).astype(jnp.float32)
      logits = logits.at[..., 0].set(-jnp.inf)
      # Padding positions get a real label so neither the loss nor its gradient is inf there.
      per_pos = optax.softmax_cross_entropy_with_integer_labels(
          logits, jnp.where(valid, targets, 1))
    else:
      pos = model.score(hidden, targets[..., None]).astype(jnp.float32)  # [B, T, 1]
      neg = model.score(hidden, batch["negatives"]).astype(jnp.float32)  # [B, T, N]
      if name == "sampled_softmax":
        logits = jnp.concatenate([pos, neg], axis=-1)
        per_pos = -jax.nn.log_softmax(logits, axis=-1)[..., 0]
      else:
        beta = 1.0
        if name == "gbce":
          alpha = neg.shape[-1] / (self.split.num_items - 1)
          t = self.config.loss.gbce_t
          beta = alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)
        per_pos = (-beta * jax.nn.log_sigmoid(pos[..., 0])
                   - jnp.sum(jax.nn.log_sigmoid(-neg), axis=-1))
    # where, not multiply: a padding position's loss may be inf, and inf * 0 is NaN.
    loss_sum = jnp.sum(jnp.where(valid, per_pos, 0.0))
    if self.config.loss.normalize == "mean":  # a constant: each position weighs the same
      return loss_sum, jnp.float32(targets.shape[0] * self.mean_positions), {}
    return loss_sum, jnp.sum(valid.astype(jnp.float32)), {}

  def evaluate(self, model: SASRec, split: str, mesh) -> dict[str, float]:
    eval_set = self._eval_set(split)
    cfg = self.config.eval
    graphdef, state = nnx.split(model)
    ranks, sampled_ranks = [], []
    for items, targets, negatives, exclude, n in self._eval_batches(eval_set, mesh):
      r, s = _eval_ranks(graphdef, state, items, targets, negatives, exclude,
                         mesh=mesh, with_sampled=negatives is not None)
      ranks.append(np.asarray(r)[:n])
      if s is not None:
        sampled_ranks.append(np.asarray(s)[:n])
    out = metrics_lib.ranking_metrics(np.concatenate(ranks), cfg.ks)
    if sampled_ranks:
      out.update(metrics_lib.ranking_metrics(
          np.concatenate(sampled_ranks), cfg.ks, prefix=f"sampled{cfg.sampled_negatives}_"))
    return out

  # --- Evaluation helpers ---------------------------------------------------------------------

  def _eval_set(self, split: str) -> EvalSet:
    if split not in ("valid", "test"):
      raise ValueError(f"split must be 'valid' or 'test', got '{split}'")
    eval_set = getattr(self.split, split)
    limit = int(self.config.eval.max_users)
    if limit and len(eval_set) > limit:
      # A fixed random subset (named in the config), the same for every checkpoint.
      pick = np.sort(np.random.default_rng(self.config.seed).choice(len(eval_set), limit, False))
      eval_set = EvalSet(eval_set.users[pick],
                         type(eval_set.histories).from_lists([eval_set.histories[i] for i in pick]),
                         eval_set.targets[pick])
    return eval_set

  def _eval_batches(self, eval_set: EvalSet, mesh):
    """Yields device batches of right-aligned histories, grouped by length to cut padding."""
    cfg = self.config.eval
    max_len = self.config.data.max_len
    widths = np.asarray(sequence_pipeline.bucket_widths(max_len))
    lengths = np.minimum(eval_set.histories.lengths, max_len)
    order = np.argsort(lengths, kind="stable")
    num_data = mesh.shape["data"] * mesh.shape["fsdp"]
    batch = -(-int(cfg.batch_size) // num_data) * num_data
    sharding = shard_lib.batch_sharding(mesh)
    rng = np.random.default_rng([self.config.seed, 1234])
    n_sampled = int(cfg.sampled_negatives)
    put = lambda x: jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
    for start in range(0, len(order), batch):
      idx = order[start:start + batch]
      width = int(widths[np.searchsorted(widths, max(int(lengths[idx].max()), 1))])
      items = np.zeros((batch, width), np.int32)
      targets = np.ones(batch, np.int32)
      # Every distinct history item, however old: not only the max_len the model reads.
      seen_items = [np.unique(eval_set.histories[i]) for i in idx] if cfg.exclude_history else []
      n_seen = max([len(u) for u in seen_items] + [1])
      exclude = np.zeros((batch, 1 << (n_seen - 1).bit_length()), np.int32)  # pow2: few shapes
      negatives = np.ones((batch, n_sampled), np.int32) if n_sampled else None
      for r, i in enumerate(idx):
        history = eval_set.histories[i]
        items[r] = sequence_pipeline.right_aligned(history, width)
        targets[r] = eval_set.targets[i]
        if cfg.exclude_history:
          exclude[r, :len(seen_items[r])] = seen_items[r]
        if n_sampled:
          seen = np.concatenate([history, [eval_set.targets[i]]])
          negatives[r] = sequence_pipeline.sample_negatives(
              rng, self.split.num_items, seen, (n_sampled,))
      yield (put(items), put(targets), None if negatives is None else put(negatives),
             put(exclude) if cfg.exclude_history else None, len(idx))

  def popularity_metrics(self, split: str) -> dict[str, float]:
    """The most-popular-items baseline (training counts) under the same full-ranking protocol."""
    eval_set = self._eval_set(split)
    counts = np.bincount(self.split.train.values, minlength=self.split.num_items + 1)
    scores = counts.astype(np.float64)
    scores[0] = -np.inf
    # Rank under the same pessimistic tie rule as the model: higher + other ties.
    sorted_scores = np.sort(scores)
    t = scores[eval_set.targets]
    higher = len(scores) - np.searchsorted(sorted_scores, t, side="right")
    ties = np.searchsorted(sorted_scores, t, side="right") - np.searchsorted(sorted_scores, t)
    ranks = higher + ties - 1
    if self.config.eval.exclude_history:
      for i in range(len(eval_set)):
        history = np.unique(eval_set.histories[i])
        if np.isin(eval_set.targets[i], history):
          ranks[i] = len(scores)  # the target was removed with the history: a miss
        else:
          ranks[i] -= np.sum(scores[history] >= t[i])
    return metrics_lib.ranking_metrics(ranks, self.config.eval.ks)


@functools.partial(jax.jit, static_argnames=("graphdef", "mesh", "with_sampled"))
def _eval_ranks(graphdef, state, items, targets, negatives, exclude, *, mesh, with_sampled):
  model = nnx.merge(graphdef, state)
  model.eval()
  user = model(items)[:, -1]  # the hidden state after the most recent item
  scores = jnp.einsum("bd,id->bi", user, model.item_table()).astype(jnp.float32)
  scores = scores.at[:, 0].set(-jnp.inf)
  if exclude is not None:  # exclude is 0-padded; item 0 is already -inf
    rows = jnp.arange(scores.shape[0])[:, None]
    scores = scores.at[rows, exclude].set(-jnp.inf)
    target_in_history = jnp.any(exclude == targets[:, None], axis=1)
  ranks = metrics_lib.target_ranks(scores, targets)
  if exclude is not None:
    ranks = jnp.where(target_in_history, scores.shape[1], ranks)
  sampled = None
  if with_sampled:
    candidates = jnp.concatenate([targets[:, None], negatives], axis=1)
    cand_scores = model.score(user, candidates).astype(jnp.float32)
    sampled = metrics_lib.target_ranks(cand_scores, jnp.zeros_like(targets))
  replicated = NamedSharding(mesh, PartitionSpec())
  ranks = jax.lax.with_sharding_constraint(ranks, replicated)
  if sampled is not None:
    sampled = jax.lax.with_sharding_constraint(sampled, replicated)
  return ranks, sampled


def default_config() -> ml_collections.ConfigDict:
  """The model/loss/eval blocks of a SASRec experiment."""
  return ml_collections.ConfigDict(dict(
      model=dict(
          hidden=50,         # embedding width. Reference: 50; stronger full-ranking runs: 64-256.
          num_blocks=2,      # self-attention blocks. Reference: 2.
          num_heads=1,       # attention heads (hidden must divide). Reference: 1.
          dropout=0.2,       # Reference: 0.2 (ML-1M), 0.5 (sparse Amazon data).
          # pre (original code) | pre_ln (standard pre-LN; SASRec.pytorch --norm_first, which
          # it reports better on 3 of 4 datasets) | post (original Transformer).
          norm="pre",
          dtype="float32",   # compute dtype: float32 | bfloat16 (parameters stay float32).
          embedding_init="xavier",  # xavier (reference code) | normal (std hidden**-0.5).
          # Attend to the left padding as SASRec.pytorch does (a learned sink weighted by the
          # number of pads; exact with trimmed batches). Reference: True; False masks pads.
          attend_to_padding=False,
      ),
      loss=dict(
          name="bce",        # bce | sampled_softmax | gbce | ce (see recjax/tasks/sasrec.py).
          num_negatives=1,   # sampled negatives per position (bce: 1 in the original; gbce: 256).
          gbce_t=0.75,       # gSASRec calibration t in [0, 1]; 0 = plain BCE.
          # Loss divisor. "mean" (recommended): batch_size x the mean positions per training
          # user, a constant, so every position weighs the same whatever batch it lands in.
          # "batch": the batch's number of target positions (the reference code's mean; with
          # length-bucketed batches it weighs a position of a short-history batch up to max_len
          # times more than one of a long-history batch; on amazon_video it costs ~0.015
          # sampled100 NDCG@10, docs/benchmarks.md).
          normalize="mean",
      ),
      eval=dict(
          ks=(1, 5, 10, 20, 50, 100),  # cut-offs for Recall/HR, NDCG, MRR.
          exclude_history=False,  # drop the user's own history items from the ranking.
          sampled_negatives=100,  # also report sampled{N}_* metrics; 0 disables.
          batch_size=512,         # users scored per device batch.
          max_users=0,            # 0 = every user; N = a fixed random subset (named in results).
      ),
  ))

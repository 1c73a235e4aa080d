"""SASRec as a trainer Task: data, losses (recjax.objectives.ranking) and evaluators.

Losses (`config.loss.name`):
- `bce`: binary cross-entropy of the target against `num_negatives` sampled items (the original
  SASRec uses one).
- `sampled_softmax`: softmax cross-entropy over the target and `num_negatives` sampled items.
- `gbce`: gSASRec's generalised BCE (Petrov & Macdonald, 2023): the positive's probability is
  raised to beta = alpha * (t * (1 - 1/alpha) + 1/alpha), alpha = negatives / (items - 1).
- `ce`: full softmax cross-entropy over the whole catalogue ("SASRec+").
A sampled negative with id 0 (no unseen item left for that user) is an empty slot: masked.

Evaluators (`config.eval.evaluators`): `ranking` ranks the target among all items (`recall@K`,
`hr@K`, `ndcg@K`, `mrr@K`, `users`, `users_total`); with `eval.sampled_negatives=100` it also
reports the original code's protocol, the target among 100 sampled non-interacted items, as
`sampled100_*` (for comparison with old papers only). `eval.exclude_history` removes the user's
own history items from the full ranking (RecBole's default); off by default, since repeat
consumption is legitimate in some datasets. A target that is itself in the history can then
never be found, so it counts as a miss. See recjax/eval/ranking.py. Baseline: `Popularity`.
"""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from recjax.data import sequence_pipeline
from recjax.data.canonical import InteractionData
from recjax.data.splits import EvalSet, Split
from recjax.eval import evaluators as evaluators_lib
from recjax.eval import metrics as metrics_lib
from recjax.eval import ranking as ranking_eval
from recjax.models.sasrec import SASRec, SASRecConfig
from recjax.objectives import ranking as ranking_loss

LOSSES = ("bce", "sampled_softmax", "gbce", "ce")


class SASRecTask:
  """Trains SASRec on one dataset split; see the module docstring for losses and metrics."""

  name = "SASRec"
  trainable = nnx.Param
  fresh_parameters = ()
  loss_updates = None  # the loss sets no variable outside the gradient

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
    self.evaluators = evaluators_lib.build_evaluators(config.eval.evaluators, {
        "ranking": self._ranking_evaluator,
    })

  def _ranking_evaluator(self, every_steps: int) -> ranking_eval.RankingEvaluator:
    cfg = self.config.eval
    return ranking_eval.RankingEvaluator(
        self.split, users_total=self.data.num_users, max_len=self.config.data.max_len,
        ks=cfg.ks, exclude_history=cfg.exclude_history,
        sampled_negatives=cfg.sampled_negatives, batch_size=cfg.batch_size,
        max_users=cfg.max_users, seed=self.config.seed, every_steps=every_steps)

  # --- Task interface -------------------------------------------------------------------------

  def summary(self) -> str:
    """The dataset, then what reading and preprocessing changed in it (one line each)."""
    return "\n".join([self.data.summary(), *self.data.report])

  @property
  def table_columns(self) -> list[str]:
    """Metrics `recjax.main` prints (sampled ones only when they are computed)."""
    n = int(self.config.eval.sampled_negatives)
    return [c for c in metrics_lib.TABLE_COLUMNS if not c.startswith("sampled")] + (
        [f"sampled{n}_hr@10", f"sampled{n}_ndcg@10"] if n else [])

  @property
  def results_heading(self) -> str:
    return "full-catalogue ranking" + (
        " without history items" if self.config.eval.exclude_history else "")

  def pretrained_state(self, model: SASRec) -> nnx.State | None:
    del model  # SASRec has no pretrained weights of its own
    return None

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
      loss_sum, weight, metrics = ranking_loss.softmax_ce(logits, targets, valid)
    else:
      pos = model.score(hidden, targets[..., None]).astype(jnp.float32)[..., 0]  # [B, T]
      neg = model.score(hidden, batch["negatives"]).astype(jnp.float32)  # [B, T, N]
      neg_mask = batch["negatives"] > 0  # id 0: the user has no unseen item left
      if name == "sampled_softmax":
        loss_sum, weight, metrics = ranking_loss.sampled_softmax(pos, neg, valid, neg_mask)
      elif name == "gbce":
        loss_sum, weight, metrics = ranking_loss.gbce(
            pos, neg, valid, neg_mask, num_items=self.split.num_items, t=self.config.loss.gbce_t)
      else:
        loss_sum, weight, metrics = ranking_loss.bce(pos, neg, valid, neg_mask)
    if self.config.loss.normalize == "mean":  # a constant: each position weighs the same
      metrics = {**metrics, "targets": weight}
      weight = jnp.float32(targets.shape[0] * self.mean_positions)
    return loss_sum, weight, metrics

  def baselines(self, split: str) -> dict[str, dict[str, float]]:
    """The most-popular-items baseline (training counts) under the model's ranking protocol."""
    ranks = ranking_eval.popularity_ranks(self.split.train.values, self.split.num_items,
                                          self._eval_set(split),
                                          bool(self.config.eval.exclude_history))
    return {"Popularity": metrics_lib.ranking_metrics(ranks, self.config.eval.ks)}

  def _eval_set(self, split: str) -> EvalSet:
    """The users evaluated on `split` (a fixed subset with `eval.max_users`)."""
    return ranking_eval.split_eval_set(self.split, split, int(self.config.eval.max_users),
                                       int(self.config.seed))


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
          # Comma list of `name` or `name@N` (every N training steps; without @N every
          # train.eval_every_steps): ranking = full-catalogue ranking (+ sampled{N}_* above).
          evaluators="ranking",
      ),
  ))

"""Semantic-ID quantisers as trainer Tasks: `rqvae` (RQ-VAE) and `sae` (top-k sparse autoencoder).

Both embed the item texts of `config.data.dataset` once (`config.embed`: tfidf_svd, wordllama or
lm, recjax/curriculum/embeddings.py), then train on batches of embedding rows: each global batch is
`train.batch_size` rows of a stream of seeded permutations of the catalogue (every item once per
epoch, in an order fixed by `config.seed`), so a run is deterministic per seed and resumes
exactly.

- `rqvae` (recjax/curriculum/rqvae.py): fresh runs set the codebooks by residual k-means over the
  encoder's outputs on the whole catalogue (`model.kmeans_init`) before the first step; dead
  codes are restarted inside the loss, in `QuantizerState` variables the trainer keeps
  (`loss_updates`). Train metrics per level: `utilisation_<l>`, `perplexity_<l>` and
  `restarted_<l>` of the batch.
- `sae` (recjax/curriculum/sae.py): the pre-encoder bias starts at the catalogue's mean
  embedding. Train metrics per code position: `utilisation_<l>`, `perplexity_<l>`.

Evaluator `codes` (the only one): codes of the whole catalogue with the collision level;
`collision_rate` (before the collision level), `items_in_collision`, `collision_size`,
`unique_codes` (1.0: every item's code differs), per level `used_<l>`, `utilisation_<l>`,
`perplexity_<l>`, `relative_error_<l>`, and `relative_error` of the whole code. It writes
WORKDIR/semantic_ids.npz (read it back with `load_semantic_ids(workdir)`) and
WORKDIR/semantic_ids.txt (the report) at every evaluation; the last, after training, is the
final one. 'valid' and 'test' give the same figures: quantisation has no held-out part.
Baseline row (`eval.rq_kmeans_baseline`, rqvae only): RQ-KMeans with the same levels and
codebook size on the same embeddings.
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from recjax.curriculum import rqvae as rqvae_lib
from recjax.curriculum import sae as sae_lib
from recjax.curriculum import semantic_ids as sid
from recjax.eval import evaluators as evaluators_lib

IDS_FILE = "semantic_ids.npz"
REPORT_FILE = "semantic_ids.txt"


def load_semantic_ids(workdir: str) -> sid.SemanticIds:
  """The codes the last evaluation of an `rqvae` or `sae` run wrote into `workdir`."""
  path = os.path.join(workdir, IDS_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: {workdir} is not a finished rqvae/sae run")
  return sid.SemanticIds.load(path)


def item_embeddings(config: ml_collections.ConfigDict):
  """(dataset, float32 [items, dim] embeddings of items 1..n) as `config.embed` says."""
  from recjax.curriculum import embeddings  # pylint: disable=g-import-not-at-top
  from recjax.data import registry  # pylint: disable=g-import-not-at-top
  from recjax.text.item_text import ItemCatalogue  # pylint: disable=g-import-not-at-top
  cfg = config.embed
  if cfg.method == "lm":  # a bad path fails before any data is read
    embeddings.lm_source(str(cfg.lm_path), key="embed.lm_path")
  data = registry.load_dataset(config.data.dataset.to_dict(), config.data.root or None)
  texts = embeddings.item_texts(ItemCatalogue.build(data), missing_text=cfg.missing_text)
  x = embeddings.embed_texts(texts, method=cfg.method, dim=cfg.dim, seed=config.seed,
                             lm_path=str(cfg.lm_path), max_len=int(cfg.max_len),
                             batch_size=int(cfg.batch_size))
  return data, x


class RowBatches:
  """Global batch `index` -> item rows: a stream of seeded permutations of 0..n-1 (grain source)."""

  def __init__(self, num_items: int, batch_size: int, seed: int):
    self.n, self.batch_size, self.seed = num_items, batch_size, seed
    self._cache = (-1, None)

  def __len__(self) -> int:
    return np.iinfo(np.int64).max // 2  # forever

  def _order(self, epoch: int) -> np.ndarray:
    cached_epoch, order = self._cache
    if cached_epoch != epoch:
      order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
      self._cache = (epoch, order)
    return order

  def __getitem__(self, index: int) -> np.ndarray:
    positions = int(index) * self.batch_size + np.arange(self.batch_size)
    epochs, offsets = np.divmod(positions, self.n)
    return np.concatenate([self._order(int(e))[offsets[epochs == e]] for e in np.unique(epochs)])


class _LocalRows(grain.transforms.Map):
  """Global batch rows -> this process's embedding rows."""

  def __init__(self, x: np.ndarray, batch_size: int, process_index: int, process_count: int):
    if batch_size % process_count:
      raise ValueError(f"train.batch_size={batch_size} must divide by the number of processes "
                       f"({process_count})")
    local = batch_size // process_count
    self.x, self.local = x, slice(process_index * local, (process_index + 1) * local)

  def map(self, element):
    return {"x": self.x[element[self.local]]}


class CodesEvaluator:
  """Codes of the whole catalogue, their statistics, and the files in the workdir."""

  name = "codes"

  def __init__(self, task: "_QuantizerTask", every_steps: int):
    self.task, self.every_steps = task, every_steps

  def __call__(self, model: nnx.Module, split: str, mesh: jax.sharding.Mesh) -> dict[str, float]:
    del split, mesh  # the whole catalogue, whatever the split
    ids = self.task.semantic_ids(model)
    workdir = self.task.workdir
    if workdir and jax.process_index() == 0:
      os.makedirs(workdir, exist_ok=True)
      ids.save(os.path.join(workdir, IDS_FILE))
      with open(os.path.join(workdir, REPORT_FILE), "w", encoding="utf-8") as f:
        f.write(ids.report() + "\n")
    return code_metrics(ids)


def code_metrics(ids: sid.SemanticIds) -> dict[str, float]:
  """The evaluator's metrics of any `SemanticIds` (also those of the RQ-KMeans baseline)."""
  out = {"collision_rate": ids.collision_rate, "items_in_collision": ids.items_in_collision,
         "collision_size": ids.collision_size,
         "unique_codes": len({tuple(c) for c in ids.codes[1:]}) / ids.num_items}
  for level, s in enumerate(ids.levels):
    letter = sid.level_letter(level)
    out.update({f"used_{letter}": s.used, f"utilisation_{letter}": s.utilisation,
                f"perplexity_{letter}": s.perplexity, f"relative_error_{letter}": s.relative_error})
  out["relative_error"] = ids.levels[-1].relative_error
  return {k: float(v) for k, v in out.items()}


class _QuantizerTask:
  """What the rqvae and sae tasks share: data, batches, evaluator, table."""

  trainable = nnx.Param
  fresh_parameters = ()
  loss_updates = None
  results_heading = "codes of the whole catalogue (collision rate before the collision level)"

  def __init__(self, config: ml_collections.ConfigDict, workdir: str | None):
    self.config, self.workdir = config, workdir
    self.data, self.embeddings = item_embeddings(config)
    self.num_items, self.dim = self.embeddings.shape
    self.steps_per_epoch = math.ceil(self.num_items / int(config.train.batch_size))
    self.evaluators = evaluators_lib.build_evaluators(
        config.eval.evaluators, {"codes": lambda every: CodesEvaluator(self, every)})
    self._baselines: dict[str, dict[str, float]] | None = None

  @property
  def num_levels(self) -> int:
    raise NotImplementedError

  @property
  def table_columns(self) -> list[str]:
    letters = [sid.level_letter(l) for l in range(self.num_levels)]
    return (["collision_rate"] + [f"utilisation_{l}" for l in letters] +
            [f"perplexity_{l}" for l in letters] + ["relative_error"])

  def summary(self) -> str:
    cfg = self.config.embed
    return "\n".join([self.data.summary(), *self.data.report,
                      f"embeddings: {cfg.method}, {self.num_items:,} items x {self.dim}"])

  def train_data(self, process_index: int, process_count: int) -> grain.IterDataset:
    batch = int(self.config.train.batch_size)
    ds = grain.MapDataset.source(RowBatches(self.num_items, batch, int(self.config.seed)))
    ds = ds.map(_LocalRows(self.embeddings, batch, process_index, process_count))
    read = grain.ReadOptions(num_threads=self.config.data.num_threads,
                             prefetch_buffer_size=self.config.data.prefetch)
    return ds.to_iter_dataset(read)

  def semantic_ids(self, model: nnx.Module) -> sid.SemanticIds:
    raise NotImplementedError

  def baselines(self, split: str) -> dict[str, dict[str, float]]:
    del split
    return {}

  @staticmethod
  def _sums(per_item: jax.Array, metrics: Mapping[str, jax.Array]):
    """(loss sum, weight, metrics as sums): the trainer divides them by the weight again."""
    weight = jnp.float32(per_item.shape[0])
    return per_item.sum(), weight, {k: v * weight for k, v in metrics.items()}


class RQVAETask(_QuantizerTask):
  """Trains an RQ-VAE on item embeddings; see the module docstring."""

  name = "RQ-VAE"
  loss_updates = rqvae_lib.QuantizerState

  def __init__(self, config: ml_collections.ConfigDict, workdir: str | None):
    super().__init__(config, workdir)
    m = config.model
    self.model_config = rqvae_lib.RQVAEConfig(
        input_dim=self.dim, hidden=tuple(m.encoder_widths), latent_dim=m.latent_dim,
        levels=m.levels, codebook_size=m.codebook_size, beta=m.beta,
        restart_after=m.restart_after, collision_level=m.collision_level, seed=config.seed,
        kmeans_iters=m.kmeans_iters)
    rqvae_lib.check_catalogue(self.num_items, self.model_config)

  @property
  def num_levels(self) -> int:
    return self.model_config.levels

  def summary(self) -> str:
    cfg = self.model_config
    init = ("residual k-means over the fresh encoder's outputs (a fresh run's \"pretrained "
            "weights\")" if self.config.model.kmeans_init else "random")
    return super().summary() + (
        f"\nRQ-VAE {self.dim} -> {list(cfg.hidden)} -> {cfg.latent_dim}, {cfg.levels} x "
        f"{cfg.codebook_size} codes, beta {cfg.beta}, restart after {cfg.restart_after} unused "
        f"steps; codebooks start as {init}")

  def build_model(self, rngs: nnx.Rngs) -> rqvae_lib.RQVAE:
    return rqvae_lib.RQVAE(self.model_config, rngs)

  def pretrained_state(self, model: rqvae_lib.RQVAE) -> nnx.State | None:
    """The k-means codebooks over the fresh encoder's outputs (None: `model.kmeans_init` off)."""
    if not self.config.model.kmeans_init:
      return None
    rqvae_lib.kmeans_init(model, self.embeddings)
    return nnx.state(model)

  def loss(self, model: rqvae_lib.RQVAE, batch: Mapping[str, jax.Array], rngs: nnx.Rngs):
    per_item, metrics = model.loss(batch["x"], rngs.dropout())
    return self._sums(per_item, metrics)

  def semantic_ids(self, model: rqvae_lib.RQVAE) -> sid.SemanticIds:
    return rqvae_lib.semantic_ids(model, self.embeddings, notes=(
        f"embeddings: {self.config.embed.method} {self.num_items:,} x {self.dim}",))

  def baselines(self, split: str) -> dict[str, dict[str, float]]:
    """RQ-KMeans with the same levels and codebook size (`eval.rq_kmeans_baseline`)."""
    del split
    if not self.config.eval.rq_kmeans_baseline:
      return {}
    if self._baselines is None:
      cfg = self.model_config
      ids = sid.rq_kmeans(self.embeddings, sid.RQKMeansConfig(
          levels=cfg.levels, codebook_size=cfg.codebook_size, seed=cfg.seed))
      self._baselines = {"RQ-KMeans": code_metrics(ids)}
    return self._baselines


class SAETask(_QuantizerTask):
  """Trains a top-k sparse autoencoder on item embeddings; see the module docstring."""

  name = "top-k SAE"
  loss_updates = rqvae_lib.QuantizerState  # the `unfired` counters AuxK reads

  def __init__(self, config: ml_collections.ConfigDict, workdir: str | None):
    super().__init__(config, workdir)
    m = config.model
    self.model_config = sae_lib.SAEConfig(
        input_dim=self.dim, num_latents=m.num_latents, k=m.k, collision_level=m.collision_level,
        dead_after=m.dead_after, aux_k=m.aux_k, aux_weight=m.aux_weight,
        shared_vocabulary=m.shared_vocabulary)

  @property
  def num_levels(self) -> int:
    return self.model_config.k

  def summary(self) -> str:
    cfg = self.model_config
    return super().summary() + (
        f"\ntop-k SAE {self.dim} -> {cfg.num_latents} latents, codes of the {cfg.k} most active; "
        "the pre-encoder bias starts at the mean embedding (a fresh run's \"pretrained weights\"); "
        + (f"AuxK on latents dead for {cfg.dead_after} steps (aux_k {cfg.aux_k}, weight "
           f"{cfg.aux_weight:g})" if cfg.dead_after and cfg.aux_weight else "no AuxK loss"))

  def build_model(self, rngs: nnx.Rngs) -> sae_lib.TopKSAE:
    return sae_lib.TopKSAE(self.model_config, rngs)

  def pretrained_state(self, model: sae_lib.TopKSAE) -> nnx.State | None:
    """The pre-encoder bias at the catalogue's mean embedding (Gao et al. use a median)."""
    old = model.b_pre[...]
    mean = jnp.asarray(self.embeddings.mean(0), old.dtype)
    model.b_pre[...] = jax.device_put(mean, old.sharding) if hasattr(old, "sharding") else mean
    return nnx.state(model)

  def loss(self, model: sae_lib.TopKSAE, batch: Mapping[str, jax.Array], rngs: nnx.Rngs):
    del rngs  # deterministic
    per_item, metrics = model.loss(batch["x"])
    return self._sums(per_item, metrics)

  def semantic_ids(self, model: sae_lib.TopKSAE) -> sid.SemanticIds:
    return sae_lib.semantic_ids(model, self.embeddings, notes=(
        f"embeddings: {self.config.embed.method} {self.num_items:,} x {self.dim}",))


def _shared_blocks(baseline: bool) -> dict[str, Any]:
  blocks = dict(
      embed=dict(
          # Item-text embedder: tfidf_svd | wordllama (always 256-d) | lm (a language model's
          # mean-pooled final-layer hidden states; its hidden size wide).
          method="tfidf_svd",
          dim=256,             # tfidf_svd width (shrinks to items - 1 on tiny catalogues).
          # method=lm: a recjax lm/glm/calrec workdir (latest checkpoint, the workdir's own
          # tokenizer; the run's data must be readable) or a local Hugging Face directory
          # (config.json, *.safetensors, tokenizer.json). Required for lm; no default.
          lm_path="",
          # method=lm: tokens per item text, BOS included; longer texts are truncated (the rest
          # is dropped). 128 (recommended) holds whole item texts for a subword tokenizer
          # (amazon_games6k: at most 77 with a 4k-piece SentencePiece); byte tokens need 257
          # (item texts are at most 256 characters).
          max_len=128,
          # method=lm: item texts per jitted forward pass (rounded up to a multiple of the
          # data-parallel devices). Recommended: 64 on CPU, 256 or more on an accelerator.
          batch_size=64,
          # Items with no text: "fallback" embeds "item <raw id>"; "error" stops, naming them.
          missing_text="fallback",
      ),
      eval=dict(
          # Comma list of `codes` or `codes@N` (every N training steps; without @N every
          # train.eval_every_steps, and always at the end): codes of the whole catalogue.
          evaluators="codes",
      ),
  )
  if baseline:
    # Also report RQ-KMeans (same levels and codebook size, same embeddings) as a baseline
    # row; seconds to minutes of k-means at the end of the run.
    blocks["eval"]["rq_kmeans_baseline"] = True
  return blocks


def rqvae_config() -> ml_collections.ConfigDict:
  """The model/embed/eval blocks of an RQ-VAE run (TIGER's shape by default)."""
  return ml_collections.ConfigDict(dict(
      model=dict(
          encoder_widths=(512, 256, 128),  # encoder MLP; the decoder mirrors it. TIGER's.
          latent_dim=32,     # width of the latent and of every codeword. TIGER: 32.
          levels=3,          # quantisation levels before the collision level. TIGER/GRID: 3.
          codebook_size=256,  # codes per level. TIGER/GRID: 256.
          beta=0.25,         # commitment weight. TIGER: 0.25.
          # Steps a code may go unchosen by every item of the batch before it is re-seeded
          # with a random residual of the batch; 0 disables restarts.
          restart_after=100,
          kmeans_init=True,  # codebooks from residual k-means over the fresh encoder outputs.
          kmeans_iters=100,  # Lloyd iterations per level of that k-means.
          collision_level=True,  # append the collision digit (unique codes).
      ),
      **_shared_blocks(True),
  ))


def sae_config() -> ml_collections.ConfigDict:
  """The model/embed/eval blocks of a top-k sparse-autoencoder run."""
  return ml_collections.ConfigDict(dict(
      model=dict(
          num_latents=4096,  # dictionary size (the paper's codes reach REC6594: ~8192 there).
          k=8,               # active latents per item = code length (the paper: 8 tokens).
          collision_level=True,  # append the collision digit (unique codes).
          # AuxK (Gao et al. 2024): a latent not among any item's k most active for dead_after
          # steps is dead; the residual x - x_hat is then also rebuilt from the aux_k most active
          # dead latents, weighted aux_weight. dead_after=0 turns it off. Recommended: ~6
          # epochs of steps (100 at 1,024 of 16,859 items per step), aux_k = num_latents / 16
          # (Gao et al.: 512 of 32k+; more to revive faster), weight 1/32 (Gao et al.).
          dead_after=100,
          aux_k=256,
          aux_weight=1 / 32,
          # LM code tokens: True, one REC<latent> vocabulary for every position (the paper's
          # REC6594; num_latents tokens + the collision digit's); False, one range per position
          # (k x num_latents tokens, as RQ codes).
          shared_vocabulary=True,
      ),
      **_shared_blocks(False),
  ))

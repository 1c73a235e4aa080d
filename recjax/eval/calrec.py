"""Evaluators of a text recommender trained as generator and towers (CALRec): three modes.

Every mode ranks the whole catalogue of each evaluated domain for each user and scores the
held-out target's rank (`metrics.ranking_metrics`: recall@K, hr@K, ndcg@K, mrr@K), under
`<mode>/<domain prefix>` names, with `users`, `users_total` and `users_per_sec`:

- `dense`: v_U (the user's prompt, mean-pooled over its user tokens) against v_T (every item's
  item-alone row, mean-pooled over its item tokens), cosine similarity: the contrastive
  objective's own space. Ties are broken against the target (`metrics.target_ranks`).
- `bm25`: K next-item texts per user generated with the KV cache (`models.decoding`, batched
  and jitted; temperature sampling, or beam search with `generation="beam"`), each ranked
  against the catalogue's item texts by BM25 (`retrieval.BM25`, its `bm25_top_k` best items);
  the K lists are merged quasi-round-robin (`retrieval.merged_target_ranks`: every list's rank
  1 in the order of the generations' log-probabilities, then every rank 2, ..., skipping items
  already placed). Items no list retrieved follow in training-popularity order (ties: lower
  id); a generation that matches nothing (no shared word) gives an empty list, so a user whose
  K generations all match nothing is ranked by popularity alone. `exact_match` is the share of
  generations equal to a catalogue item's text (`retrieval.normalize_title`), `no_match` the
  share that BM25 retrieves nothing for.
- `constrained`: beam search (K beams) restricted by a trie to the catalogue's item token
  sequences + EOS, so every beam is an item; items in beam-score order (several items with one
  text share the beam, lower id first), then training popularity.

`exclude_history` removes each user's history items from every ranking (a target that is in
the history is then a miss), as the ranking evaluator of SASRec does. When it is off, each mode
also reports the same ranking with history items removed as `<mode>/<domain prefix>no_history/
...` (computed from the same scores and generations, so both protocols cost one evaluation).
Every process evaluates every user, so the metrics are identical on all of them.

The model interface: recjax's LLM (`model(tokens, positions=, segment_ids=, return_hidden=,
compute_logits=)`, `models.decoding.generate`).
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from recjax.eval import batching
from recjax.eval import metrics as metrics_lib
from recjax.eval import retrieval
from recjax.models import decoding
from recjax.objectives import contrastive

MISS = 1 << 30  # rank of a target that can never be found (it is in the excluded history)


@dataclasses.dataclass
class EvalUsers:
  """The evaluated users of one domain and split."""

  prompts: list[np.ndarray]      # BOS + the CALRec prompt's tokens (no EOS), per user
  user_masks: list[np.ndarray]   # int [len(prompt)]: the tokens v_U pools
  targets: np.ndarray            # int [U] held-out item ids (1..N)
  histories: list[np.ndarray]    # distinct history item ids per user (for exclude_history)
  users_total: int               # users of the dataset (reported)

  def __len__(self) -> int:
    return len(self.targets)


@dataclasses.dataclass
class Domain:
  """One catalogue to rank and where its users come from."""

  prefix: str                # metric-name prefix: "" for one domain, "<slug>/" in a mixture
  texts: list[str]           # texts[i] = item i's text; texts[0] = "" (padding)
  item_rows: list[np.ndarray]   # BOS + item i's tokens (the item-alone row; [0] unused)
  item_masks: list[np.ndarray]  # int, same lengths: the item tokens v_T pools (all after BOS)
  popularity: np.ndarray     # float [N + 1]: training counts (fallback order of the merge)
  users: Callable[[str], EvalUsers]  # split -> the users evaluated there

  @property
  def num_items(self) -> int:
    return len(self.texts) - 1

  def item_sequences(self, eos_id: int) -> list[list[int]]:
    """Item i's tokens + EOS, for i = 1..N (the trie of constrained decoding)."""
    return [[int(t) for t in row[mask > 0]] + [eos_id]
            for row, mask in zip(self.item_rows[1:], self.item_masks[1:])]


def popularity_ranks(popularity: np.ndarray, users: EvalUsers,
                     exclude_history: bool) -> np.ndarray:
  """0-based pessimistic ranks of the targets under most-popular-first (training counts)."""
  scores = np.asarray(popularity, np.float64).copy()
  scores[0] = -np.inf
  return pessimistic_ranks(scores, users, exclude_history)


def pessimistic_ranks(scores: np.ndarray, users: EvalUsers,
                      exclude_history: bool) -> np.ndarray:
  """0-based ranks of the targets, ties counted against them; `scores` is one row [V] for
  every user or a row per user [U, V], id 0 already -inf. A target inside an excluded history
  gets MISS."""
  ranks = np.empty(len(users), np.int64)
  for i, target in enumerate(users.targets):
    s = scores if scores.ndim == 1 else scores[i]
    if exclude_history:
      if target in users.histories[i]:
        ranks[i] = MISS
        continue
      s = s.copy()
      s[users.histories[i]] = -np.inf
    ranks[i] = int(np.sum(s > s[target]) + np.sum(s == s[target]) - 1)
  return ranks


def _right_padded(rows: Sequence[np.ndarray], width: int) -> np.ndarray:
  out = np.zeros((len(rows), width), np.int32)
  for i, r in enumerate(rows):
    out[i, :min(len(r), width)] = r[:width]
  return out


def _width(rows: Sequence[np.ndarray], multiple: int = 16) -> int:
  longest = max([1] + [len(r) for r in rows])
  return -(-longest // multiple) * multiple


@functools.partial(jax.jit, static_argnames=("graphdef", "layer", "mesh"))
def _pooled(graphdef, state, batch, *, layer, mesh):
  """float32 [B, D]: hidden states of `layer` mean-pooled over `mask`, replicated."""
  model = nnx.merge(graphdef, state)
  out = model(batch["tokens"], positions=batch["positions"], segment_ids=batch["segment_ids"],
              return_hidden=layer, compute_logits=False)
  pooled = contrastive.mean_pool(out.hidden, batch["mask"])
  return jax.lax.with_sharding_constraint(pooled, NamedSharding(mesh, PartitionSpec()))


def embed_rows(model: nnx.Module, rows: Sequence[np.ndarray], masks: Sequence[np.ndarray], *,
               layer, batch_size: int, mesh: jax.sharding.Mesh) -> np.ndarray:
  """float32 [R, D]: each token row's hidden states mean-pooled over its mask (same length)."""
  graphdef, state = nnx.split(model)
  per_batch = batching.eval_batch_rows(batch_size, mesh)
  width = _width(rows)

  def host_batches():
    for start in range(0, len(rows), per_batch):
      chunk = rows[start:start + per_batch]
      seg = _right_padded([np.ones(len(r), np.int32) for r in chunk], width)
      yield {"tokens": _right_padded(chunk, width), "segment_ids": seg,
             "positions": np.where(seg > 0, np.arange(width), 0).astype(np.int32),
             "mask": _right_padded(masks[start:start + per_batch], width)}

  out = []
  for batch, n in batching.device_batches(host_batches(), per_batch, mesh):
    out.append(np.asarray(_pooled(graphdef, state, batch, layer=layer, mesh=mesh))[:n])
  return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


class _Base:
  """What the three modes share: domains, cut-offs, exclusion, batch size, cadence."""

  name = ""

  def __init__(self, *, domains: Callable[[], Sequence[Domain]], ks: Sequence[int],
               exclude_history: bool, batch_size: int, layer, every_steps: int = 0):
    self.domains, self.ks, self.exclude_history = domains, tuple(ks), bool(exclude_history)
    self.batch_size, self.layer, self.every_steps = int(batch_size), layer, int(every_steps)

  def __call__(self, model: nnx.Module, split: str, mesh: jax.sharding.Mesh) -> dict[str, float]:
    if split not in ("valid", "test"):
      raise ValueError(f"split must be 'valid' or 'test', got '{split}'")
    out = {}
    for domain in self.domains():
      users = domain.users(split)
      start = time.perf_counter()
      ranker, extra = self.rankings(model, domain, users, mesh, split)
      metrics = metrics_lib.ranking_metrics(ranker(self.exclude_history), self.ks)
      seconds = time.perf_counter() - start
      if not self.exclude_history:
        metrics.update({f"no_history/{k}": v for k, v in
                        metrics_lib.ranking_metrics(ranker(True), self.ks).items()})
      metrics.update(extra)
      metrics.update(users=float(len(users)), users_total=float(users.users_total),
                     users_per_sec=len(users) / max(seconds, 1e-9))
      out.update({f"{self.name}/{domain.prefix}{k}": v for k, v in metrics.items()})
    return out

  def rankings(self, model, domain: Domain, users: EvalUsers, mesh, split: str
               ) -> tuple[Callable[[bool], np.ndarray], dict[str, float]]:
    """(exclude_history -> 0-based target ranks of `users`, extra metrics), the model run once."""
    raise NotImplementedError

  @staticmethod
  def _merged(ids: np.ndarray, list_scores: np.ndarray | None, domain: Domain,
              users: EvalUsers, exclude_history: bool) -> np.ndarray:
    """Ranks of the targets in the round-robin merge of each user's lists, then popularity."""
    ranks = np.empty(len(users), np.int64)
    for i, target in enumerate(users.targets):
      lists, fallback = ids[i:i + 1], domain.popularity
      if exclude_history:
        history = users.histories[i]
        if target in history:
          ranks[i] = MISS
          continue
        lists = np.where(np.isin(lists, history), retrieval.EMPTY, lists)
        fallback = fallback.copy()
        fallback[history] = -np.inf  # after every other item, so after the target
      ranks[i] = retrieval.merged_target_ranks(
          lists, np.asarray([target]), None if list_scores is None else list_scores[i:i + 1],
          num_items=domain.num_items, fallback_scores=fallback)[0]
    return ranks


class DenseEvaluator(_Base):
  """v_U of each user against v_T of every catalogue item; see the module docstring."""

  name = "dense"

  def rankings(self, model, domain, users, mesh, split):
    del split
    items = embed_rows(model, domain.item_rows[1:], domain.item_masks[1:], layer=self.layer,
                       batch_size=self.batch_size, mesh=mesh)
    queries = embed_rows(model, users.prompts, users.user_masks, layer=self.layer,
                         batch_size=self.batch_size, mesh=mesh)
    scores = np.asarray(retrieval.dense_scores(queries, items), np.float64)
    scores = np.concatenate([np.full((len(scores), 1), -np.inf), scores], axis=1)
    return functools.partial(pessimistic_ranks, scores, users), {}


class _Generative(_Base):
  """Left-padded prompts of `batch_size` users, each decoded into K continuations."""

  def __init__(self, *, num_generations: int, max_new_tokens: int, eos_id: int, pad_id: int,
               decode: Callable[[Sequence[int]], str], **kwargs):
    super().__init__(**kwargs)
    if num_generations < 1:
      raise ValueError(f"config.eval.num_generations={num_generations}: must be >= 1")
    self.k, self.max_new_tokens = int(num_generations), int(max_new_tokens)
    self.eos_id, self.pad_id, self.decode = int(eos_id), int(pad_id), decode

  def _prompt_batches(self, users: EvalUsers):
    """(left-padded prompts [B, P], lengths [B], real rows) with one P and B per domain."""
    width = _width(users.prompts)
    rows = max(1, self.batch_size)
    for start in range(0, len(users), rows):
      chunk = users.prompts[start:start + rows]
      n = len(chunk)
      chunk = list(chunk) + [chunk[0]] * (rows - n)  # fixed shape: one compile
      prompts, lengths = decoding.left_pad(chunk, self.pad_id, width)
      yield prompts, lengths, n

  def texts(self, tokens: np.ndarray) -> list[str]:
    """Generated token rows -> texts (cut at the first EOS)."""
    out = []
    for row in np.asarray(tokens):
      stop = np.flatnonzero(row == self.eos_id)
      out.append(self.decode(row[:stop[0]] if len(stop) else row))
    return out


class BM25Evaluator(_Generative):
  """K generations per user, BM25 over the catalogue, round-robin merge; module docstring."""

  name = "bm25"

  def __init__(self, *, temperature: float = 1.0, method: str = "sample",
               bm25_top_k: int = 100, seed: int = 0, **kwargs):
    super().__init__(**kwargs)
    if method not in ("sample", "beam"):
      raise ValueError(f"config.eval.generation={method!r}: choose 'sample' or 'beam'")
    if temperature <= 0:
      raise ValueError(f"config.eval.temperature={temperature}: must be > 0")
    self.temperature, self.method = float(temperature), method
    self.top_k, self.seed = int(bm25_top_k), int(seed)
    self._index: dict[int, retrieval.BM25] = {}

  def generate(self, model, users: EvalUsers, split: str,
               mesh: jax.sharding.Mesh) -> tuple[list[str], np.ndarray]:
    """(U * K generated texts, user-major; their log-probabilities [U, K])."""
    texts, scores = [], []
    base = jax.random.key(self.seed)
    for b, (prompts, lengths, n) in enumerate(self._prompt_batches(users)):
      key = jax.random.fold_in(jax.random.fold_in(base, b), split == "test")
      if self.method == "beam":
        cfg = decoding.DecodeConfig(max_new_tokens=self.max_new_tokens, method="beam",
                                    num_beams=self.k, stop_tokens=(self.eos_id,),
                                    pad_id=self.pad_id)
        out = decoding.generate(model, *batching.replicated((prompts, lengths), mesh), cfg)
        tokens, logp = batching.to_host((out.tokens, out.log_probs))
        tokens = tokens.reshape(-1, self.max_new_tokens)
      else:
        cfg = decoding.DecodeConfig(max_new_tokens=self.max_new_tokens, method="sample",
                                    temperature=self.temperature, num_samples=self.k,
                                    stop_tokens=(self.eos_id,), pad_id=self.pad_id)
        out = decoding.generate(model, *batching.replicated((prompts, lengths), mesh), cfg,
                                rng=batching.replicated(key, mesh))
        tokens, logp = batching.to_host((out.tokens, out.log_probs))  # user-major: u * K + j
        logp = logp.reshape(-1, self.k)
      texts += self.texts(tokens)[:n * self.k]
      scores.append(logp[:n])
    return texts, np.concatenate(scores)

  def rankings(self, model, domain, users, mesh, split):
    if id(domain) not in self._index:
      self._index[id(domain)] = retrieval.BM25(domain.texts)
    texts, logp = self.generate(model, users, split, mesh)
    ids, _ = self._index[id(domain)].search(texts, self.top_k)
    ids = ids.reshape(len(users), self.k, -1)
    exact = retrieval.ExactMatch(domain.texts).search(texts)[:, 0] > 0
    no_match = ids[:, :, 0].reshape(-1) == retrieval.EMPTY
    return functools.partial(self._merged, ids, logp, domain, users), {
        "exact_match": float(exact.mean()) if len(exact) else 0.0,
        "no_match": float(no_match.mean()) if len(no_match) else 0.0}


class ConstrainedEvaluator(_Generative):
  """Trie-constrained beam search over the catalogue's item texts; module docstring."""

  name = "constrained"

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self._tries: dict[int, tuple[decoding.Trie, dict[tuple[int, ...], list[int]]]] = {}

  def _trie(self, domain: Domain):
    if id(domain) not in self._tries:
      sequences = domain.item_sequences(self.eos_id)
      by_tokens: dict[tuple[int, ...], list[int]] = {}
      for item, seq in enumerate(sequences, start=1):
        by_tokens.setdefault(tuple(seq[:-1]), []).append(item)
      self._tries[id(domain)] = (decoding.Trie.from_sequences(sequences), by_tokens)
    return self._tries[id(domain)]

  def rankings(self, model, domain, users, mesh, split):
    del split
    trie, by_tokens = self._trie(domain)
    trie = batching.replicated(trie, mesh)
    cfg = decoding.DecodeConfig(max_new_tokens=self.max_new_tokens, method="beam",
                                num_beams=self.k, stop_tokens=(self.eos_id,),
                                pad_id=self.pad_id)
    width = max(len(v) for v in by_tokens.values()) * self.k
    ids = np.zeros((len(users), width), np.int64)
    row = 0
    for prompts, lengths, n in self._prompt_batches(users):
      out = decoding.generate(model, *batching.replicated((prompts, lengths), mesh), cfg, trie=trie)
      tokens, scores = batching.to_host((out.tokens, out.scores))
      for r in range(n):
        placed = []
        for beam in range(self.k):
          if not np.isfinite(scores[r, beam]):
            continue  # fewer items than beams
          seq = tokens[r, beam]
          stop = np.flatnonzero(seq == self.eos_id)
          placed += by_tokens.get(tuple(int(t) for t in seq[:stop[0] if len(stop) else None]),
                                  [])
        ids[row, :len(placed)] = placed
        row += 1
    return functools.partial(self._merged, ids, None, domain, users), {}
